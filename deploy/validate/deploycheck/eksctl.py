"""Node groups: checks eksctl's JSON schema does not express, and the node-group facts
(labels, taints) the placement policy needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import schemas, tree

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
POOL_LABEL = "pool"


@dataclass(frozen=True)
class NodeGroup:
    name: str
    labels: dict
    taints: tuple  # of dicts {key, value, effect}


def node_groups(config: dict) -> list[NodeGroup]:
    groups = []
    for group in (config.get("managedNodeGroups") or []) + (config.get("nodeGroups") or []):
        groups.append(NodeGroup(group.get("name", "?"), dict(group.get("labels") or {}),
                                tuple(group.get("taints") or ())))
    return groups


def semantic_problems(config: dict) -> list[str]:
    problems = []
    metadata = config.get("metadata") or {}
    if not metadata.get("version"):
        problems.append("ClusterConfig: metadata.version (Kubernetes version) is not pinned")
    pools = {}
    groups = (config.get("managedNodeGroups") or []) + (config.get("nodeGroups") or [])
    if not groups:
        problems.append("ClusterConfig: no node groups")
    for group in groups:
        name = group.get("name", "?")
        sizes = [group.get(k) for k in ("minSize", "desiredCapacity", "maxSize")]
        if any(not isinstance(s, int) for s in sizes):
            problems.append(f"node group {name}: minSize, desiredCapacity and maxSize must all be set")
        elif not sizes[0] <= sizes[1] <= sizes[2]:
            problems.append(f"node group {name}: needs minSize <= desiredCapacity <= maxSize, "
                            f"got {sizes[0]} / {sizes[1]} / {sizes[2]}")
        for taint in group.get("taints") or []:
            if taint.get("effect") not in TAINT_EFFECTS:
                problems.append(f"node group {name}: taint {taint.get('key')} has effect "
                                f"{taint.get('effect')!r}, expected one of {', '.join(TAINT_EFFECTS)}")
            if not taint.get("key"):
                problems.append(f"node group {name}: taint without a key")
        pool = (group.get("labels") or {}).get(POOL_LABEL)
        if not pool:
            problems.append(f"node group {name}: no `{POOL_LABEL}` label for workloads to select")
        elif pool in pools:
            problems.append(f"node groups {pools[pool]} and {name} share label {POOL_LABEL}={pool}")
        else:
            pools[pool] = name
    return problems


def check(root: Path) -> list[str]:
    problems = []
    for env in tree.ENVIRONMENTS:
        config = tree.eksctl_config(root, env)
        problems += [f"{env}: {p}" for p in schemas.validate_eksctl_schema(config)]
        problems += [f"{env}: {p}" for p in semantic_problems(config)]
    versions = {str(tree.eksctl_config(root, env)["metadata"].get("version")) for env in tree.ENVIRONMENTS}
    if len(versions) > 1:
        problems.append(f"production and staging run different Kubernetes versions: {sorted(versions)}")
    return problems
