"""Every kustomization renders offline with kubectl's built-in kustomize."""

import re
import subprocess

import pytest

from deploycheck import tree


def test_kubectl_is_recent_enough_to_render():
    out = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Client Version: v1\.(\d+)", out)
    assert match and int(match.group(1)) >= 32, out
    assert "Kustomize Version: v5" in out, out


def test_the_tree_has_the_kustomizations_flux_applies(root):
    found = {str(p.relative_to(root)) for p in tree.kustomization_dirs(root)}
    for env in tree.ENVIRONMENTS:
        assert {f"clusters/{env}", f"apps/{env}", f"infrastructure/data/{env}",
                f"infrastructure/logging/{env}", f"infrastructure/monitoring/{env}"} <= found
    assert {"apps/base", "infrastructure/controllers", "infrastructure/configs"} <= found


@pytest.mark.parametrize("directory", [str(p.relative_to(tree.REPO_ROOT))
                                       for p in tree.kustomization_dirs(tree.REPO_ROOT)])
def test_kustomization_renders(root, directory):
    objects = tree.render(root / directory)
    assert objects, f"{directory} renders nothing"
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and (obj.get("metadata") or {}).get("name")


def test_broken_kustomization_fails_to_render(broken):
    broken.remove("apps/base/api.yaml")
    with pytest.raises(tree.RenderError, match="api.yaml"):
        tree.render(broken.root / "apps/production")
