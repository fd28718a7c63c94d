#!/usr/bin/env python3
"""Seal Kubernetes secrets offline into Bitnami `SealedSecret` manifests.

A Python equivalent of `kubeseal --cert CERT` for this repository's sealing workflow
(deploy/README.md, "Sealing secrets"), written from the format description of
bitnami-labs/sealed-secrets (`pkg/crypto/crypto.go`) so that it needs only PyPI's
`cryptography`:

* every value gets a fresh random 32-byte session key and is encrypted with
  AES-256-GCM under a zero nonce (the key is used exactly once);
* the session key is encrypted with RSA-OAEP (SHA-256, MGF1-SHA-256) whose *label*
  binds the value to its scope: strict → ``namespace/name``, namespace-wide →
  ``namespace``, cluster-wide → empty;
* the value stored in ``spec.encryptedData[key]`` is base64 of
  ``2-byte big-endian length of the RSA block || RSA block || AES-GCM ciphertext+tag``.

`unseal` is the inverse with the controller's private key; the tests use it with a
throwaway key. The real private key never leaves the cluster (and its offline backup).

Usage:
  sealedsecret.py --cert clusters/production/sealed-secrets.pem \
      --namespace reporting --name reporting-postgres \
      --from-literal url=postgres://... [--from-file key=PATH] \
      [--scope strict|namespace-wide|cluster-wide] [--type Opaque] > out.yaml
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import struct
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCOPES = ("strict", "namespace-wide", "cluster-wide")
NAMESPACE_WIDE_ANNOTATION = "sealedsecrets.bitnami.com/namespace-wide"
CLUSTER_WIDE_ANNOTATION = "sealedsecrets.bitnami.com/cluster-wide"
_SESSION_KEY_BYTES = 32
_ZERO_NONCE = b"\x00" * 12


class UnsealError(Exception):
    """A value could not be decrypted: wrong key, wrong scope label or damaged data."""


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """The RSA public key of a PEM certificate (what `kubeseal --fetch-cert` prints)
    or of a bare PEM public key."""
    if b"BEGIN CERTIFICATE" in pem:
        key = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the sealing certificate must carry an RSA key")
    return key


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the sealing key must be an RSA key")
    return key


def scope_label(scope: str, namespace: str, name: str) -> bytes:
    """The RSA-OAEP label that binds a sealed value to where it may be unsealed."""
    if scope == "strict":
        return f"{namespace}/{name}".encode()
    if scope == "namespace-wide":
        return namespace.encode()
    if scope == "cluster-wide":
        return b""
    raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")


def _oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()),
        algorithm=hashes.SHA256(),
        label=label or None,
    )


def encrypt_value(public_key: rsa.RSAPublicKey, label: bytes, plaintext: bytes) -> bytes:
    session_key = os.urandom(_SESSION_KEY_BYTES)
    rsa_block = public_key.encrypt(session_key, _oaep(label))
    sealed = AESGCM(session_key).encrypt(_ZERO_NONCE, plaintext, None)
    return struct.pack(">H", len(rsa_block)) + rsa_block + sealed


def decrypt_value(private_key: rsa.RSAPrivateKey, label: bytes, blob: bytes) -> bytes:
    if len(blob) < 2:
        raise UnsealError("sealed value is shorter than its length prefix")
    (rsa_len,) = struct.unpack(">H", blob[:2])
    rsa_block, sealed = blob[2 : 2 + rsa_len], blob[2 + rsa_len :]
    if len(rsa_block) != rsa_len:
        raise UnsealError("sealed value is shorter than its RSA block")
    try:
        session_key = private_key.decrypt(rsa_block, _oaep(label))
        return AESGCM(session_key).decrypt(_ZERO_NONCE, sealed, None)
    except Exception as error:  # cryptography raises ValueError / InvalidTag
        raise UnsealError(f"cannot decrypt: {type(error).__name__}") from error


def scope_of(sealed_secret: dict) -> str:
    annotations = sealed_secret.get("metadata", {}).get("annotations") or {}
    if annotations.get(CLUSTER_WIDE_ANNOTATION) == "true":
        return "cluster-wide"
    if annotations.get(NAMESPACE_WIDE_ANNOTATION) == "true":
        return "namespace-wide"
    return "strict"


def seal(
    public_key: rsa.RSAPublicKey,
    namespace: str,
    name: str,
    data: dict[str, bytes],
    scope: str = "strict",
    secret_type: str = "Opaque",
) -> dict:
    """A SealedSecret manifest (as a dict) shaped like `kubeseal -o yaml` output."""
    if not namespace:
        raise ValueError("a namespace is required: the scope label depends on it")
    label = scope_label(scope, namespace, name)
    metadata: dict = {"name": name, "namespace": namespace}
    if scope == "namespace-wide":
        metadata["annotations"] = {NAMESPACE_WIDE_ANNOTATION: "true"}
    elif scope == "cluster-wide":
        metadata["annotations"] = {CLUSTER_WIDE_ANNOTATION: "true"}
    encrypted = {
        key: base64.b64encode(encrypt_value(public_key, label, value)).decode()
        for key, value in sorted(data.items())
    }
    return {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": dict(metadata),
        "spec": {
            "encryptedData": encrypted,
            "template": {"metadata": dict(metadata), "type": secret_type},
        },
    }


def unseal(private_key: rsa.RSAPrivateKey, sealed_secret: dict) -> dict[str, bytes]:
    """What the controller would put in the Secret: decrypts every value with the label
    derived from the SealedSecret's own namespace, name and scope annotation."""
    metadata = sealed_secret["metadata"]
    label = scope_label(scope_of(sealed_secret), metadata.get("namespace", ""), metadata["name"])
    return {
        key: decrypt_value(private_key, label, base64.b64decode(value))
        for key, value in sealed_secret["spec"]["encryptedData"].items()
    }


def to_yaml(manifest: dict) -> str:
    """Deterministic YAML without a PyYAML dependency (manifests are nested str maps)."""
    lines: list[str] = []

    def emit(node: dict, indent: int) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                lines.append(f"{' ' * indent}{key}:")
                emit(value, indent + 2)
            else:
                lines.append(f"{' ' * indent}{key}: {_scalar(value)}")

    emit(manifest, 0)
    return "\n".join(lines) + "\n"


_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9._/+=-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: str) -> str:
    """A plain scalar when YAML reads it back as the same string, else double-quoted."""
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_items(literals: list[str], files: list[str]) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    for item in literals:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--from-literal needs KEY=VALUE, got {item!r}")
        data[key] = value.encode()
    for item in files:
        key, sep, path = item.partition("=")
        if not sep:
            key, path = Path(item).name, item
        data[key] = Path(path).read_bytes()
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert", required=True, help="PEM certificate of the sealing key")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--scope", choices=SCOPES, default="strict")
    parser.add_argument("--type", default="Opaque", dest="secret_type")
    parser.add_argument("--from-literal", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--from-file", action="append", default=[], metavar="KEY=PATH")
    args = parser.parse_args(argv)
    data = _parse_items(args.from_literal, args.from_file)
    if not data:
        parser.error("nothing to seal: give --from-literal or --from-file")
    public_key = load_public_key(Path(args.cert).read_bytes())
    manifest = seal(public_key, args.namespace, args.name, data, args.scope, args.secret_type)
    sys.stdout.write(to_yaml(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
