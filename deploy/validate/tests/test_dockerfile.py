"""The image build, checked structurally (no Docker engine on these machines)."""

from deploycheck import dockerfile, policy


def pod_user(applied) -> int:
    users = {spec["securityContext"]["runAsUser"] for item, spec in policy.workloads(applied)
             if item.obj["metadata"].get("namespace") == "reporting"}
    assert len(users) == 1
    return users.pop()


def test_dockerfile_holds(root, applied):
    assert dockerfile.check(root, pod_user(applied)) == []


def test_runtime_as_root_fails(broken, applied):
    broken.edit("Dockerfile", "USER 10001:10001\n", "USER root\n")
    assert any("runs as root" in p for p in dockerfile.check(broken.root, pod_user(applied)))


def test_image_user_differing_from_the_pods_fails(broken, applied):
    broken.edit("Dockerfile", "USER 10001:10001\n", "USER 20000:20000\n")
    assert any("differs from the pods' runAsUser 10001" in p for p in dockerfile.check(broken.root, pod_user(applied)))


def test_shell_form_entrypoint_fails(broken):
    broken.edit("Dockerfile", 'ENTRYPOINT ["/usr/local/bin/reporting"]', "ENTRYPOINT /usr/local/bin/reporting")
    assert any("ENTRYPOINT must be the exec form" in p for p in dockerfile.check(broken.root))


def test_single_stage_build_fails(broken):
    text = (broken.root / "Dockerfile").read_text()
    broken.write("Dockerfile", text[: text.index("# Stage 2")])
    assert dockerfile.check(broken.root) == ["the Dockerfile must be multi-stage (a Rust builder and a small runtime)"]


def test_builder_without_zlib_headers_fails(broken):
    broken.edit("Dockerfile", "build-essential pkg-config zlib1g-dev", "build-essential pkg-config")
    assert any("zlib1g-dev" in p for p in dockerfile.check(broken.root))


def test_build_context_with_target_fails(broken):
    broken.edit(".dockerignore", "\ntarget\n", "\n")
    assert any(".dockerignore does not exclude target" in p for p in dockerfile.check(broken.root))
