"""Policies schemas cannot express, checked on what Flux applies in each cluster."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from . import eksctl, tree
from .tree import Applied

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
REPORTING_NAMESPACE = "reporting"
REPORTING_ROLES = {"ingest": 8080, "aggregator": None, "api": 8081}
ADMIN_PORT = 9464
INGEST_DEFAULT_DRAIN_SECS = 20  # docs/interfaces.md default
TOPIC_KIND = ("kafka.strimzi.io/v1", "KafkaTopic")


# --- helpers ---------------------------------------------------------------------

def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    if kind in WORKLOAD_KINDS:
        return (spec.get("template") or {}).get("spec")
    return None


def containers(spec: dict) -> list[tuple[str, dict]]:
    out = [("initContainer", c) for c in spec.get("initContainers") or []]
    out += [("container", c) for c in spec.get("containers") or []]
    return out


def workloads(items: list[Applied]):
    for item in items:
        spec = pod_spec(item.obj)
        if spec is not None:
            yield item, spec


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _find(items: list[Applied], kind: str, name: str | None = None, namespace: str | None = None):
    return [i for i in items if i.obj.get("kind") == kind
            and (name is None or _meta(i.obj).get("name") == name)
            and (namespace is None or _meta(i.obj).get("namespace") == namespace)]


_CPU = re.compile(r"^([0-9.]+)(m?)$")
_MEM = re.compile(r"^([0-9.]+)([KMGTPE]i?|)$")
_MEM_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(resource: str, value) -> float | None:
    text = str(value)
    match = (_CPU if resource == "cpu" else _MEM).match(text)
    if not match:
        return None
    number = float(match.group(1))
    if resource == "cpu":
        return number / 1000 if match.group(2) == "m" else number
    return number * _MEM_UNITS[match.group(2)]


def resource_problems(where: str, resources) -> list[str]:
    """requests and limits for cpu and memory, each parseable, requests <= limits."""
    resources = resources or {}
    problems = []
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            value = (resources.get(section) or {}).get(resource)
            if value is None:
                problems.append(f"{where}: no {section}.{resource}")
            elif quantity(resource, value) is None:
                problems.append(f"{where}: {section}.{resource} {value!r} is not a quantity")
    if not problems:
        for resource in ("cpu", "memory"):
            request = quantity(resource, resources["requests"][resource])
            limit = quantity(resource, resources["limits"][resource])
            if request > limit:
                problems.append(f"{where}: requests.{resource} exceeds limits.{resource}")
    return problems


# --- resources ---------------------------------------------------------------------

def operator_resources(item: Applied) -> list[tuple[str, object]]:
    """Resource blocks of pods that operators and charts create from custom resources."""
    obj, kind = item.obj, item.obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "HelmRelease":
        return [("values.resources", (spec.get("values") or {}).get("resources"))]
    if kind == "KafkaNodePool":
        return [("spec.resources", spec.get("resources"))]
    if kind == "Kafka":
        entity = spec.get("entityOperator") or {}
        return [(f"spec.entityOperator.{op}.resources", (entity.get(op) or {}).get("resources"))
                for op in ("topicOperator", "userOperator") if op in entity]
    if kind == "Cluster" and str(obj.get("apiVersion", "")).startswith("postgresql.cnpg.io/"):
        return [("spec.resources", spec.get("resources"))]
    return []


def check_resources(items: list[Applied]) -> list[str]:
    problems = []
    for item, spec in workloads(items):
        for role, container in containers(spec):
            problems += resource_problems(f"{item.ref} {role} {container.get('name')}",
                                          container.get("resources"))
    for item in items:
        for where, resources in operator_resources(item):
            problems += resource_problems(f"{item.ref} {where}", resources)
    return problems


# --- replicas ----------------------------------------------------------------------

def hpa_targets(items: list[Applied]) -> dict[tuple[str, str, str, str], Applied]:
    out = {}
    for item in _find(items, "HorizontalPodAutoscaler"):
        target = (item.obj.get("spec") or {}).get("scaleTargetRef") or {}
        out[(item.env, _meta(item.obj).get("namespace"), target.get("kind"), target.get("name"))] = item
    return out


def check_replicas(items: list[Applied]) -> list[str]:
    """Every scalable workload's size is explicit in git: `spec.replicas`, or, for a
    workload an HPA scales, the HPA's minReplicas/maxReplicas (and then no
    spec.replicas, which Flux would re-apply over the autoscaler's choice)."""
    problems = []
    targets = hpa_targets(items)
    for item in items:
        kind = item.obj.get("kind")
        spec = item.obj.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            key = (item.env, _meta(item.obj).get("namespace"), kind, _meta(item.obj).get("name"))
            hpa = targets.get(key)
            if hpa is None and not isinstance(spec.get("replicas"), int):
                problems.append(f"{item.ref}: no explicit spec.replicas")
            if hpa is not None:
                if "replicas" in spec:
                    problems.append(f"{item.ref}: scaled by HPA {_meta(hpa.obj).get('name')} but also sets "
                                    "spec.replicas, which Flux would re-apply over the autoscaler")
                hspec = hpa.obj.get("spec") or {}
                low, high = hspec.get("minReplicas"), hspec.get("maxReplicas")
                if not isinstance(low, int) or not isinstance(high, int) or not 1 <= low <= high:
                    problems.append(f"{hpa.ref}: needs explicit 1 <= minReplicas <= maxReplicas")
        elif kind == "KafkaNodePool" and not isinstance(spec.get("replicas"), int):
            problems.append(f"{item.ref}: no explicit spec.replicas")
        elif kind == "Cluster" and "instances" in spec and not isinstance(spec.get("instances"), int):
            problems.append(f"{item.ref}: no explicit spec.instances")
    for key, hpa in targets.items():
        env, namespace, kind, name = key
        if not _find([i for i in items if i.env == env], kind, name, namespace):
            problems.append(f"{hpa.ref}: scales {kind} {name}, which is not deployed")
    return problems


# --- reporting config, aggregator replicas and topic partitions -----------------------

def reporting_config(items: list[Applied], env: str) -> dict | None:
    for item in _find(items, "ConfigMap", namespace=REPORTING_NAMESPACE):
        if item.env == env and _meta(item.obj).get("name", "").startswith("reporting-config"):
            data = item.obj.get("data") or {}
            if "reporting.toml" in data:
                return tomllib.loads(data["reporting.toml"])
    return None


def check_aggregator_partitions(items: list[Applied]) -> list[str]:
    """aggregator replicas <= partitions and divides them; the config's bus.partitions
    equals the partitions of the KafkaTopic the config names."""
    problems = []
    for env in tree.ENVIRONMENTS:
        here = [i for i in items if i.env == env]
        config = reporting_config(here, env)
        if config is None:
            problems.append(f"{env}: no reporting-config ConfigMap with reporting.toml")
            continue
        bus = config.get("bus") or {}
        topic_name, partitions = bus.get("topic"), bus.get("partitions")
        topics = [i for i in here if (i.obj.get("apiVersion"), i.obj.get("kind")) == TOPIC_KIND
                  and (i.obj["spec"].get("topicName") or _meta(i.obj).get("name")) == topic_name]
        if not topics:
            problems.append(f"{env}: no KafkaTopic defines bus.topic {topic_name!r}")
        else:
            topic_partitions = topics[0].obj["spec"].get("partitions")
            if topic_partitions != partitions:
                problems.append(f"{env}: bus.partitions is {partitions} but KafkaTopic {topic_name} "
                                f"has {topic_partitions} partitions")
        aggregators = _find(here, "Deployment", "aggregator", REPORTING_NAMESPACE)
        if not aggregators:
            problems.append(f"{env}: no aggregator Deployment")
            continue
        replicas = (aggregators[0].obj.get("spec") or {}).get("replicas")
        if isinstance(replicas, int) and isinstance(partitions, int):
            if not 1 <= replicas <= partitions:
                problems.append(f"{env}: aggregator replicas {replicas} must be between 1 and the "
                                f"{partitions} partitions of {topic_name}")
            elif partitions % replicas:
                problems.append(f"{env}: aggregator replicas {replicas} do not divide the "
                                f"{partitions} partitions of {topic_name} evenly")
    return problems


# --- placement on node groups ---------------------------------------------------------

def tolerates(tolerations, taint: dict) -> bool:
    """Kubernetes' toleration matching for one taint."""
    for toleration in tolerations or []:
        operator = toleration.get("operator", "Equal")
        key = toleration.get("key")
        if operator == "Exists":
            matches = not key or key == taint.get("key")
        elif operator == "Equal":
            matches = key == taint.get("key") and toleration.get("value", "") == taint.get("value", "")
        else:
            matches = False
        if matches and (not toleration.get("effect") or toleration.get("effect") == taint.get("effect")):
            return True
    return False


def _affinity_pools(affinity) -> list[list[str]] | None:
    """Values of required node-affinity `pool In [...]` expressions, per term."""
    node = ((affinity or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = node.get("nodeSelectorTerms") or []
    found = []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == eksctl.POOL_LABEL and expr.get("operator") == "In":
                found.append(list(expr.get("values") or []))
    return found or None


def placements(item: Applied) -> list[tuple[str, dict | None, list | None, list]]:
    """(where, nodeSelector, affinity pool lists, tolerations) of every pod an object
    makes directly or through an operator/chart."""
    obj, kind = item.obj, item.obj.get("kind")
    spec = obj.get("spec") or {}
    pod = pod_spec(obj)
    if pod is not None:
        return [("pod", pod.get("nodeSelector"), _affinity_pools(pod.get("affinity")),
                 pod.get("tolerations") or [])]
    if kind == "HelmRelease":
        values = spec.get("values") or {}
        return [("values", values.get("nodeSelector"), _affinity_pools(values.get("affinity")),
                 values.get("tolerations") or [])]
    if kind == "KafkaNodePool":
        pod_t = ((spec.get("template") or {}).get("pod")) or {}
        return [("template.pod", None, _affinity_pools(pod_t.get("affinity")), pod_t.get("tolerations") or [])]
    if kind == "Kafka":
        pod_t = (((spec.get("entityOperator") or {}).get("template") or {}).get("pod")) or {}
        return [("entityOperator.template.pod", None, _affinity_pools(pod_t.get("affinity")),
                 pod_t.get("tolerations") or [])]
    if kind == "Cluster" and str(obj.get("apiVersion", "")).startswith("postgresql.cnpg.io/"):
        affinity = spec.get("affinity") or {}
        return [("spec.affinity", affinity.get("nodeSelector"), None, affinity.get("tolerations") or [])]
    return []


def check_placement(root: Path, items: list[Applied]) -> list[str]:
    """Every pod selects one eksctl node group by its `pool` label and tolerates that
    group's taints; DaemonSets (node agents) tolerate every tainted group instead."""
    problems = []
    groups = {env: eksctl.node_groups(tree.eksctl_config(root, env)) for env in tree.ENVIRONMENTS}
    for item in items:
        by_pool = {g.labels.get(eksctl.POOL_LABEL): g for g in groups[item.env]}
        for where, selector, affinity_pools, tolerations in placements(item):
            label = f"{item.ref} {where}"
            if item.obj.get("kind") == "DaemonSet":
                for group in groups[item.env]:
                    for taint in group.taints:
                        if not tolerates(tolerations, taint):
                            problems.append(f"{label}: a node agent must run on every node but does not "
                                            f"tolerate {taint.get('key')}={taint.get('value')}:"
                                            f"{taint.get('effect')} of node group {group.name}")
                continue
            pools = []
            if selector and eksctl.POOL_LABEL in selector:
                pools.append([selector[eksctl.POOL_LABEL]])
            pools += affinity_pools or []
            if not pools:
                problems.append(f"{label}: no nodeSelector or required node affinity on "
                                f"`{eksctl.POOL_LABEL}` (node groups: {', '.join(sorted(by_pool))})")
                continue
            for values in pools:
                for value in values:
                    group = by_pool.get(value)
                    if group is None:
                        problems.append(f"{label}: selects {eksctl.POOL_LABEL}={value}, which no node "
                                        f"group of {tree.EKSCTL_FILES[item.env]} carries")
                        continue
                    for taint in group.taints:
                        if not tolerates(tolerations, taint):
                            problems.append(f"{label}: runs on node group {group.name} but does not "
                                            f"tolerate its taint {taint.get('key')}={taint.get('value')}:"
                                            f"{taint.get('effect')}")
    return problems


# --- probes ----------------------------------------------------------------------------

def _is_reporting(item: Applied, container: dict) -> bool:
    image = str(container.get("image", ""))
    return _meta(item.obj).get("namespace") == REPORTING_NAMESPACE and "reporting" in image.split("/")[-1]


def _probe_target(probe) -> tuple:
    http = (probe or {}).get("httpGet") or {}
    return http.get("path"), http.get("port")


def check_probes(items: list[Applied]) -> list[str]:
    """Long-running containers have liveness and readiness probes; Reporting's roles
    probe /healthz and /readyz on the admin port 9464."""
    problems = []
    for item, spec in workloads(items):
        if item.obj.get("kind") not in LONG_RUNNING_KINDS:
            continue
        for container in spec.get("containers") or []:
            label = f"{item.ref} container {container.get('name')}"
            for probe in ("livenessProbe", "readinessProbe"):
                if not container.get(probe):
                    problems.append(f"{label}: no {probe}")
            if not _is_reporting(item, container):
                continue
            ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
            if ports.get("admin") != ADMIN_PORT:
                problems.append(f"{label}: no container port `admin` = {ADMIN_PORT}")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got_path, got_port = _probe_target(container.get(probe))
                if got_path != path or got_port not in ("admin", ADMIN_PORT):
                    problems.append(f"{label}: {probe} must be GET {path} on the admin port, "
                                    f"got {got_path} on {got_port}")
    return problems


# --- the Reporting roles ---------------------------------------------------------------

def check_reporting_roles(items: list[Applied]) -> list[str]:
    """One Deployment per role (and only existing roles), Services for ingest and api,
    a PDB per role, HPAs for ingest and api, the config mounted and passed, and a
    termination grace period longer than the role's drain time."""
    problems = []
    for env in tree.ENVIRONMENTS:
        here = [i for i in items if i.env == env]
        config = reporting_config(here, env) or {}
        deployments = {(_meta(i.obj).get("labels") or {}).get("app.kubernetes.io/component"): i
                       for i in _find(here, "Deployment", namespace=REPORTING_NAMESPACE)}
        if set(deployments) != set(REPORTING_ROLES):
            problems.append(f"{env}: reporting Deployments are {sorted(map(str, deployments))}, "
                            f"expected exactly {sorted(REPORTING_ROLES)}")
        pdbs = _find(here, "PodDisruptionBudget", namespace=REPORTING_NAMESPACE)
        hpas = {(i.obj["spec"].get("scaleTargetRef") or {}).get("name") for i in
                _find(here, "HorizontalPodAutoscaler", namespace=REPORTING_NAMESPACE)}
        services = {_meta(i.obj).get("name"): i for i in _find(here, "Service", namespace=REPORTING_NAMESPACE)}
        for role, item in deployments.items():
            spec = pod_spec(item.obj) or {}
            labels = ((item.obj["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not any(_selects(p.obj, labels) for p in pdbs):
                problems.append(f"{item.ref}: no PodDisruptionBudget selects its pods")
            grace = spec.get("terminationGracePeriodSeconds")
            # The binary gives every role `ingest.drain_secs` to stop after SIGTERM, which comes after the
            # preStop hook: the grace period must cover both.
            drain = (config.get("ingest") or {}).get("drain_secs", INGEST_DEFAULT_DRAIN_SECS)
            pre_stop = max((((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
                           for c in spec.get("containers") or [{}])
            if not isinstance(grace, int):
                problems.append(f"{item.ref}: no explicit terminationGracePeriodSeconds")
            elif grace <= pre_stop + drain:
                problems.append(f"{item.ref}: terminationGracePeriodSeconds {grace} must exceed "
                                f"the preStop sleep {pre_stop} s + drain_secs {drain}")
            if role in ("ingest", "api") and pre_stop < 5:
                problems.append(f"{item.ref}: a preStop sleep of at least 5 s must let endpoints be removed "
                                f"before the drain starts")
            problems += _config_mount_problems(item, spec)
        for role, port in REPORTING_ROLES.items():
            if port is None:
                continue
            if role not in hpas:
                problems.append(f"{env}: no HorizontalPodAutoscaler for {role}")
            service = services.get(role)
            role_labels = {"app.kubernetes.io/name": "reporting", "app.kubernetes.io/component": role}
            if service is None:
                problems.append(f"{env}: no Service {role}")
            elif not any(p.get("port") == port for p in service.obj["spec"].get("ports") or []) \
                    or not _selector_matches(service.obj["spec"].get("selector") or {}, role_labels):
                problems.append(f"{service.ref}: must expose port {port} of the {role} pods")
    return problems


def _selector_matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _selects(pdb: dict, labels: dict) -> bool:
    selector = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return _selector_matches(selector, labels)


def _config_mount_problems(item: Applied, spec: dict) -> list[str]:
    problems = []
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for role, container in containers(spec):
        args = container.get("args") or []
        if "--config" not in args:
            problems.append(f"{item.ref} {role} {container.get('name')}: `--config FILE` not passed")
            continue
        path = args[args.index("--config") + 1] if args.index("--config") + 1 < len(args) else ""
        mounted = False
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount.get("name")) or {}
            configmap = (volume.get("configMap") or {}).get("name", "")
            if configmap.startswith("reporting-config") and path == mount.get("mountPath", "").rstrip("/") + "/reporting.toml":
                mounted = True
        if not mounted:
            problems.append(f"{item.ref} {role} {container.get('name')}: {path} is not the mounted "
                            "reporting-config ConfigMap")
    return problems


# --- images ----------------------------------------------------------------------------------

def check_images(items: list[Applied]) -> list[str]:
    """Every image names a version: a tag other than `latest`, or a digest."""
    problems = []
    for item, spec in workloads(items):
        for role, container in containers(spec):
            image = str(container.get("image", ""))
            name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
            if "/" in tag or not name:
                tag = ""
            if not tag or tag == "latest":
                problems.append(f"{item.ref} {role} {container.get('name')}: image {image!r} has no "
                                "pinned tag")
    return problems


def check_all(root: Path) -> dict[str, list[str]]:
    from . import secretpolicy

    items = tree.applied_everywhere(root)
    return {
        "resources": check_resources(items),
        "replicas": check_replicas(items),
        "aggregator_partitions": check_aggregator_partitions(items),
        "placement": check_placement(root, items),
        "probes": check_probes(items),
        "reporting_roles": check_reporting_roles(items),
        "no_plain_secrets": secretpolicy.check_no_plain_secrets(root, items),
        "sealed_secrets": secretpolicy.check_sealed_secrets(items),
        "images": check_images(items),
    }
