"""Structure of the image build (no Docker engine here, so CI reads the Dockerfile)."""

from __future__ import annotations

import json
from pathlib import Path

ENTRYPOINT = ["/usr/local/bin/reporting"]


def instructions(text: str) -> list[tuple[str, str]]:
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for word, rest in instructions(text):
        if word == "FROM":
            result.append([])
        if result:
            result[-1].append((word, rest))
    return result


def check(root: Path, pod_user: int | None = None) -> list[str]:
    problems = []
    path = root / "Dockerfile"
    if not path.is_file():
        return ["no Dockerfile"]
    all_stages = stages(path.read_text())
    if len(all_stages) < 2:
        return ["the Dockerfile must be multi-stage (a Rust builder and a small runtime)"]
    builder, runtime = all_stages[0], all_stages[-1]
    builder_from = builder[0][1]
    if not builder_from.startswith("rust:"):
        problems.append(f"builder stage starts FROM {builder_from!r}, expected the rust image")
    builder_run = " ".join(rest for word, rest in builder if word == "RUN")
    for package in ("build-essential", "zlib1g-dev"):
        if package not in builder_run:
            problems.append(f"builder does not install {package} (librdkafka is compiled from source)")
    if "cargo build" not in builder_run or "--release" not in builder_run or "--locked" not in builder_run:
        problems.append("builder must run `cargo build --release --locked`")
    runtime_from = runtime[0][1].split(" AS ")[0].split(" as ")[0]
    if "slim" not in runtime_from and "distroless" not in runtime_from:
        problems.append(f"runtime stage FROM {runtime_from!r} is not a small base image")
    runtime_run = " ".join(rest for word, rest in runtime if word == "RUN")
    if "ca-certificates" not in runtime_run:
        problems.append("runtime does not install ca-certificates (TLS to managed Kafka/PostgreSQL)")
    if not any(word == "COPY" and "--from=" in rest and "/usr/local/bin/reporting" in rest for word, rest in runtime):
        problems.append("runtime does not copy the binary from the builder to /usr/local/bin/reporting")
    users = [rest for word, rest in runtime if word == "USER"]
    user = users[-1].split(":")[0] if users else "root"
    if user in ("root", "0"):
        problems.append("the runtime stage runs as root: add a non-root USER")
    elif pod_user is not None and user.isdigit() and int(user) != pod_user:
        problems.append(f"image USER {user} differs from the pods' runAsUser {pod_user}")
    entrypoints = [rest for word, rest in runtime if word == "ENTRYPOINT"]
    try:
        entrypoint = json.loads(entrypoints[-1]) if entrypoints else None
    except ValueError:
        entrypoint = None
    if entrypoint != ENTRYPOINT:
        problems.append(f"ENTRYPOINT must be the exec form {json.dumps(ENTRYPOINT)} (role given as args)")
    ignore = root / ".dockerignore"
    ignored = {line.strip().strip("/") for line in ignore.read_text().splitlines()} if ignore.is_file() else set()
    for entry in ("target", ".git"):
        if entry not in ignored:
            problems.append(f".dockerignore does not exclude {entry}")
    return problems
