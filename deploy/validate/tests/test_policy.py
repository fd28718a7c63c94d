"""Policies on everything Flux applies (both clusters), and for each a broken copy of
the tree that must fail it."""

import pytest

from deploycheck import policy, secretpolicy, tree

BASE = "apps/base"


@pytest.fixture(scope="module")
def results(root):
    return policy.check_all(root)


@pytest.mark.parametrize("name", ["resources", "replicas", "aggregator_partitions", "placement", "probes",
                                  "reporting_roles", "no_plain_secrets", "sealed_secrets", "images"])
def test_policy_holds(results, name):
    assert results[name] == []


def run(check, broken):
    items = tree.applied_everywhere(broken.root)
    if check in (policy.check_placement, secretpolicy.check_no_plain_secrets):
        return check(broken.root, items)
    return check(items)


def assert_fails(problems, *fragments):
    assert any(all(f in p for f in fragments) for p in problems), problems


# --- the real tree: facts the policies rely on --------------------------------------------

def test_reporting_runs_exactly_the_existing_roles(applied):
    names = {(i.env, i.obj["metadata"]["name"]) for i in applied
             if i.obj["kind"] == "Deployment" and i.obj["metadata"].get("namespace") == "reporting"}
    assert names == {(env, role) for env in tree.ENVIRONMENTS for role in ("ingest", "aggregator", "api")}
    assert not any(i.obj["metadata"]["name"].startswith("replicator") for i in applied)


def test_every_init_container_is_covered(applied):
    inits = [c for item, spec in policy.workloads(applied) for c in spec.get("initContainers") or []]
    assert {c["name"] for c in inits} >= {"migrate"}
    assert all(c.get("resources", {}).get("limits") for c in inits)


# --- broken copies ---------------------------------------------------------------------------

def test_init_container_without_limits_fails(broken):
    broken.edit(f"{BASE}/aggregator.yaml",
                "            limits:\n              cpu: 500m\n              memory: 256Mi\n", "")
    assert_fails(run(policy.check_resources, broken),
                 "Deployment reporting/aggregator initContainer migrate: no limits.cpu")


def test_container_without_memory_request_fails(broken):
    broken.edit("infrastructure/logging/base/graylog.yaml", "              memory: 2Gi\n            limits:",
                "            limits:")
    assert_fails(run(policy.check_resources, broken), "StatefulSet graylog/graylog container graylog",
                 "no requests.memory")


def test_request_above_limit_fails(broken):
    broken.edit(f"{BASE}/api.yaml", "            requests:\n              cpu: 250m\n",
                "            requests:\n              cpu: 1500m\n")
    assert_fails(run(policy.check_resources, broken), "container api: requests.cpu exceeds limits.cpu")


def test_chart_without_resources_fails(broken):
    broken.edit("infrastructure/controllers/cloudnative-pg.yaml",
                "      limits:\n        cpu: 500m\n        memory: 512Mi\n", "")
    assert_fails(run(policy.check_resources, broken), "HelmRelease cnpg-system/cloudnative-pg values.resources")


def test_workload_without_replicas_fails(broken):
    broken.edit("infrastructure/logging/base/mongodb.yaml", "  replicas: 1\n", "")
    assert_fails(run(policy.check_replicas, broken), "StatefulSet graylog/mongodb: no explicit spec.replicas")


def test_hpa_target_with_replicas_fails(broken):
    broken.edit(f"{BASE}/ingest.yaml", "spec:\n  revisionHistoryLimit: 5\n",
                "spec:\n  replicas: 3\n  revisionHistoryLimit: 5\n")
    assert_fails(run(policy.check_replicas, broken), "Deployment reporting/ingest: scaled by HPA ingest")


def test_aggregator_replicas_not_dividing_partitions_fails(broken):
    broken.edit("apps/production/kustomization.yaml", "    count: 4\n", "    count: 5\n")
    assert_fails(run(policy.check_aggregator_partitions, broken),
                 "production: aggregator replicas 5 do not divide the 12 partitions")


def test_aggregator_replicas_above_partitions_fails(broken):
    broken.edit("apps/staging/kustomization.yaml", "    count: 2\n", "    count: 24\n")
    assert_fails(run(policy.check_aggregator_partitions, broken),
                 "staging: aggregator replicas 24 must be between 1 and the 12 partitions")


def test_config_partitions_differing_from_the_topic_fails(broken):
    broken.edit(f"{BASE}/config/reporting.toml", "partitions = 12", "partitions = 16")
    assert_fails(run(policy.check_aggregator_partitions, broken),
                 "bus.partitions is 16 but KafkaTopic reporting.readings.v1 has 12 partitions")


def test_node_selector_naming_no_node_group_fails(broken):
    broken.edit(f"{BASE}/ingest.yaml", "        pool: reporting\n", "        pool: workers\n")
    assert_fails(run(policy.check_placement, broken), "Deployment reporting/ingest pod: selects pool=workers")


def test_workload_without_node_selector_fails(broken):
    broken.edit("infrastructure/monitoring/base/grafana.yaml", "      nodeSelector:\n        pool: observability\n", "")
    assert_fails(run(policy.check_placement, broken), "Deployment monitoring/grafana pod: no nodeSelector")


def test_missing_toleration_for_a_tainted_group_fails(broken):
    broken.edit("infrastructure/logging/base/opensearch.yaml",
                "      tolerations:\n        - key: dedicated\n          operator: Equal\n"
                "          value: observability\n          effect: NoSchedule\n", "")
    assert_fails(run(policy.check_placement, broken), "StatefulSet graylog/opensearch pod",
                 "does not tolerate its taint dedicated=observability:NoSchedule")


def test_operator_placed_on_a_missing_group_fails(broken):
    broken.edit("infrastructure/data/base/postgres.yaml", "      pool: reporting\n", "      pool: database\n")
    assert_fails(run(policy.check_placement, broken), "Cluster postgres/reporting-pg spec.affinity",
                 "selects pool=database")


def test_node_agent_not_tolerating_every_group_fails(broken):
    broken.edit("infrastructure/logging/base/fluent-bit.yaml", "        - operator: Exists\n",
                "        - key: dedicated\n          value: observability\n          effect: NoSchedule\n")
    assert_fails(run(policy.check_placement, broken), "DaemonSet graylog/fluent-bit",
                 "does not tolerate dedicated=reporting:NoSchedule")


def test_container_without_readiness_probe_fails(broken):
    broken.edit("infrastructure/monitoring/base/prometheus.yaml",
                "          readinessProbe:\n            httpGet:\n              path: /-/ready\n", "          x:\n            httpGet:\n              path: /-/ready\n")
    problems = run(policy.check_probes, broken)
    assert_fails(problems, "StatefulSet monitoring/prometheus container prometheus: no readinessProbe")


def test_role_probing_the_wrong_endpoint_fails(broken):
    broken.edit(f"{BASE}/api.yaml", "              path: /healthz\n", "              path: /health\n")
    assert_fails(run(policy.check_probes, broken),
                 "Deployment reporting/api container api: livenessProbe must be GET /healthz on the admin port")


def test_grace_period_shorter_than_the_drain_fails(broken):
    broken.edit(f"{BASE}/ingest.yaml", "      terminationGracePeriodSeconds: 40\n",
                "      terminationGracePeriodSeconds: 25\n")
    assert_fails(run(policy.check_reporting_roles, broken),
                 "terminationGracePeriodSeconds 25 must exceed the preStop sleep 10 s + drain_secs 20")


def test_api_and_aggregator_grace_periods_are_checked_too(broken):
    broken.edit(f"{BASE}/api.yaml", "      terminationGracePeriodSeconds: 40\n",
                "      terminationGracePeriodSeconds: 1\n")
    broken.edit(f"{BASE}/aggregator.yaml", "      terminationGracePeriodSeconds: 60\n",
                "      terminationGracePeriodSeconds: 1\n")
    problems = run(policy.check_reporting_roles, broken)
    assert_fails(problems, "Deployment reporting/api: terminationGracePeriodSeconds 1 must exceed")
    assert_fails(problems, "Deployment reporting/aggregator: terminationGracePeriodSeconds 1 must exceed")


def test_ingest_without_a_pre_stop_sleep_fails(broken):
    broken.edit(f"{BASE}/ingest.yaml", "                seconds: 10\n", "                seconds: 0\n")
    assert_fails(run(policy.check_reporting_roles, broken),
                 "Deployment reporting/ingest: a preStop sleep of at least 5 s")


def test_role_without_pdb_fails(broken):
    text = (broken.root / f"{BASE}/api.yaml").read_text()
    broken.write(f"{BASE}/api.yaml", text[: text.index("---\napiVersion: policy/v1")])
    assert_fails(run(policy.check_reporting_roles, broken),
                 "Deployment reporting/api: no PodDisruptionBudget selects its pods")


def test_service_on_the_wrong_port_fails(broken):
    broken.edit(f"{BASE}/ingest.yaml", "      port: 8080\n", "      port: 80\n")
    assert_fails(run(policy.check_reporting_roles, broken), "Service reporting/ingest: must expose port 8080")


def test_role_not_given_the_mounted_config_fails(broken):
    broken.edit(f"{BASE}/api.yaml", 'args: ["api", "--config", "/etc/reporting/reporting.toml"]',
                'args: ["api", "--config", "/etc/reporting.toml"]')
    assert_fails(run(policy.check_reporting_roles, broken),
                 "container api: /etc/reporting.toml is not the mounted reporting-config ConfigMap")


def test_deploying_a_role_that_does_not_exist_fails(broken):
    text = (broken.root / f"{BASE}/aggregator.yaml").read_text().split("---")[0]
    broken.write(f"{BASE}/replicator/replicator.yaml",
                 text.replace("aggregator", "replicator").replace("  replicas: 2\n", "  replicas: 1\n"))
    broken.edit(f"{BASE}/kustomization.yaml", "  - api.yaml\n", "  - api.yaml\n  - replicator/replicator.yaml\n")
    assert_fails(run(policy.check_reporting_roles, broken), "reporting Deployments are",
                 "expected exactly ['aggregator', 'api', 'ingest']")


def test_plain_secret_file_anywhere_fails(broken):
    broken.write("apps/base/forgotten.yaml",
                 "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leak\nstringData:\n  password: hunter2\n")
    assert_fails(run(secretpolicy.check_no_plain_secrets, broken), "apps/base/forgotten.yaml: plain Secret leak")


def test_secret_generator_fails(broken):
    broken.edit("apps/production/kustomization.yaml", "replicas:\n",
                "secretGenerator:\n  - name: x\n    literals: [a=b]\nreplicas:\n")
    problems = run(secretpolicy.check_no_plain_secrets, broken)
    assert_fails(problems, "apps/production/kustomization.yaml: kustomize secretGenerator")
    assert_fails(problems, "rendered as a plain Secret")


def test_committed_private_key_fails(broken):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    broken.write("clusters/production/sealed-secrets.pem", pem)
    assert_fails(run(secretpolicy.check_no_plain_secrets, broken), "clusters/production/sealed-secrets.pem: contains a private key")


def test_reference_to_a_secret_nobody_seals_fails(broken):
    broken.edit(f"{BASE}/ingest.yaml", "                  name: reporting-kafka\n",
                "                  name: reporting-kafka-credentials\n")
    assert_fails(run(secretpolicy.check_sealed_secrets, broken),
                 "Deployment reporting/ingest: needs Secret reporting/reporting-kafka-credentials")


def test_cluster_wide_sealed_secret_fails(broken):
    broken.edit("apps/staging/secrets/reporting-postgres.yaml", "  namespace: reporting\nspec:",
                "  namespace: reporting\n  annotations:\n    sealedsecrets.bitnami.com/cluster-wide: \"true\"\nspec:")
    assert_fails(run(secretpolicy.check_sealed_secrets, broken), "sealed with a wider scope than strict")


def test_unpinned_image_fails(broken):
    broken.edit("infrastructure/logging/base/mongodb.yaml", "image: mongo:7.0", "image: mongo")
    assert_fails(run(policy.check_images, broken), "StatefulSet graylog/mongodb container mongodb: image 'mongo'")
