"""The Flux Kustomization chain of each cluster."""

from __future__ import annotations

from pathlib import Path

from . import tree

ROOT_KUSTOMIZATION = "flux-system"
# Each Flux Kustomization that must exist, and what it must (transitively) wait for:
# controllers → configs → data, logging, monitoring → apps.
REQUIRED_DEPENDENCIES = {
    "infra-controllers": set(),
    "infra-configs": {"infra-controllers"},
    "data": {"infra-controllers", "infra-configs"},
    "logging": {"infra-controllers", "infra-configs"},
    "monitoring": {"infra-controllers", "infra-configs"},
    "apps": {"infra-controllers", "infra-configs", "data", "logging", "monitoring"},
}


def _closure(graph: dict[str, list[str]], start: str) -> tuple[set[str], bool]:
    """All transitive dependencies of `start`, and whether a cycle reaches it."""
    seen: set[str] = set()
    stack = list(graph.get(start, []))
    cyclic = False
    while stack:
        name = stack.pop()
        if name == start:
            cyclic = True
        if name in seen:
            continue
        seen.add(name)
        stack.extend(graph.get(name, []))
    return seen, cyclic


def check(root: Path) -> list[str]:
    problems = []
    for env in tree.ENVIRONMENTS:
        objects = tree.cluster_objects(root, env)
        sources = [o for o in objects if o.get("kind") == "GitRepository"
                   and o["metadata"].get("name") == ROOT_KUSTOMIZATION]
        if not sources:
            problems.append(f"{env}: no GitRepository {ROOT_KUSTOMIZATION} in clusters/{env}/flux-system")
        kustomizations = {k["metadata"]["name"]: k for k in tree.flux_kustomizations(root, env)}
        graph = {name: [d.get("name") for d in k["spec"].get("dependsOn") or []]
                 for name, k in kustomizations.items()}
        for name, kustomization in kustomizations.items():
            spec = kustomization["spec"]
            label = f"{env}: Flux Kustomization {name}"
            if spec.get("prune") is not True:
                problems.append(f"{label}: prune must be true (objects removed from git are removed)")
            # flux-system is written by `flux bootstrap`, which does not set wait.
            if name != ROOT_KUSTOMIZATION and spec.get("wait") is not True:
                problems.append(f"{label}: wait must be true (dependants start on a healthy base)")
            source = spec.get("sourceRef") or {}
            if (source.get("kind"), source.get("name")) != ("GitRepository", ROOT_KUSTOMIZATION):
                problems.append(f"{label}: sourceRef must be GitRepository {ROOT_KUSTOMIZATION}")
            path = tree.flux_path(root, kustomization)
            if not any((path / f).is_file() for f in tree.KUSTOMIZATION_FILES):
                problems.append(f"{label}: path {spec.get('path')} has no kustomization.yaml")
            other = [e for e in tree.ENVIRONMENTS if e != env]
            if any(e in Path(spec.get("path", "")).parts for e in other):
                problems.append(f"{label}: path {spec.get('path')} belongs to another environment")
            for dependency in graph[name]:
                if dependency not in kustomizations:
                    problems.append(f"{label}: dependsOn {dependency}, which does not exist")
            closure, cyclic = _closure(graph, name)
            if cyclic:
                problems.append(f"{label}: dependsOn forms a cycle")
            if name in REQUIRED_DEPENDENCIES:
                missing = REQUIRED_DEPENDENCIES[name] - closure
                if missing:
                    problems.append(f"{label}: must depend (directly or not) on {sorted(missing)}")
        for name in REQUIRED_DEPENDENCIES:
            if name not in kustomizations:
                problems.append(f"{env}: no Flux Kustomization {name}")
        root_k = kustomizations.get(ROOT_KUSTOMIZATION)
        if root_k is None or tree.flux_path(root, root_k) != (root / "clusters" / env).resolve():
            problems.append(f"{env}: Flux Kustomization {ROOT_KUSTOMIZATION} must apply ./clusters/{env}")
    return problems
