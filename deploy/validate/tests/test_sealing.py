"""Sealing: a seal → unseal round trip with a throwaway key made here, the scope
binding (a strict-scope secret moved to another namespace cannot be unsealed), and the
same results from independent implementations (PyPI kubesealpy; the real kubeseal when
REPORTING_KUBESEAL points at it)."""

import base64
import datetime
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import kubesealpy
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import sealedsecret
from deploycheck import schemas, tree

SEALING_DIR = Path(sealedsecret.__file__).resolve().parent
DATA = {"url": b"postgres://reporting:s3cret@reporting-pg-rw.postgres.svc:5432/reporting",
        "password": b"p\x00ssw\xc3\xb6rd"}


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory):
    """A 4096-bit key and self-signed certificate like the controller's, made for this
    test run only and written to a temporary directory (never the repository)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealed-secret"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "sealed-secret")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("sealing-key")
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, directory / "cert.pem", directory / "key.pem"


def moved(sealed: dict, namespace: str | None = None, name: str | None = None) -> dict:
    """The same SealedSecret with its metadata (and template) pointed elsewhere, as if
    someone copied the YAML into another namespace or renamed it."""
    out = yaml.safe_load(yaml.safe_dump(sealed))
    for meta in (out["metadata"], out["spec"]["template"]["metadata"]):
        if namespace:
            meta["namespace"] = namespace
        if name:
            meta["name"] = name
    return out


def seal(cert_path: Path, scope: str = "strict", namespace="reporting", name="reporting-postgres") -> dict:
    public_key = sealedsecret.load_public_key(cert_path.read_bytes())
    return sealedsecret.seal(public_key, namespace, name, DATA, scope=scope)


# --- our implementation ------------------------------------------------------------------------

def test_seal_then_unseal_returns_the_plaintext(throwaway):
    key, cert, _ = throwaway
    sealed = seal(cert)
    assert sealedsecret.unseal(key, sealed) == DATA


def test_sealed_values_have_the_kubeseal_layout(throwaway):
    key, cert, _ = throwaway
    for value in seal(cert)["spec"]["encryptedData"].values():
        assert value.startswith("Ag")  # 2-byte length 0x0200: a 512-byte RSA block (4096-bit key)
        blob = base64.b64decode(value)
        assert int.from_bytes(blob[:2], "big") == key.key_size // 8


def test_sealing_twice_gives_different_ciphertexts(throwaway):
    _, cert, _ = throwaway
    assert seal(cert)["spec"]["encryptedData"]["url"] != seal(cert)["spec"]["encryptedData"]["url"]


def test_strict_scope_secret_moved_to_another_namespace_cannot_be_unsealed(throwaway):
    key, cert, _ = throwaway
    sealed = seal(cert, "strict")
    with pytest.raises(sealedsecret.UnsealError):
        sealedsecret.unseal(key, moved(sealed, namespace="attacker"))
    with pytest.raises(sealedsecret.UnsealError):
        sealedsecret.unseal(key, moved(sealed, name="other-name"))
    assert sealedsecret.unseal(key, sealed) == DATA


def test_namespace_wide_and_cluster_wide_scopes_bind_less(throwaway):
    key, cert, _ = throwaway
    namespace_wide = seal(cert, "namespace-wide")
    assert sealedsecret.unseal(key, moved(namespace_wide, name="renamed")) == DATA
    with pytest.raises(sealedsecret.UnsealError):
        sealedsecret.unseal(key, moved(namespace_wide, namespace="attacker"))
    cluster_wide = seal(cert, "cluster-wide")
    assert sealedsecret.unseal(key, moved(cluster_wide, namespace="attacker", name="x")) == DATA


def test_tampered_ciphertext_cannot_be_unsealed(throwaway):
    key, cert, _ = throwaway
    sealed = seal(cert)
    blob = bytearray(base64.b64decode(sealed["spec"]["encryptedData"]["url"]))
    blob[-1] ^= 1
    sealed["spec"]["encryptedData"]["url"] = base64.b64encode(bytes(blob)).decode()
    with pytest.raises(sealedsecret.UnsealError):
        sealedsecret.unseal(key, sealed)


def test_a_different_key_cannot_unseal(throwaway):
    _, cert, _ = throwaway
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(sealedsecret.UnsealError):
        sealedsecret.unseal(other, seal(cert))


# --- independent implementation: kubesealpy (PyPI) -----------------------------------------------

def test_kubesealpy_unseals_what_we_seal(throwaway):
    key, cert, _ = throwaway
    sealed = kubesealpy.SealedSecret.from_yaml(sealedsecret.to_yaml(seal(cert)))
    secret = kubesealpy.Unsealer.from_private_key(key).unseal(sealed)
    assert secret.get_data_decoded() == DATA


def test_kubesealpy_refuses_a_moved_strict_secret(throwaway):
    key, cert, _ = throwaway
    sealed = kubesealpy.SealedSecret.from_yaml(sealedsecret.to_yaml(moved(seal(cert), namespace="attacker")))
    with pytest.raises(kubesealpy.KubesealPyError):
        kubesealpy.Unsealer.from_private_key(key).unseal(sealed)


def test_we_unseal_what_kubesealpy_seals(throwaway):
    key, cert, _ = throwaway
    sealer = kubesealpy.Sealer.from_certificate_file(cert)
    sealed = yaml.safe_load(sealer.seal(name="reporting-kafka", namespace="reporting",
                                        data={"password": b"from-kubesealpy"}).to_yaml())
    assert sealedsecret.unseal(key, sealed) == {"password": b"from-kubesealpy"}
    with pytest.raises(sealedsecret.UnsealError):
        sealedsecret.unseal(key, moved(sealed, namespace="attacker"))


# --- independent implementation: the real kubeseal, when available ---------------------------------

def kubeseal_binary():
    path = os.environ.get("REPORTING_KUBESEAL") or shutil.which("kubeseal")
    if not path:
        pytest.fail("kubeseal not available: deploy/validate/run builds it, or set REPORTING_KUBESEAL")
    return path


def test_kubeseal_recovery_unseal_opens_what_we_seal_and_refuses_it_moved(throwaway, tmp_path):
    kubeseal = kubeseal_binary()
    _, cert, key_file = throwaway
    sealed = seal(cert)
    unsealed = subprocess.run([kubeseal, "--recovery-unseal", "--recovery-private-key", str(key_file), "-o", "yaml"],
                              input=sealedsecret.to_yaml(sealed), capture_output=True, text=True, check=True)
    secret = yaml.safe_load(unsealed.stdout)
    assert secret["kind"] == "Secret"
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == DATA
    refused = subprocess.run([kubeseal, "--recovery-unseal", "--recovery-private-key", str(key_file), "-o", "yaml"],
                             input=sealedsecret.to_yaml(moved(sealed, namespace="attacker")),
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0


def test_we_unseal_what_kubeseal_seals_offline(throwaway):
    kubeseal = kubeseal_binary()
    key, cert, _ = throwaway
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "reporting-kafka", "namespace": "reporting"},
              "stringData": {"password": "from-kubeseal"}}
    out = subprocess.run([kubeseal, "--cert", str(cert), "-o", "yaml"], input=yaml.safe_dump(secret),
                         capture_output=True, text=True, check=True)
    sealed = yaml.safe_load(out.stdout)
    assert sealedsecret.unseal(key, sealed) == {"password": b"from-kubeseal"}
    with pytest.raises(sealedsecret.UnsealError):
        sealedsecret.unseal(key, moved(sealed, namespace="attacker"))


# --- the tools and what is committed ------------------------------------------------------------------

def test_cli_output_is_a_valid_sealed_secret(throwaway, root):
    key, cert, _ = throwaway
    out = subprocess.run([sys.executable, str(SEALING_DIR / "sealedsecret.py"), "--cert", str(cert),
                          "--namespace", "reporting", "--name", "reporting-kafka",
                          "--from-literal", "username=reporting", "--from-literal", "password=a:b#c"],
                         capture_output=True, text=True, check=True)
    sealed = yaml.safe_load(out.stdout)
    assert schemas.validate_object(sealed, tree.kubernetes_version(root)) == []
    assert sealedsecret.unseal(key, sealed) == {"username": b"reporting", "password": b"a:b#c"}


def test_new_environment_seals_matching_credentials_on_both_sides(throwaway, broken):
    key, cert, _ = throwaway
    subprocess.run([sys.executable, str(SEALING_DIR / "new-environment"), "staging", "--root", str(broken.root),
                    "--cert", str(cert)], capture_output=True, text=True, check=True)

    def opened(relative):
        return sealedsecret.unseal(key, tree.load_yaml_documents(broken.root / relative)[0])

    app_kafka = opened("apps/staging/secrets/reporting-kafka.yaml")
    kafka_user = opened("infrastructure/data/staging/secrets/reporting-kafka-user.yaml")
    assert app_kafka["password"] == kafka_user["password"] and app_kafka["username"] == b"reporting"
    url = urlparse(opened("apps/staging/secrets/reporting-postgres.yaml")["url"].decode())
    owner = opened("infrastructure/data/staging/secrets/reporting-pg-owner.yaml")
    assert (url.username.encode(), url.password.encode()) == (owner["username"], owner["password"])
    assert url.hostname == "reporting-pg-rw.postgres.svc.cluster.local" and url.path == "/reporting"
    graylog = opened("infrastructure/logging/staging/secrets/graylog.yaml")
    assert hashlib.sha256(graylog["root-password"]).hexdigest().encode() == graylog["root-password-sha2"]
    assert len(graylog["password-secret"]) >= 64
    assert opened("infrastructure/monitoring/staging/secrets/grafana-admin.yaml")["admin-password"]


def test_committed_sealing_certificates_are_public_rsa_4096_and_per_cluster(root):
    moduli = set()
    for env in tree.ENVIRONMENTS:
        pem = (root / f"clusters/{env}/sealed-secrets.pem").read_bytes()
        assert b"PRIVATE" not in pem
        cert = x509.load_pem_x509_certificate(pem)
        public_key = cert.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 4096
        assert cert.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc)
        moduli.add(public_key.public_numbers().n)
    assert len(moduli) == len(tree.ENVIRONMENTS), "each cluster has its own sealing key"


def test_committed_sealed_secrets_were_sealed_for_a_4096_bit_key(applied):
    sealed = [i for i in applied if i.obj["kind"] == "SealedSecret"]
    assert len(sealed) == 12
    for item in sealed:
        for value in item.obj["spec"]["encryptedData"].values():
            blob = base64.b64decode(value, validate=True)
            assert int.from_bytes(blob[:2], "big") == 512, item.ref
            assert len(blob) > 2 + 512 + 16, item.ref  # RSA block, then AES-GCM ciphertext + tag
