#!/bin/sh
# Creates Graylog's global GELF TCP input on port 12201 (fluent-bit's output) once.
# Graylog keeps inputs in MongoDB, so they cannot be declared in a config file; this
# Job makes the input part of what Flux applies. Idempotent: an input with the same
# title is left alone.
set -eu
api="http://graylog.graylog.svc.cluster.local:9000/api"
title="kubernetes-gelf-tcp"
deadline=$(( $(date +%s) + 1500 ))
until curl -fsS -o /dev/null "$api/system/lbstatus"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "graylog did not become ready" >&2; exit 1; fi
  sleep 10
done
if curl -fsS -u "admin:${GRAYLOG_ROOT_PASSWORD}" -H 'Accept: application/json' \
    "$api/system/inputs" | grep -q "\"title\":\"$title\""; then
  echo "input $title exists"
  exit 0
fi
curl -fsS -u "admin:${GRAYLOG_ROOT_PASSWORD}" -X POST "$api/system/inputs" \
  -H 'Content-Type: application/json' -H 'X-Requested-By: graylog-gelf-input-job' \
  -d "{\"title\":\"$title\",\"type\":\"org.graylog2.inputs.gelf.tcp.GELFTCPInput\",\"global\":true,
       \"configuration\":{\"bind_address\":\"0.0.0.0\",\"port\":12201,\"use_null_delimiter\":true,
       \"recv_buffer_size\":1048576,\"max_message_size\":2097152,\"number_worker_threads\":2}}"
echo "input $title created"
