"""Strict schema validation of rendered objects and of the eksctl configuration."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import importlib_resources
import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
K8S_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
OBJECT_META_REF = K8S_DEFINITIONS_ID + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

# Custom resources used in this repository → the schema that validates them.
CUSTOM_SCHEMAS = {
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): "flux/gitrepository.yaml",
    ("source.toolkit.fluxcd.io/v1", "HelmRepository"): "flux/helmrepository.yaml",
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): "flux/kustomization.yaml",
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): "flux/helmrelease.yaml",
    ("kafka.strimzi.io/v1", "Kafka"): "strimzi/kafka.yaml",
    ("kafka.strimzi.io/v1", "KafkaNodePool"): "strimzi/kafkanodepool.yaml",
    ("kafka.strimzi.io/v1", "KafkaTopic"): "strimzi/kafkatopic.yaml",
    ("kafka.strimzi.io/v1", "KafkaUser"): "strimzi/kafkauser.yaml",
    ("postgresql.cnpg.io/v1", "Cluster"): "cnpg/cluster.yaml",
}
SHARED_SCHEMAS = ("flux/common.yaml", "strimzi/common.yaml")
SEALED_SECRET = ("bitnami.com/v1alpha1", "SealedSecret")
SEALED_SECRET_CRD = SCHEMA_DIR / "upstream/sealedsecrets.bitnami.com.crd.yaml"
EKSCTL_SCHEMA = SCHEMA_DIR / "upstream/eksctl-clusterconfig-v1alpha5.schema.json"


def _k8s_schema_dir(version: str) -> str:
    available = [v for v in kv_utils.all_versions()
                 if kv_utils.major_minor(v) <= kv_utils.major_minor(version)]
    if not available:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return f"v{available[-1]}-local-strict"


@functools.lru_cache(maxsize=None)
def k8s_definitions(version: str) -> dict:
    ref = importlib_resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", _k8s_schema_dir(version), "_definitions.json")
    return json.loads(ref.read_text())


def strict_openapi(node):
    """A CRD's openAPIV3Schema made strict: objects that declare properties reject
    unknown keys unless they preserve unknown fields; `nullable` becomes a null type."""
    if isinstance(node, list):
        return [strict_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_openapi(value) for key, value in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def sealed_secret_schema() -> dict:
    crd = yaml.safe_load(SEALED_SECRET_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = strict_openapi(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"$ref": OBJECT_META_REF}
    schema["properties"]["apiVersion"] = {"const": SEALED_SECRET[0]}
    schema["properties"]["kind"] = {"const": SEALED_SECRET[1]}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://schemas.reporting.invalid/sealedsecret.json"
    return schema


def _load_schema(relative: str) -> dict:
    return yaml.safe_load((SCHEMA_DIR / relative).read_text())


@functools.lru_cache(maxsize=None)
def _registry(version: str) -> Registry:
    resources = [(K8S_DEFINITIONS_ID, Resource.from_contents(k8s_definitions(version)))]
    for relative in (*SHARED_SCHEMAS, *CUSTOM_SCHEMAS.values()):
        schema = _load_schema(relative)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@functools.lru_cache(maxsize=None)
def _custom_validator(version: str, key: tuple[str, str]):
    schema = sealed_secret_schema() if key == SEALED_SECRET else _load_schema(CUSTOM_SCHEMAS[key])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=_registry(version))


def _describe(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name', '?')}"


def _at(path) -> str:
    return ".".join(str(p) for p in path) or "(root)"


def validate_object(obj: dict, version: str) -> list[str]:
    """Violations of one object against its strict schema; an object without a known
    schema is itself a violation (nothing is waved through)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key == SEALED_SECRET or key in CUSTOM_SCHEMAS:
        validator = _custom_validator(version, key)
        return [f"{_describe(obj)}: {_at(error.absolute_path)}: {error.message}"
                for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path).__repr__())]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{_describe(obj)}: {_at(error.path)}: {error.message}"]
    except kv_utils.SchemaNotFoundError:
        return [f"{_describe(obj)}: no schema for apiVersion {key[0]} kind {key[1]}"]
    return []


def validate_objects(objects, version: str) -> list[str]:
    problems: list[str] = []
    for obj in objects:
        problems.extend(validate_object(obj, version))
    return problems


@functools.lru_cache(maxsize=None)
def _eksctl_validator():
    schema = json.loads(EKSCTL_SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema)


def validate_eksctl_schema(config: dict) -> list[str]:
    return [f"ClusterConfig: {_at(error.absolute_path)}: {error.message}"
            for error in _eksctl_validator().iter_errors(config)]
