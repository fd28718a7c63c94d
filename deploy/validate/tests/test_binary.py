"""Checks against the real `reporting` binary, when one is built (REPORTING_BIN, or
target/release or target/debug): the configuration the pods get is accepted, and the
log lines it prints have the shape that survives fluent-bit → Graylog. Skipped when no
binary is at hand (CI builds it before running this suite)."""

import json
import os
import queue
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from deploycheck import logging as logpath
from deploycheck import policy


@pytest.fixture(scope="module")
def binary(root) -> Path:
    if os.environ.get("REPORTING_BIN"):
        return Path(os.environ["REPORTING_BIN"])
    # The newest build: scripts/test builds target/debug just before these checks, and a stale release
    # binary must not stand in for the code under test.
    built = [p for p in (root / "target/release/reporting", root / "target/debug/reporting")
             if p.is_file() and os.access(p, os.X_OK)]
    if not built:
        pytest.fail("no reporting binary built: run scripts/test (it builds one), or set REPORTING_BIN")
    return max(built, key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def sections(root):
    return logpath.parse_fluent_bit((root / "infrastructure/logging/base/fluent-bit/fluent-bit.conf").read_text())


def reporting_containers(applied):
    for item, spec in policy.workloads(applied):
        if item.obj["metadata"].get("namespace") != "reporting":
            continue
        for kind, container in policy.containers(spec):
            yield item, spec, kind, container


def materialise(item, spec, container, applied, workdir: Path):
    """The container's files (ConfigMap and Secret mounts) under workdir, with dummy
    secret values, and its environment with $(VAR) references expanded as the kubelet
    does. Returns (args, env) with mount paths rewritten into workdir."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    configmaps = {i.obj["metadata"]["name"]: i.obj.get("data") or {} for i in applied
                  if i.env == item.env and i.obj["kind"] == "ConfigMap"}
    mounts = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        target = workdir / mount["mountPath"].strip("/").replace("/", "_")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, value in configmaps[volume["configMap"]["name"]].items():
                (target / key).write_text(value)
        elif "secret" in volume:
            for entry in volume["secret"].get("items") or []:
                (target / entry["path"]).write_text(
                    "postgres://reporting:dummy@127.0.0.1:5432/reporting?sslmode=prefer")
        mounts[mount["mountPath"].rstrip("/")] = str(target)

    def rewrite(value: str) -> str:
        for path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if value.startswith(path + "/") or value == path:
                return local + value[len(path):]
        return value

    env = {"PATH": os.environ.get("PATH", "")}
    for entry in container.get("env") or []:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = f"dummy{re.sub('[^a-z0-9]', '', ref['key'])}"
        else:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)),
                           entry["value"])
        env[entry["name"]] = rewrite(value)
    args = [rewrite(a) for a in container.get("args") or []]
    return args, env


def test_pods_configuration_is_accepted_by_the_binary(binary, applied, tmp_path):
    checked = 0
    for index, (item, spec, kind, container) in enumerate(reporting_containers(applied)):
        args, env = materialise(item, spec, container, applied, tmp_path / str(index))
        role = args[0]
        result = subprocess.run([str(binary), "config", "--json", *args[1:]], env=env, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, f"{item.ref} {kind} {container['name']} ({role}): {result.stderr}"
        effective = json.loads(result.stdout)
        assert effective["log"]["format"] == "json"
        assert effective["admin"]["listen"].endswith(":9464")
        if "REPORTING__BUS__KAFKA" in env:
            kafka = effective["bus"]["kafka"]
            assert kafka["sasl.username"] == "dummyusername" and kafka["sasl.password"] != "dummypassword"
            assert kafka["security.protocol"] == "SASL_PLAINTEXT"
        checked += 1
    assert checked >= 8  # ingest, aggregator (+migrate), api (+migrate), in two clusters


def test_built_librdkafka_supports_the_pods_kafka_security(binary, applied, tmp_path):
    """The pods authenticate to Kafka with SASL/SCRAM-SHA-512 (Strimzi; MSK uses it over
    TLS), which librdkafka provides only when built with OpenSSL (the rdkafka crate's
    `ssl` feature). Starts ingest with the pod's exact configuration against a closed
    local port: client creation must not reject the security settings."""
    item, spec, _, container = next((i, s, k, c) for i, s, k, c in reporting_containers(applied)
                                    if c["name"] == "ingest" and i.env == "production")
    args, env = materialise(item, spec, container, applied, tmp_path)
    env.update({"REPORTING__BUS__BROKERS": "127.0.0.1:9", "REPORTING__INGEST__LISTEN": "127.0.0.1:0",
                "REPORTING__ADMIN__LISTEN": "127.0.0.1:0", "REPORTING__INGEST__DRAIN_SECS": "1"})
    try:
        result = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=8)
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as running:  # still up: the client was created
        output = (running.stdout or b"").decode() + (running.stderr or b"").decode()
    assert "recompile librdkafka" not in output and "OpenSSL not available" not in output, (
        "the binary's librdkafka has no OpenSSL: SASL/SCRAM and TLS to Kafka need the rdkafka `ssl` feature")
    assert "Client creation error" not in output and "invalid configuration" not in output, output


def run_and_collect(binary: Path, workdir: Path, args: list[str], first_line_timeout: float = 20.0) -> list[str]:
    """Runs the binary on loopback ephemeral ports, waits (with a deadline) for its first
    stdout line, stops it with SIGTERM and returns every stdout line."""
    env = {**os.environ, "REPORTING__LOG__FORMAT": "json", "REPORTING__LOG__LEVEL": "info",
           "REPORTING__DATA_DIR": str(workdir / "data"), "REPORTING__INGEST__DRAIN_SECS": "1",
           "REPORTING__INGEST__LISTEN": "127.0.0.1:0", "REPORTING__API__LISTEN": "127.0.0.1:0",
           "REPORTING__ADMIN__LISTEN": "127.0.0.1:0"}
    process = subprocess.Popen([str(binary), *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    collected = []
    try:
        collected.append(lines.get(timeout=first_line_timeout))
    except queue.Empty:
        pass
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reader.join(timeout=5)
    while not lines.empty():
        collected.append(lines.get())
    return [line.rstrip("\n") for line in collected if line.strip()]


def assert_lines_survive(lines, sections):
    for line in lines:
        assert logpath.record_problems(line) == [], line
        message = logpath.simulate(sections, logpath.cri_line(line), logpath.SAMPLE_KUBERNETES)
        assert message is not None, line
        assert isinstance(message.get("level"), int) and isinstance(message.get("timestamp"), (int, float)), line


@pytest.mark.parametrize("args", [["migrate"], ["ingest"], ["api"]], ids=["migrate", "ingest-error", "api-error"])
def test_role_log_lines_are_flat_json_that_survive_the_pipeline(binary, sections, tmp_path, args):
    """Every stdout line of a role is a log record: `migrate` (embedded store) logs
    and exits; `ingest`/`api` without Kafka/PostgreSQL log their configuration error."""
    lines = run_and_collect(binary, tmp_path, args)
    assert lines, f"reporting {' '.join(args)} printed nothing on stdout"
    assert_lines_survive(lines, sections)


def test_error_lines_carry_error_severity(binary, sections, tmp_path):
    lines = run_and_collect(binary, tmp_path, ["ingest"])
    levels = {json.loads(line)["level"] for line in lines}
    assert 3 in levels


def test_lifecycle_log_lines_of_all_roles_survive_the_pipeline(binary, sections, tmp_path):
    """`reporting up` runs every role; its human-readable banner (local use only, never
    run in Kubernetes) is the one non-JSON output and is left out here."""
    lines = [line for line in run_and_collect(binary, tmp_path, ["up"]) if line.startswith("{")]
    assert len(lines) >= 3
    assert_lines_survive(lines, sections)
