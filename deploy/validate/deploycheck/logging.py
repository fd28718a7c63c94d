"""The log path: Reporting's JSON lines → fluent-bit (tail, kubernetes, modify, nest)
→ GELF → Graylog. The pipeline model here follows fluent-bit's documented behaviour
and its GELF encoder's rules (deploy/README.md, "Central logging"), so the deployed
fluent-bit configuration can be exercised with real log lines offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import tree
from .tree import Applied

LOGGING_NAMESPACE = "graylog"
SYSLOG_WORDS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
                "info": 6, "debug": 7}
GELF_FIELD = re.compile(r"^[\w.\-]+$")
Section = tuple[str, list[tuple[str, str]]]


# --- fluent-bit classic configuration ---------------------------------------------------

def parse_fluent_bit(text: str) -> list[Section]:
    sections: list[Section] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("@"):
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].strip().upper(), []))
            continue
        if not sections:
            continue
        key, _, value = line.partition(" ")
        sections[-1][1].append((key.strip().lower(), value.strip()))
    return sections


def first(entries: list[tuple[str, str]], key: str) -> str | None:
    return next((v for k, v in entries if k == key), None)


def all_of(entries: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in entries if k == key]


def _on(value: str | None) -> bool:
    return str(value).lower() in ("on", "true", "yes", "1")


def _plugin(sections: list[Section], kind: str, name: str) -> list[list[tuple[str, str]]]:
    return [entries for section, entries in sections
            if section == kind and (first(entries, "name") or "").lower() == name]


def config_problems(text: str) -> list[str]:
    """What the fluent-bit configuration must do for Reporting's logs to reach Graylog
    intact."""
    sections = parse_fluent_bit(text)
    problems = []
    tails = [e for e in _plugin(sections, "INPUT", "tail")
             if "/var/log/containers/*.log" in (first(e, "path") or "")]
    if not tails:
        problems.append("no tail input on /var/log/containers/*.log")
    for entries in tails:
        parsers = {p.strip() for p in (first(entries, "multiline.parser") or "").split(",")}
        if not {"docker", "cri"} <= parsers:
            problems.append(f"tail input: multiline.parser must include docker and cri, got {sorted(parsers)}")
    kubernetes = _plugin(sections, "FILTER", "kubernetes")
    if not kubernetes:
        problems.append("no kubernetes filter")
    for entries in kubernetes:
        if not _on(first(entries, "merge_log")):
            problems.append("kubernetes filter: merge_log must be on (JSON fields become record fields)")
        if _on(first(entries, "keep_log")):
            problems.append("kubernetes filter: keep_log must be off (the raw line would be sent twice)")
    lifts = [e for e in _plugin(sections, "FILTER", "nest")
             if (first(e, "operation") or "").lower() == "lift" and first(e, "nested_under") == "kubernetes"]
    if not lifts:
        problems.append("no nest filter lifting `kubernetes` (GELF needs a top-level host)")
    outputs = _plugin(sections, "OUTPUT", "gelf")
    if not outputs:
        problems.append("no gelf output")
    expected = {"gelf_short_message_key": "message", "gelf_level_key": "level",
                "gelf_timestamp_key": "timestamp"}
    for entries in outputs:
        for key, value in expected.items():
            if first(entries, key) != value:
                problems.append(f"gelf output: {key} must be {value}, got {first(entries, key)}")
        if not first(entries, "host") or not first(entries, "port"):
            problems.append("gelf output: host and port of Graylog's GELF input must be set")
    # Exercise the configuration with a Reporting line, a plain-text line and another program's JSON line.
    sample = json.dumps({"timestamp": 1700000000.5, "level": 6, "message": "listening",
                         "target": "reporting::ingest", "role": "ingest", "addr": "0.0.0.0:8080"})
    other_json = json.dumps({"level": "info", "ts": "2026-12-03T10:00:00.000Z", "msg": "Reconciliation finished"})
    for raw, what in ((sample, "a Reporting JSON line"), ("plain text from another program", "a plain-text line"),
                      (other_json, "a JSON line with `msg` (Flux, operators, PostgreSQL)")):
        message = simulate(sections, cri_line(raw), SAMPLE_KUBERNETES)
        if message is None:
            problems.append(f"{what} is dropped before Graylog")
        else:
            problems += [f"{what}: {p}" for p in gelf_message_problems(message)]
    return problems


# --- the pipeline, modelled ---------------------------------------------------------------

SAMPLE_KUBERNETES = {"pod_name": "ingest-7d9f-abcde", "namespace_name": "reporting",
                     "pod_id": "0b1c", "host": "ip-10-0-1-23.eu-central-1.compute.internal",
                     "container_name": "ingest", "docker_id": "f00d", "container_hash": "sha256:1",
                     "container_image": "ghcr.io/example-org/reporting:0.1.0"}


def cri_line(log: str, stream: str = "stdout") -> str:
    return f"2026-12-03T10:00:00.123456789Z {stream} F {log}"


def _parse_container_line(line: str) -> dict:
    if line.startswith("{"):  # docker json-file
        record = json.loads(line)
        record["log"] = record.get("log", "").rstrip("\n")
        return record
    time, stream, tag, log = line.split(" ", 3)  # CRI: time stream P|F log
    return {"time": time, "stream": stream, "_p": tag, "log": log}


def simulate(sections: list[Section], line: str, kubernetes: dict) -> dict | None:
    """The GELF message fluent-bit would send for one container log line, or None when
    fluent-bit would drop the record."""
    record = _parse_container_line(line)
    for section, entries in sections:
        if section != "FILTER":
            continue
        name = (first(entries, "name") or "").lower()
        if name == "kubernetes":
            record["kubernetes"] = dict(kubernetes)
            if _on(first(entries, "merge_log")):
                try:
                    merged = json.loads(record.get("log", ""))
                except ValueError:
                    merged = None
                if isinstance(merged, dict):
                    record.update(merged)
                    if not _on(first(entries, "keep_log")):
                        record.pop("log", None)
        elif name == "modify":
            for key, value in entries:
                if key == "rename":
                    old, new = value.split()
                    if old in record and new not in record:
                        record[new] = record.pop(old)
                elif key == "remove":
                    record.pop(value, None)
        elif name == "nest" and (first(entries, "operation") or "").lower() == "lift":
            nested = record.pop(first(entries, "nested_under"), None)
            if isinstance(nested, dict):
                prefix = first(entries, "add_prefix") or ""
                for key, value in nested.items():
                    record[prefix + key] = value
    outputs = _plugin(sections, "OUTPUT", "gelf")
    return gelf_encode(record, outputs[0]) if outputs else None


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}_{key}", inner, out)
    elif isinstance(value, list):
        out[prefix] = json.dumps(value)
    else:
        out[prefix] = value


def gelf_encode(record: dict, output: list[tuple[str, str]]) -> dict | None:
    """fluent-bit's GELF encoder: no short message → dropped; level from a number 0–7
    or a syslog word; timestamp from a number; other fields `_`-prefixed and flattened;
    `id` cannot be sent."""
    record = dict(record)
    short_key = first(output, "gelf_short_message_key") or "short_message"
    host_key = first(output, "gelf_host_key") or "host"
    level_key = first(output, "gelf_level_key") or "level"
    time_key = first(output, "gelf_timestamp_key") or "timestamp"
    short = record.pop(short_key, None)
    if not isinstance(short, str) or not short:
        return None
    message = {"version": "1.1", "short_message": short}
    host = record.pop(host_key, None)
    if host is not None:
        message["host"] = host
    level = record.pop(level_key, None)
    if isinstance(level, int) and not isinstance(level, bool) and 0 <= level <= 7:
        message["level"] = level
    elif isinstance(level, str) and level.lower() in SYSLOG_WORDS:
        message["level"] = SYSLOG_WORDS[level.lower()]
    elif level is not None:
        message["_level"] = level  # kept as a string field: Graylog sees no severity
    timestamp = record.pop(time_key, None)
    if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
        message["timestamp"] = timestamp
    for key, value in record.items():
        flat: dict = {}
        _flatten(key, value, flat)
        for name, inner in flat.items():
            if name in ("id", "_id"):
                continue
            message["_" + name] = inner
    return message


def gelf_message_problems(message: dict) -> list[str]:
    """What Graylog would lose or reject in a GELF message."""
    problems = []
    if not isinstance(message.get("host"), str) or not message["host"].strip():
        problems.append("no top-level host")
    if not message.get("short_message"):
        problems.append("no short_message")
    for key in message:
        if key.startswith("_") and not GELF_FIELD.match(key[1:]):
            problems.append(f"field {key!r} is not a valid GELF field name")
    return problems


# --- Reporting's own log records -------------------------------------------------------------

def record_problems(line: str) -> list[str]:
    """Checks one stdout line of the binary against docs/interfaces.md "Logs" and what
    survives fluent-bit → Graylog: flat JSON, `message` string, numeric syslog `level`,
    numeric epoch-seconds `timestamp`, scalar fields, no `id`."""
    try:
        record = json.loads(line)
    except ValueError:
        return [f"not JSON: {line[:80]!r}"]
    if not isinstance(record, dict):
        return [f"not a JSON object: {line[:80]!r}"]
    problems = []
    if not isinstance(record.get("message"), str) or not record["message"]:
        problems.append("no non-empty string `message` (fluent-bit drops the record)")
    level = record.get("level")
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 7:
        problems.append(f"`level` must be a syslog severity number 0-7, got {level!r}")
    timestamp = record.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or timestamp < 1e9:
        problems.append(f"`timestamp` must be epoch seconds as a number, got {timestamp!r}")
    for key in ("target", "role"):
        if not isinstance(record.get(key), str):
            problems.append(f"no string `{key}`")
    for key, value in record.items():
        if isinstance(value, (dict, list)):
            problems.append(f"field {key!r} is nested; fields must be flat scalars")
        if key == "id":
            problems.append("a field named `id` is dropped by Graylog")
        if not GELF_FIELD.match(key):
            problems.append(f"field name {key!r} is not a valid GELF field name")
    return problems


# --- deployed logging stack ---------------------------------------------------------------------

def _meta(obj):
    return obj.get("metadata") or {}


def check(root: Path, items: list[Applied]) -> list[str]:
    problems = []
    for env in tree.ENVIRONMENTS:
        here = [i for i in items if i.env == env
                and (_meta(i.obj).get("namespace") == LOGGING_NAMESPACE
                     or i.obj.get("kind") in ("ClusterRole", "ClusterRoleBinding"))]
        configs = [i for i in here if i.obj.get("kind") == "ConfigMap"
                   and "fluent-bit.conf" in (i.obj.get("data") or {})]
        if not configs:
            problems.append(f"{env}: no ConfigMap with fluent-bit.conf in namespace {LOGGING_NAMESPACE}")
        for item in configs:
            problems += [f"{item.ref}: {p}" for p in config_problems(item.obj["data"]["fluent-bit.conf"])]
        daemonsets = [i for i in here if i.obj.get("kind") == "DaemonSet"]
        if not daemonsets:
            problems.append(f"{env}: no log-collecting DaemonSet in namespace {LOGGING_NAMESPACE}")
        for item in daemonsets:
            problems += _daemonset_problems(item, here, {_meta(c.obj).get("name") for c in configs})
        statefulsets = {_meta(i.obj).get("name"): i for i in here if i.obj.get("kind") == "StatefulSet"}
        for name in ("graylog", "opensearch", "mongodb"):
            item = statefulsets.get(name)
            if item is None:
                problems.append(f"{env}: no StatefulSet {name} in namespace {LOGGING_NAMESPACE}")
            elif not item.obj["spec"].get("volumeClaimTemplates"):
                problems.append(f"{item.ref}: no volumeClaimTemplates (data would not survive a restart)")
    return problems


def _daemonset_problems(item: Applied, here: list[Applied], config_names: set) -> list[str]:
    problems = []
    spec = item.obj["spec"]["template"]["spec"]
    volumes = spec.get("volumes") or []
    if not any((v.get("configMap") or {}).get("name") in config_names for v in volumes):
        problems.append(f"{item.ref}: does not mount the fluent-bit configuration")
    if not any((v.get("hostPath") or {}).get("path") in ("/var/log", "/var/log/") for v in volumes):
        problems.append(f"{item.ref}: does not mount the node's /var/log")
    account = spec.get("serviceAccountName")
    bindings = [i.obj for i in here if i.obj.get("kind") == "ClusterRoleBinding"
                and any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                        and s.get("namespace") == LOGGING_NAMESPACE for s in i.obj.get("subjects") or [])]
    granted: dict[str, set] = {}
    for binding in bindings:
        role = next((i.obj for i in here if i.obj.get("kind") == "ClusterRole"
                     and _meta(i.obj).get("name") == binding["roleRef"]["name"]), None)
        for rule in (role or {}).get("rules") or []:
            for resource in rule.get("resources") or []:
                granted.setdefault(resource, set()).update(rule.get("verbs") or [])
    for resource in ("pods", "namespaces"):
        if not {"get", "list", "watch"} <= granted.get(resource, set()):
            problems.append(f"{item.ref}: service account {account} cannot get/list/watch {resource} "
                            "(the kubernetes filter needs it)")
    return problems
