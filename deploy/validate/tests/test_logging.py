"""Central logging: the fluent-bit → GELF → Graylog path keeps Reporting's log fields,
the deployed configuration says so, and the binary's real lines have the right shape."""

import json

import pytest

from deploycheck import logging as logpath
from deploycheck import tree

CONF = "infrastructure/logging/base/fluent-bit/fluent-bit.conf"
SAMPLE = {"timestamp": 1767225600.25, "level": 6, "message": "readings accepted",
          "target": "reporting_ingest::http", "role": "ingest", "accepted": 2, "rejected": 1}


@pytest.fixture(scope="module")
def sections(root):
    return logpath.parse_fluent_bit((root / CONF).read_text())


def test_logging_stack_holds(root, applied):
    assert logpath.check(root, applied) == []


def test_reporting_line_reaches_graylog_with_its_level_time_host_and_fields(sections):
    message = logpath.simulate(sections, logpath.cri_line(json.dumps(SAMPLE)), logpath.SAMPLE_KUBERNETES)
    assert message is not None
    assert message["short_message"] == "readings accepted"
    assert message["level"] == 6
    assert message["timestamp"] == 1767225600.25
    assert message["host"] == logpath.SAMPLE_KUBERNETES["host"]
    assert message["_role"] == "ingest" and message["_target"] == "reporting_ingest::http"
    assert message["_accepted"] == 2 and message["_rejected"] == 1
    assert message["_k8s_namespace_name"] == "reporting" and message["_k8s_pod_name"].startswith("ingest-")
    assert "_log" not in message and "_message" not in message  # the raw line is not sent twice
    assert logpath.gelf_message_problems(message) == []


def test_plain_text_line_keeps_its_text(sections):
    message = logpath.simulate(sections, logpath.cri_line("starting opensearch"), logpath.SAMPLE_KUBERNETES)
    assert message["short_message"] == "starting opensearch"
    assert "level" not in message and message["host"]


def test_json_line_of_other_programs_with_msg_keeps_its_text(sections):
    flux = {"level": "info", "ts": "2026-12-03T10:00:00.000Z", "msg": "Reconciliation finished", "controller": "kustomization"}
    message = logpath.simulate(sections, logpath.cri_line(json.dumps(flux)), logpath.SAMPLE_KUBERNETES)
    assert message is not None, "a JSON line with `msg` instead of `message` was dropped"
    assert message["short_message"] == "Reconciliation finished"


def test_docker_json_file_lines_are_read_too(sections):
    line = json.dumps({"log": json.dumps(SAMPLE) + "\n", "stream": "stdout", "time": "2026-12-03T10:00:00Z"})
    message = logpath.simulate(sections, line, logpath.SAMPLE_KUBERNETES)
    assert message["short_message"] == "readings accepted" and message["level"] == 6


def test_default_tracing_json_would_lose_message_and_level(sections):
    """Why docs/interfaces.md fixes the log shape: tracing-subscriber's default JSON nests
    the message and uses string levels and RFC 3339 times."""
    default = {"timestamp": "2026-12-03T10:00:00.000Z", "level": "INFO",
               "fields": {"message": "readings accepted"}, "target": "reporting_ingest::http"}
    assert logpath.simulate(sections, logpath.cri_line(json.dumps(default)), logpath.SAMPLE_KUBERNETES) is None
    problems = logpath.record_problems(json.dumps(default))
    assert any("`message`" in p for p in problems)
    assert any("`level`" in p for p in problems)
    assert any("`timestamp`" in p for p in problems)
    assert any("nested" in p for p in problems)


def test_record_checker_accepts_the_documented_shape_and_rejects_lossy_ones():
    assert logpath.record_problems(json.dumps(SAMPLE)) == []
    assert logpath.record_problems(json.dumps({**SAMPLE, "level": "ERROR"}))
    assert logpath.record_problems(json.dumps({**SAMPLE, "id": 7}))
    assert logpath.record_problems(json.dumps({**SAMPLE, "span": {"name": "x"}}))
    assert logpath.record_problems(json.dumps({k: v for k, v in SAMPLE.items() if k != "message"}))
    assert logpath.record_problems("listening on 0.0.0.0:8080")


# --- broken copies -------------------------------------------------------------------------------

def config_problems(broken):
    return logpath.config_problems((broken.root / CONF).read_text())


def test_tail_without_the_cri_parser_fails(broken):
    broken.edit(CONF, "multiline.parser  docker, cri", "multiline.parser  docker")
    assert any("multiline.parser must include docker and cri" in p for p in config_problems(broken))


def test_keeping_the_raw_log_fails(broken):
    broken.edit(CONF, "keep_log             off", "keep_log             on")
    assert any("keep_log must be off" in p for p in config_problems(broken))


def test_not_merging_json_fails(broken):
    broken.edit(CONF, "merge_log            on", "merge_log            off")
    problems = config_problems(broken)
    assert any("merge_log must be on" in p for p in problems)


def test_not_lifting_the_host_fails(broken):
    broken.edit(CONF, "    operation     lift\n", "    operation     nest\n")
    problems = config_problems(broken)
    assert any("no nest filter lifting" in p for p in problems)
    assert any("no top-level host" in p for p in problems)


def test_wrong_gelf_level_key_fails(broken):
    broken.edit(CONF, "gelf_level_key           level", "gelf_level_key           severity")
    assert any("gelf_level_key must be level" in p for p in config_problems(broken))


def test_dropping_plain_text_lines_fails(broken):
    broken.edit(CONF, "    rename  log message\n", "")
    assert any("a plain-text line is dropped before Graylog" in p for p in config_problems(broken))


def test_not_renaming_msg_drops_other_programs_json_logs(broken):
    broken.edit(CONF, "    rename  msg message\n", "")
    assert any("a JSON line with `msg`" in p and "dropped" in p for p in config_problems(broken))


def test_collector_without_rbac_on_namespaces_fails(broken):
    broken.edit("infrastructure/logging/base/fluent-bit.yaml", '    resources: ["pods", "namespaces"]',
                '    resources: ["pods"]')
    problems = logpath.check(broken.root, tree.applied_everywhere(broken.root))
    assert any("cannot get/list/watch namespaces" in p for p in problems), problems


def test_log_store_without_volume_fails(broken):
    text = (broken.root / "infrastructure/logging/base/opensearch.yaml").read_text()
    broken.write("infrastructure/logging/base/opensearch.yaml", text[: text.index("  volumeClaimTemplates:")]
                 .replace("            - name: data\n              mountPath: /usr/share/opensearch/data\n", "")
                 .replace("          volumeMounts:\n", ""))
    problems = logpath.check(broken.root, tree.applied_everywhere(broken.root))
    assert any("StatefulSet graylog/opensearch: no volumeClaimTemplates" in p for p in problems), problems
