"""Flux: each cluster's Kustomizations prune, wait and are chained by dependsOn
(controllers → configs → data, logging, monitoring → apps)."""

from deploycheck import flux, tree

APPS = "clusters/production/apps.yaml"
INFRA = "clusters/production/infrastructure.yaml"


def test_flux_chain_holds(root):
    assert flux.check(root) == []


def test_apps_wait_for_the_whole_platform(root):
    for env in tree.ENVIRONMENTS:
        kustomizations = {k["metadata"]["name"]: k for k in tree.flux_kustomizations(root, env)}
        assert {d["name"] for d in kustomizations["apps"]["spec"]["dependsOn"]} == {"data", "logging", "monitoring"}
        assert kustomizations["apps"]["spec"]["path"] == f"./apps/{env}"


def test_kustomization_without_wait_fails(broken):
    broken.edit(APPS, "  wait: true\n", "  wait: false\n")
    problems = flux.check(broken.root)
    assert any("production: Flux Kustomization apps: wait must be true" in p for p in problems), problems


def test_kustomization_without_prune_fails(broken):
    broken.edit(INFRA, "  path: ./infrastructure/logging/production\n  prune: true\n",
                "  path: ./infrastructure/logging/production\n  prune: false\n")
    problems = flux.check(broken.root)
    assert any("Kustomization logging: prune must be true" in p for p in problems), problems


def test_apps_not_waiting_for_logging_fails(broken):
    broken.edit(APPS, "    - name: logging\n", "")
    problems = flux.check(broken.root)
    assert any("Kustomization apps: must depend (directly or not) on ['logging']" in p for p in problems), problems


def test_dependency_on_a_missing_kustomization_fails(broken):
    broken.edit(APPS, "    - name: data\n", "    - name: databases\n")
    problems = flux.check(broken.root)
    assert any("dependsOn databases, which does not exist" in p for p in problems), problems


def test_dependency_cycle_fails(broken):
    broken.edit(INFRA, "  name: infra-controllers\n  namespace: flux-system\nspec:\n",
                "  name: infra-controllers\n  namespace: flux-system\nspec:\n  dependsOn:\n    - name: apps\n")
    problems = flux.check(broken.root)
    assert any("dependsOn forms a cycle" in p for p in problems), problems


def test_production_applying_a_staging_overlay_fails(broken):
    broken.edit(APPS, "  path: ./apps/production\n", "  path: ./apps/staging\n")
    problems = flux.check(broken.root)
    assert any("belongs to another environment" in p for p in problems), problems


def test_path_without_kustomization_fails(broken):
    broken.edit(APPS, "  path: ./apps/production\n", "  path: ./apps/prod\n")
    problems = flux.check(broken.root)
    assert any("path ./apps/prod has no kustomization.yaml" in p for p in problems), problems


def test_source_other_than_the_bootstrap_repository_fails(broken):
    broken.edit(APPS, "    name: flux-system\n", "    name: somewhere-else\n")
    problems = flux.check(broken.root)
    assert any("sourceRef must be GitRepository flux-system" in p for p in problems), problems


FAKE_FLUX_CONTROLLER = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: source-controller
  namespace: flux-system
  labels:
    app.kubernetes.io/part-of: flux
spec:
  selector:
    matchLabels:
      app: source-controller
  template:
    metadata:
      labels:
        app: source-controller
    spec:
      nodeSelector:
        kubernetes.io/os: linux
      containers:
        - name: manager
          image: ghcr.io/fluxcd/source-controller:v1.4.1
"""


def flux_controller_placement(broken):
    from deploycheck import policy

    broken.write("clusters/production/flux-system/gotk-components.yaml", FAKE_FLUX_CONTROLLER)
    items = [i for i in tree.applied_everywhere(broken.root) if i.obj["kind"] == "Deployment"
             and i.obj["metadata"]["namespace"] == "flux-system"]
    assert len(items) == 1
    return policy.check_placement(broken.root, items) + policy.check_replicas(items)


def test_flux_controllers_written_by_bootstrap_land_on_the_system_group(broken):
    """gotk-components.yaml is a placeholder until `flux bootstrap` fills it; with a
    controller like the ones it writes, the flux-system patch places it correctly."""
    assert flux_controller_placement(broken) == []


def test_flux_controllers_without_the_placement_patch_fail(broken):
    broken.edit("clusters/production/flux-system/kustomization.yaml", "              pool: system\n",
                "              tier: system\n")
    problems = flux_controller_placement(broken)
    assert any("Deployment flux-system/source-controller pod: no nodeSelector" in p for p in problems), problems
