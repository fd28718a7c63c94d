# scripts/services/common.sh — shared by scripts/services/start and scripts/services/stop.
# Sourced, not run: names the ports, directories and pid files, and small helpers.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file

services_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Where the throwaway PostgreSQL cluster and Kafka log dir live (must be reachable by the
# `postgres` OS user when running as root, so not under /root).
work=${REPORTING_SERVICES_DIR:-/tmp/reporting-services}
[[ $work == /* ]] || work="$PWD/$work"

# Ports (docs/interfaces.md fixes these; override only if you really need to).
pg_port=${REPORTING_PG_PORT:-54329}
kafka_port=${REPORTING_KAFKA_PORT:-19092}
kafka_controller_port=${REPORTING_KAFKA_CONTROLLER_PORT:-19093}

# PostgreSQL 15 from Debian's postgresql-15 package.
pg_bin=${REPORTING_PG_BIN:-/usr/lib/postgresql/15/bin}
pg_dir="$work/pg"
pg_data="$pg_dir/data"
pg_log="$pg_dir/postgres.log"
pg_socket_dir="$pg_dir/socket"

kafka_dir="$work/kafka"
kafka_data="$kafka_dir/data"
kafka_log="$kafka_dir/server.log"
kafka_pid_file="$kafka_dir/kafka.pid"
kafka_props="$kafka_dir/server.properties"

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Print the last lines of a log file to stderr, framed, to explain a failure.
show_log_tail() {
  local file=$1 lines=${2:-40}
  if [[ -f $file ]]; then
    log "---- last $lines lines of $file ----"
    tail -n "$lines" "$file" >&2 || true
    log "---- end of $file ----"
  else
    log "($file does not exist)"
  fi
}

# True if a process with this pid exists, is not a zombie, and its command line contains
# the given text (guards against a stale pid file whose pid now belongs to someone else).
pid_is() {
  local pid=$1 needle=$2 state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

# True if something accepts TCP connections on 127.0.0.1:port.
port_open() {
  # shellcheck disable=SC2016  # $1 expands in the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# The postmaster's pid from its own pid file, if it is our postmaster and alive.
pg_running_pid() {
  local pid
  [[ -f $pg_data/postmaster.pid ]] || return 1
  pid=$(head -n 1 "$pg_data/postmaster.pid" 2>/dev/null) || return 1
  pid_is "$pid" "$pg_data" || return 1
  printf '%s\n' "$pid"
}

# The broker's pid from our pid file, if it is our broker and alive.
kafka_running_pid() {
  local pid
  [[ -f $kafka_pid_file ]] || return 1
  pid=$(cat "$kafka_pid_file" 2>/dev/null) || return 1
  pid_is "$pid" "$kafka_props" || return 1
  printf '%s\n' "$pid"
}

# Run a command as the `postgres` OS user when we are root (PostgreSQL refuses to run as
# root); as anyone else, run it as ourselves.
as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Serialise start/stop runs on this work dir (fd 9 stays open until the script exits).
take_lock() {
  mkdir -p "$work"
  exec 9>"$work/.lock"
  if ! flock -w 600 9; then
    die "another scripts/services/start or stop holds $work/.lock for over 10 minutes"
  fi
}

# Which services the command line names (default: both): sets want_postgres / want_kafka.
want_postgres=false
want_kafka=false
parse_services() {
  local s
  [[ $# -gt 0 ]] || set -- postgres kafka
  for s in "$@"; do
    case $s in
      postgres) want_postgres=true ;;
      kafka) want_kafka=true ;;
      *) die "unknown service '$s' (known: postgres, kafka)" ;;
    esac
  done
}
