"""Every rendered object passes strict schema validation: built-in kinds against
kubernetes-validate's strict schemas, custom resources against strict schemas (the
SealedSecret CRD made strict, hand-written Flux/Strimzi/CloudNativePG subsets)."""

import pytest

from deploycheck import schemas, tree


def schema_problems(root, directory):
    return schemas.validate_objects(tree.render(root / directory), tree.kubernetes_version(root))


@pytest.mark.parametrize("directory", [str(p.relative_to(tree.REPO_ROOT))
                                       for p in tree.kustomization_dirs(tree.REPO_ROOT)])
def test_every_object_passes_strict_schema_validation(root, directory):
    assert schema_problems(root, directory) == []


def test_schemas_are_those_of_the_clusters_kubernetes_version(root):
    assert tree.kubernetes_version(root) == tree.eksctl_config(root, "staging")["metadata"]["version"]
    assert schemas._k8s_schema_dir(tree.kubernetes_version(root)).startswith(
        "v" + tree.kubernetes_version(root))


def test_custom_schemas_are_themselves_valid_and_strict():
    for key in [*schemas.CUSTOM_SCHEMAS, schemas.SEALED_SECRET]:
        validator = schemas._custom_validator("1.34", key)
        assert validator.schema["additionalProperties"] is False
        assert validator.schema["properties"]["spec"]["additionalProperties"] is False


def test_sealed_secret_crd_is_made_strict_where_it_does_not_preserve_unknown_fields():
    schema = schemas.sealed_secret_schema()
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["template"]["additionalProperties"] is False
    # encryptedData maps arbitrary keys to strings; template.metadata preserves unknown fields
    assert spec["properties"]["encryptedData"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in spec["properties"]["template"]["properties"]["metadata"]


# --- broken copies: each must fail strict validation ----------------------------------------

def test_misspelt_field_of_a_builtin_kind_fails(broken):
    broken.edit("apps/base/aggregator.yaml", "  replicas: 2\n", "  replica: 2\n")
    problems = schema_problems(broken.root, "apps/base")
    assert any("'replica' was unexpected" in p for p in problems), problems


def test_misspelt_nested_field_of_a_builtin_kind_fails(broken):
    broken.edit("apps/base/ingest.yaml", "      nodeSelector:\n", "      nodeSelecter:\n")
    problems = schema_problems(broken.root, "apps/base")
    assert any("'nodeSelecter' was unexpected" in p for p in problems), problems


def test_wrong_type_in_a_builtin_kind_fails(broken):
    broken.edit("infrastructure/logging/base/mongodb.yaml", "      port: 27017\n", "      port: twenty\n")
    problems = schema_problems(broken.root, "infrastructure/logging/base")
    assert any("Service graylog/mongodb" in p for p in problems), problems


def test_kind_without_a_schema_fails(broken):
    broken.write("infrastructure/configs/extra.yaml",
                 "apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata:\n  name: old\n")
    broken.edit("infrastructure/configs/kustomization.yaml", "  - storageclass.yaml\n",
                "  - storageclass.yaml\n  - extra.yaml\n")
    problems = schema_problems(broken.root, "infrastructure/configs")
    assert any("no schema for apiVersion networking.k8s.io/v1beta1 kind Ingress" in p for p in problems)


def test_unknown_field_in_a_sealed_secret_fails(broken):
    broken.edit("apps/production/secrets/reporting-kafka.yaml", "spec:\n", "spec:\n  immutable: true\n")
    problems = schema_problems(broken.root, "apps/production")
    assert any("SealedSecret reporting/reporting-kafka" in p and "'immutable'" in p for p in problems), problems


def test_unknown_metadata_field_in_a_sealed_secret_fails(broken):
    broken.edit("apps/production/secrets/reporting-kafka.yaml", "  namespace: reporting\nspec:",
                "  namespace: reporting\n  label: x\nspec:")
    problems = schema_problems(broken.root, "apps/production")
    assert any("'label' was unexpected" in p for p in problems), problems


def test_unknown_field_in_a_flux_kustomization_fails(broken):
    broken.edit("clusters/production/apps.yaml", "  prune: true\n", "  prune: true\n  pruneOrphans: true\n")
    problems = schema_problems(broken.root, "clusters/production")
    assert any("Kustomization flux-system/apps" in p and "'pruneOrphans'" in p for p in problems), problems


def test_bad_duration_in_a_flux_kustomization_fails(broken):
    broken.edit("clusters/production/apps.yaml", "  interval: 10m\n", "  interval: ten minutes\n")
    problems = schema_problems(broken.root, "clusters/production")
    assert any("spec.interval" in p for p in problems), problems


def test_unknown_field_in_a_helm_release_fails(broken):
    broken.edit("infrastructure/controllers/strimzi.yaml", "  install:\n", "  instal:\n")
    problems = schema_problems(broken.root, "infrastructure/controllers")
    assert any("HelmRelease strimzi-system/strimzi-kafka-operator" in p for p in problems), problems


def test_wrong_type_in_a_kafka_topic_fails(broken):
    broken.edit("infrastructure/data/base/topics.yaml", "  partitions: 12\n", '  partitions: "12"\n')
    problems = schema_problems(broken.root, "infrastructure/data/base")
    assert any("KafkaTopic kafka/reporting.readings.v1: spec.partitions" in p for p in problems), problems


def test_unknown_cleanup_policy_in_a_kafka_topic_fails(broken):
    broken.edit("infrastructure/data/base/topics.yaml", "cleanup.policy: compact\n", "cleanup.policy: compacted\n")
    problems = schema_problems(broken.root, "infrastructure/data/base")
    assert any("cleanup.policy" in p for p in problems), problems


def test_misspelt_field_in_a_postgres_cluster_fails(broken):
    broken.edit("infrastructure/data/base/postgres.yaml", "  instances: 3\n", "  instance: 3\n")
    problems = schema_problems(broken.root, "infrastructure/data/base")
    assert any("Cluster postgres/reporting-pg" in p for p in problems), problems


def test_bad_toleration_inside_a_strimzi_resource_fails(broken):
    broken.edit("infrastructure/data/base/kafka.yaml", "          operator: Equal\n",
                "          operater: Equal\n")
    problems = schema_problems(broken.root, "infrastructure/data/base")
    assert any("KafkaNodePool kafka/dual-role" in p and "'operater'" in p for p in problems), problems
