"""Where things are in the repository, and what `kubectl kustomize` renders from it."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
ENVIRONMENTS = ("production", "staging")
DEPLOY_DIRS = ("clusters", "infrastructure", "apps")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
FLUX_KUSTOMIZATION_API = "kustomize.toolkit.fluxcd.io/"
EKSCTL_FILES = {
    "production": "infrastructure/eksctl/cluster.yaml",
    "staging": "infrastructure/eksctl/cluster-staging.yaml",
}


class RenderError(Exception):
    """`kubectl kustomize` failed for a directory."""


@dataclass(frozen=True)
class Applied:
    """One object as Flux would apply it: which cluster, which Flux Kustomization."""

    env: str
    flux_kustomization: str
    obj: dict

    @property
    def ref(self) -> str:
        meta = self.obj.get("metadata") or {}
        ns = meta.get("namespace")
        name = meta.get("name", "?")
        return f"{self.env}: {self.obj.get('kind')} {ns + '/' if ns else ''}{name}"


def load_yaml_documents(path: Path) -> list:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def kustomization_dirs(root: Path) -> list[Path]:
    """Every directory under clusters/, infrastructure/ and apps/ with a kustomization."""
    found = set()
    for top in DEPLOY_DIRS:
        for name in KUSTOMIZATION_FILES:
            found.update(p.parent for p in (root / top).rglob(name))
    return sorted(found)


@functools.lru_cache(maxsize=None)
def _render_cached(directory: str) -> tuple:
    result = subprocess.run(
        ["kubectl", "kustomize", directory],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory}: {result.stderr.strip()}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def render(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize DIR` prints. Cached per absolute path: tests that
    break a tree do so in a fresh temporary copy, never in place."""
    import copy

    return copy.deepcopy(list(_render_cached(str(directory.resolve()))))


def eksctl_config(root: Path, env: str) -> dict:
    return load_yaml_documents(root / EKSCTL_FILES[env])[0]


def kubernetes_version(root: Path) -> str:
    """The Kubernetes minor version the clusters run (eksctl `metadata.version`)."""
    return str(eksctl_config(root, "production")["metadata"]["version"])


def cluster_objects(root: Path, env: str) -> list[dict]:
    return render(root / "clusters" / env)


def flux_kustomizations(root: Path, env: str) -> list[dict]:
    return [
        obj for obj in cluster_objects(root, env)
        if obj.get("kind") == "Kustomization"
        and str(obj.get("apiVersion", "")).startswith(FLUX_KUSTOMIZATION_API)
    ]


def flux_path(root: Path, kustomization: dict) -> Path:
    return (root / kustomization["spec"].get("path", "./")).resolve()


def applied(root: Path, env: str) -> list[Applied]:
    """Everything Flux applies in one cluster: the cluster entry point itself and what
    each Flux Kustomization renders from its path."""
    out = [Applied(env, "flux-system", obj) for obj in cluster_objects(root, env)]
    entry = (root / "clusters" / env).resolve()
    for kustomization in flux_kustomizations(root, env):
        path = flux_path(root, kustomization)
        if path == entry:
            continue
        name = kustomization["metadata"]["name"]
        out.extend(Applied(env, name, obj) for obj in render(path))
    return out


def applied_everywhere(root: Path) -> list[Applied]:
    return [item for env in ENVIRONMENTS for item in applied(root, env)]
