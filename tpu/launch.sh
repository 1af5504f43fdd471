#!/usr/bin/env bash
# Start (or restart) the trainer on every worker of a TPU VM, detached under nohup, logging to
# ~/bvs_logs/<run>.log on each worker. Rerunning the same command resumes: a trainer this script
# started earlier is stopped first (SIGTERM, so it saves a checkpoint), and the new one restores
# from the latest checkpoint in WORKDIR.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: NAME=my-tpu ZONE=us-central2-b [PROJECT=...] [RUN=name] [TFDS_DATA_DIR=gs://...] \
         tpu/launch.sh CONFIG_WITH_ARGS WORKDIR [extra trainer flags...]
       tpu/launch.sh --logs [RUN]    follow a run's log (default: the latest) on worker 0, or WORKER=n
       tpu/launch.sh --status        pid and last log lines on every worker
       tpu/launch.sh --stop          stop the trainer on every worker (SIGTERM: it saves first)

  CONFIG_WITH_ARGS  experiments/<file>.py[:<args>], relative to the repo root
  WORKDIR           checkpoints + metrics; use gs://bucket/path (shared by all hosts, survives
                    the VM). The same WORKDIR resumes.
  RUN               log/pid name on the workers (default: the WORKDIR's last component)
  TFDS_DATA_DIR, XLA_FLAGS, LIBTPU_INIT_ARGS are passed on to the trainer when set here.
  STOP_TIMEOUT      seconds to wait for a stopping trainer to save and exit (default 600)

Example (rerun the same line to resume):
  TFDS_DATA_DIR=gs://my-bucket/tensorflow_datasets \
    tpu/launch.sh experiments/<file>.py:<args> gs://my-bucket/bvs/run1 --config.seed=1
EOF
}

mode=launch
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --logs) mode=logs; shift ;;
  --status) mode=status; shift ;;
  --stop) mode=stop; shift ;;
  -*) usage >&2; echo "error: unknown option '$1'" >&2; exit 1 ;;
esac

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

sanitize() { printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_'; }

# Remote bash that stops trainers started by this script on this worker. Only pids recorded in
# ~/bvs_logs/*.pid whose command line is the trainer are touched. Needs $logs set.
IFS= read -r -d '' stop_fn <<'EOF' || true
stop_trainers() {
  local pidfile pid i
  for pidfile in "$logs"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'big_vision_style.train'; then
      echo "[$host] stopping trainer pid $pid ($(basename "$pidfile" .pid)): SIGTERM, waiting up to ${stop_timeout}s for its checkpoint"
      kill -TERM "$pid" 2>/dev/null || true
      i=0
      while kill -0 "$pid" 2>/dev/null && [ "$i" -lt "$stop_timeout" ]; do
        sleep 1
        i=$((i + 1))
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "[$host] pid $pid still running after ${stop_timeout}s: SIGKILL"
      fi
      # The trainer leads its own process group (setsid); this also ends data-loader children.
      kill -KILL -- "-$pid" 2>/dev/null || true
      i=0
      while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 30 ]; do
        sleep 1
        i=$((i + 1))
      done
    fi
    rm -f "$pidfile"
  done
  # A trainer killed hard can leave libtpu's lock behind; drop it when nobody holds it.
  if [ -e /tmp/libtpu_lockfile ] && command -v fuser >/dev/null 2>&1 &&
    ! fuser -s /tmp/libtpu_lockfile 2>/dev/null; then
    rm -f /tmp/libtpu_lockfile 2>/dev/null || true
  fi
}
EOF

common_header() {
  # shellcheck disable=SC2016  # $(hostname) and $HOME are for the remote shell.
  printf 'set -euo pipefail\nhost=$(hostname)\nlogs=$HOME/%q\nstop_timeout=%q\n' \
    "$BVS_REMOTE_LOGS" "${STOP_TIMEOUT:-600}"
}

case "${STOP_TIMEOUT:-600}" in
  '' | *[!0-9]*) die "STOP_TIMEOUT must be a number of seconds, got '${STOP_TIMEOUT}'" ;;
esac

case "$mode" in
  logs)
    (($# <= 1)) || die "--logs takes at most one argument (the run name)"
    init_tpu_env
    run=latest
    if (($#)); then run=$(sanitize "$1"); fi
    worker=${WORKER:-0}
    note "following ~/${BVS_REMOTE_LOGS}/${run}.log on worker ${worker} (Ctrl-C to stop watching; the run continues)"
    tpu_ssh "$worker" --ssh-flag=-t \
      --command="tail -n ${TAIL_LINES:-200} -F \"\$HOME\"/$(printf %q "$BVS_REMOTE_LOGS/$run.log")"
    exit 0
    ;;
  status)
    (($# == 0)) || die "--status takes no arguments"
    init_tpu_env
    IFS= read -r -d '' body <<'EOF' || true
found=0
for pidfile in "$logs"/*.pid; do
  [ -e "$pidfile" ] || continue
  found=1
  run=$(basename "$pidfile" .pid)
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then state=running; else state=exited; fi
  echo "[$host] $run: pid $pid $state"
  tail -n 3 "$logs/$run.log" 2>/dev/null | sed "s/^/[$host]   /"
done
if [ "$found" = 0 ]; then echo "[$host] no runs started by tpu/launch.sh"; fi
EOF
    run_remote all "$(common_header)"$'\n'"$body"
    exit 0
    ;;
  stop)
    (($# == 0)) || die "--stop takes no arguments"
    init_tpu_env
    # shellcheck disable=SC2016  # $host is for the remote shell.
    run_remote all "$(common_header)"$'\n'"$stop_fn"$'\n''stop_trainers; echo "[$host] stopped"'
    exit 0
    ;;
esac

# --- launch ---------------------------------------------------------------------------------
(($# >= 2)) || die "CONFIG_WITH_ARGS and WORKDIR are required"
config=$1
workdir=$2
shift 2
init_tpu_env

config_file=${config%%:*}
[[ -f "$BVS_ROOT/$config_file" ]] ||
  die "config file '$config_file' not found under $BVS_ROOT (paths are relative to the repo root; did you run tpu/setup.sh after adding it?)"
case "$workdir" in
  gs://*) ;;
  *) note "warning: WORKDIR '$workdir' is not gs://. Each worker then writes its own local copy, a" \
    "pod slice cannot share checkpoints, and everything is lost with the VM (spot preemption)." ;;
esac

run=$(sanitize "${RUN:-$(basename "${workdir%/}")}")
[[ -n "$run" && "$run" != latest ]] || die "cannot derive a run name from '$workdir'; set RUN=name"

# Values for the remote side, each quoted with %q.
header=$(common_header)
header+=$(printf '\nrun=%q\nrel_dest=%q\nrel_venv=%q\nconfig=%q\nworkdir=%q\nextra=(' \
  "$run" "$BVS_REMOTE_DIR" "$BVS_REMOTE_VENV" "$config" "$workdir")
for a in "$@"; do header+=$(printf ' %q' "$a"); done
header+=$')\n'
# Every worker of a TPU VM joins jax.distributed (harmless on a single host, required on a pod).
header+=$'export BVS_DISTRIBUTED=1\n'
for var in TFDS_DATA_DIR XLA_FLAGS LIBTPU_INIT_ARGS; do
  if [[ -n "${!var:-}" ]]; then
    header+=$(printf 'export %s=%q' "$var" "${!var}")$'\n'
    note "passing $var=${!var}"
  fi
done

IFS= read -r -d '' body <<'EOF' || true
dest=$HOME/$rel_dest
python=$HOME/$rel_venv/bin/python
if [ ! -x "$python" ] || [ ! -d "$dest" ]; then
  echo "[$host] $dest or $python missing: run tpu/setup.sh first" >&2
  exit 1
fi
mkdir -p "$logs"
stop_trainers
log=$logs/$run.log
cd "$dest"
{
  echo "===== $(date -u '+%F %T UTC') $host: python -m big_vision_style.train --config $config --workdir $workdir ${extra[*]+${extra[*]}}"
} >>"$log"
# setsid: own session and process group, so the trainer outlives this ssh session and
# --stop/relaunch can end it together with its data-loader children.
setsid nohup "$python" -m big_vision_style.train --config "$config" --workdir "$workdir" \
  ${extra[@]+"${extra[@]}"} >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$logs/$run.pid"
ln -sfn "$run.log" "$logs/latest.log"
sleep 2
if kill -0 "$pid" 2>/dev/null; then
  echo "[$host] started pid $pid, log $log"
else
  echo "[$host] trainer exited immediately; end of $log:" >&2
  tail -n 30 "$log" >&2
  echo "[$host] (other workers may now wait for this one; end them with tpu/launch.sh --stop)" >&2
  exit 1
fi
EOF

note "launching run '$run' on all workers of ${NAME}: $config -> $workdir"
run_remote all "$header"$'\n'"$stop_fn"$'\n'"$body"
note "started. Follow it with: NAME=${NAME} ZONE=${ZONE} tpu/launch.sh --logs"
note "to resume after a preemption or a stop, rerun this same command (same WORKDIR)."
