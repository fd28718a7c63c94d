"""The eksctl ClusterConfigs: eksctl's own schema plus what it cannot express."""

from deploycheck import eksctl, tree

PROD = "infrastructure/eksctl/cluster.yaml"


def test_eksctl_configs_hold(root):
    assert eksctl.check(root) == []


def test_node_groups_for_reporting_and_observability_are_tainted(root):
    for env in tree.ENVIRONMENTS:
        groups = {g.name: g for g in eksctl.node_groups(tree.eksctl_config(root, env))}
        assert {"reporting", "observability"} <= set(groups)
        for name in ("reporting", "observability"):
            assert groups[name].labels[eksctl.POOL_LABEL] == name
            assert [t["effect"] for t in groups[name].taints] == ["NoSchedule"]


def test_unknown_key_fails_the_eksctl_schema(broken):
    broken.edit(PROD, "    instanceType: m6i.xlarge\n", "    instanceTypo: m6i.xlarge\n")
    problems = eksctl.check(broken.root)
    assert any("production: ClusterConfig" in p and "'instanceTypo'" in p for p in problems), problems


def test_wrong_type_fails_the_eksctl_schema(broken):
    broken.edit(PROD, "    maxSize: 6\n", '    maxSize: "six"\n')
    problems = eksctl.check(broken.root)
    assert any("'six' is not of type 'integer'" in p for p in problems), problems


def test_unknown_taint_effect_fails(broken):
    broken.edit(PROD, "        value: reporting\n        effect: NoSchedule\n",
                "        value: reporting\n        effect: NoScheduling\n")
    problems = eksctl.check(broken.root)
    assert any("effect 'NoScheduling'" in p for p in problems), problems


def test_desired_capacity_outside_min_max_fails(broken):
    broken.edit(PROD, "    minSize: 3\n    desiredCapacity: 3\n", "    minSize: 3\n    desiredCapacity: 2\n")
    problems = eksctl.check(broken.root)
    assert any("minSize <= desiredCapacity <= maxSize, got 3 / 2 / 6" in p for p in problems), problems


def test_node_group_without_pool_label_fails(broken):
    broken.edit(PROD, "    labels:\n      pool: observability\n", "    labels:\n      tier: observability\n")
    problems = eksctl.check(broken.root)
    assert any("observability: no `pool` label" in p for p in problems), problems
