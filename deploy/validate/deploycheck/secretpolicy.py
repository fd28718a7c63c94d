"""Secrets: none in plain text anywhere in git, and every Secret a workload needs is a
strict-scope SealedSecret of the same cluster and namespace."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from . import tree
from .policy import containers, pod_spec
from .tree import Applied

SEALED_SECRET_KIND = "SealedSecret"


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


_PRIVATE_KEY = re.compile("-----BEGIN ([A-Z]+ )?PRIVATE" + " KEY-----")
# Build output, caches and local data: never committed (see .gitignore), not scanned.
_SKIP_DIRS = {".git", "target", "node_modules", "__pycache__", ".venv", ".pytest_cache", "reporting-data"}


def _repository_files(root: Path):
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _SKIP_DIRS]
        for name in files:
            yield Path(directory) / name


def check_no_plain_secrets(root: Path, items: list[Applied]) -> list[str]:
    """No `kind: Secret` in any YAML/JSON file of the repository, no kustomize
    secretGenerator, no private key in a top-level file or the deployment trees, no
    Secret rendered."""
    problems = []
    for path in _repository_files(root):
        rel = path.relative_to(root)
        if path.suffix in (".yaml", ".yml", ".json"):
            try:
                docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            except (yaml.YAMLError, UnicodeDecodeError) as error:
                problems.append(f"{rel}: cannot be parsed, so cannot be checked for Secrets: {error}")
                continue
            for doc in docs:
                for obj in (doc.get("items") or [] if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]):
                    if isinstance(obj, dict) and obj.get("kind") == "Secret":
                        problems.append(f"{rel}: plain Secret {_meta(obj).get('name')} "
                                        "(commit a SealedSecret instead)")
                if isinstance(doc, dict) and doc.get("secretGenerator"):
                    problems.append(f"{rel}: kustomize secretGenerator puts plaintext in git")
        if (len(rel.parts) == 1 or rel.parts[0] in (*tree.DEPLOY_DIRS, "deploy")) \
                and path.stat().st_size < 1_000_000:
            try:
                if _PRIVATE_KEY.search(path.read_text(errors="ignore")):
                    problems.append(f"{rel}: contains a private key")
            except OSError:
                pass
    for item in items:
        if item.obj.get("kind") == "Secret":
            problems.append(f"{item.ref}: rendered as a plain Secret")
    return problems


def secret_references(item: Applied) -> list[str]:
    """Names of Secrets (in the object's namespace) an object needs."""
    names = []
    spec = pod_spec(item.obj)
    if spec is not None:
        for volume in spec.get("volumes") or []:
            if volume.get("secret"):
                names.append(volume["secret"].get("secretName"))
        for _, container in containers(spec):
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    names.append(ref.get("name"))
            for source in container.get("envFrom") or []:
                if source.get("secretRef"):
                    names.append(source["secretRef"].get("name"))
    kind, spec = item.obj.get("kind"), item.obj.get("spec") or {}
    if kind == "KafkaUser":
        ref = (((spec.get("authentication") or {}).get("password") or {}).get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            names.append(ref.get("name"))
    if kind == "Cluster":
        secret = (((spec.get("bootstrap") or {}).get("initdb") or {}).get("secret") or {}).get("name")
        if secret:
            names.append(secret)
    return [n for n in names if n]


def check_sealed_secrets(items: list[Applied]) -> list[str]:
    """Every Secret a workload needs is a SealedSecret in the same cluster and namespace,
    sealed with the strict scope (bound to its namespace and name)."""
    problems = []
    sealed = {(i.env, _meta(i.obj).get("namespace"), _meta(i.obj).get("name"))
              for i in items if i.obj.get("kind") == SEALED_SECRET_KIND}
    for item in items:
        namespace = _meta(item.obj).get("namespace")
        for name in secret_references(item):
            if (item.env, namespace, name) not in sealed:
                problems.append(f"{item.ref}: needs Secret {namespace}/{name}, which no SealedSecret provides")
        if item.obj.get("kind") == SEALED_SECRET_KIND:
            meta = _meta(item.obj)
            annotations = meta.get("annotations") or {}
            if not meta.get("namespace"):
                problems.append(f"{item.ref}: a SealedSecret must name its namespace (the scope depends on it)")
            if any(k.startswith("sealedsecrets.bitnami.com/") and k.endswith("-wide") for k in annotations):
                problems.append(f"{item.ref}: sealed with a wider scope than strict")
            template = ((item.obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
            for field in ("name", "namespace"):
                if template.get(field) not in (None, meta.get(field)):
                    problems.append(f"{item.ref}: template.metadata.{field} differs from metadata.{field}")
    return problems
