#!/usr/bin/env bash
# Start (or restart) the trainer on every worker of a TPU VM, detached under nohup, logging to
# ~/bvs_logs/<run>.log on each worker; when the trainer ends, its exit code goes to
# ~/bvs_logs/<run>.exit (0 finished, 75 stopped/preempted after a checkpoint: rerun to resume,
# else failed). Rerunning the same command resumes: a trainer this script started earlier is
# stopped first (SIGTERM, so it saves a checkpoint), and the new one restores from the latest
# checkpoint in WORKDIR.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: NAME=my-tpu ZONE=us-central2-b [PROJECT=...] [RUN=name] [TFDS_DATA_DIR=gs://...] \
         tpu/launch.sh CONFIG_WITH_ARGS WORKDIR [extra trainer flags...]
       tpu/launch.sh --logs [RUN]    follow a run's log (default: the latest) on worker 0, or WORKER=n
       tpu/launch.sh --status        state, exit code and last log lines of each run, every worker
       tpu/launch.sh --stop          stop the trainer on every worker (SIGTERM: it saves first)
       tpu/launch.sh --collect-logs [RUN] [DEST]
                                     copy RUN's log (default: the latest run) from every worker
                                     to DEST/worker-<i>.log (default DEST: workdirs/tpu_logs/RUN)
       tpu/launch.sh --recover CONFIG_WITH_ARGS WORKDIR [...]
                                     the same as tpu/recover.sh (launch, watch, and recreate +
                                     relaunch after preemptions until the run finishes)

  CONFIG_WITH_ARGS  experiments/<file>.py[:<args>], relative to the repo root
  WORKDIR           checkpoints + metrics; use gs://bucket/path (shared by all hosts, survives
                    the VM). The same WORKDIR resumes.
  RUN               log/pid/exit file name on the workers (default: the WORKDIR's last component)
  TFDS_DATA_DIR, XLA_FLAGS, LIBTPU_INIT_ARGS are passed on to the trainer when set here.
  STOP_TIMEOUT      seconds to wait for a stopping trainer to save and exit (default 600)
  LOG_SYNC_SECONDS  with a gs:// WORKDIR, each worker also copies its log to
                    WORKDIR/logs/<hostname>.log every so many seconds and when the trainer
                    ends (default 300; 0 = never). Survives the VM (spot preemption).
  START_CHECK_SECONDS  how long after starting to check that the trainer is still up (default 2)
  GCLOUD_SSH_FLAGS  extra flags for every gcloud tpu-vm ssh/scp, e.g. "--internal-ip" or
                    "--tunnel-through-iap" (see tpu/README.md)

Exit codes recorded in ~/bvs_logs/<run>.exit: 0 finished; 75 stopped before the end (SIGTERM,
--stop, preemption notice) after saving: rerun the same line to resume; other: failed.

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
  --collect-logs) mode=collect; shift ;;
  --recover) shift; exec "$(dirname "${BASH_SOURCE[0]}")/recover.sh" "$@" ;;
  -*) usage >&2; echo "error: unknown option '$1'" >&2; exit 1 ;;
esac

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

case "${STOP_TIMEOUT:-600}" in
  '' | *[!0-9]*) die "STOP_TIMEOUT must be a number of seconds, got '${STOP_TIMEOUT}'" ;;
esac
case "${LOG_SYNC_SECONDS:-300}" in
  '' | *[!0-9]*) die "LOG_SYNC_SECONDS must be a whole number of seconds, got '${LOG_SYNC_SECONDS}'" ;;
esac
need_seconds START_CHECK_SECONDS 2

# resolve_run [RUN] : RUN sanitized, or the run latest.log points at on worker 0.
resolve_run() {
  local run target
  if [[ -n "${1:-}" && "$1" != latest ]]; then
    sanitize "$1"
    return
  fi
  target=$(tpu_ssh 0 --command="readlink \"\$HOME\"/$(printf %q "$BVS_REMOTE_LOGS/latest.log") || true" 2>/dev/null | tail -n 1) || true
  run=${target%.log}
  [[ -n "$run" && "$run" != "$target" ]] ||
    { echo "error: no latest run on worker 0 of ${NAME} (~/${BVS_REMOTE_LOGS}/latest.log); name the run" >&2; exit 1; }
  echo "$run"
}

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
for logfile in "$logs"/*.log; do
  [ -e "$logfile" ] || continue
  run=$(basename "$logfile" .log)
  [ "$run" != latest ] || continue
  found=1
  pid=
  if [ -f "$logs/$run.pid" ]; then pid=$(cat "$logs/$run.pid"); fi
  # (launch removes <run>.exit before it starts the trainer, so one there is this trainer's;
  # looked at again after the pid, as the trainer may end in between)
  alive=0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then alive=1; fi
  if [ -f "$logs/$run.exit" ]; then
    code=$(cat "$logs/$run.exit")
    case "$code" in
      0) state="exited 0 (finished)" ;;
      75) state="exited 75 (stopped before the end after saving; rerun the launch line to resume)" ;;
      *) state="exited $code (failed; see the log)" ;;
    esac
  elif [ "$alive" = 1 ]; then
    state="running (pid $pid)"
  else
    state="not running, no exit code recorded (killed hard?)"
  fi
  echo "[$host] $run: $state"
  tail -n 3 "$logfile" 2>/dev/null | sed "s/^/[$host]   /"
done
if [ "$found" = 0 ]; then echo "[$host] no runs started by tpu/launch.sh"; fi
EOF
    run_remote all "$(common_header)"$'\n'"$body"
    exit 0
    ;;
  stop)
    (($# == 0)) || die "--stop takes no arguments"
    init_tpu_env
    # Mark each run as stopped on purpose, so tpu/recover.sh does not relaunch it.
    # shellcheck disable=SC2016  # for the remote shell.
    mark='for pidfile in "$logs"/*.pid; do if [ -e "$pidfile" ]; then : >"${pidfile%.pid}.stopped"; fi; done'
    # shellcheck disable=SC2016
    run_remote all "$(common_header)"$'\n'"$BVS_STOP_FN"$'\n'"$mark"$'\n''stop_trainers; echo "[$host] stopped"'
    exit 0
    ;;
  collect)
    (($# <= 2)) || die "--collect-logs takes at most two arguments (RUN, DEST)"
    init_tpu_env
    run=$(resolve_run "${1:-}")
    dest=${2:-workdirs/tpu_logs/$run}
    workers=$(tpu_worker_count) || { echo "error: cannot get the worker count of ${NAME} (is it READY?)" >&2; exit 1; }
    mkdir -p "$dest"
    note "copying ~/${BVS_REMOTE_LOGS}/${run}.log from ${workers} worker(s) of ${NAME} to ${dest}/"
    # One scp per worker (a --worker=all scp would write every worker's copy to one file), a
    # few at a time in parallel (COLLECT_PARALLEL, default 8).
    batch=${COLLECT_PARALLEL:-8}
    case "$batch" in '' | *[!0-9]* | 0) die "COLLECT_PARALLEL must be a positive number" ;; esac
    failed=()
    i=0
    while ((i < workers)); do
      pids=()
      idx=()
      j=$i
      while ((j < workers && j < i + batch)); do
        tpu_scp "$j" "${NAME}:${BVS_REMOTE_LOGS}/${run}.log" "${dest}/worker-${j}.log" &
        pids+=($!)
        idx+=("$j")
        j=$((j + 1))
      done
      k=0
      while ((k < ${#pids[@]})); do
        wait "${pids[$k]}" || failed+=("${idx[$k]}")
        k=$((k + 1))
      done
      i=$j
    done
    if ((${#failed[@]})); then
      echo "error: could not copy the log from worker(s) ${failed[*]}" >&2
      exit 1
    fi
    note "done: ${dest}/worker-0.log ... worker-$((workers - 1)).log"
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

run=$(run_name "$workdir")
[[ -n "$run" && "$run" != latest ]] || die "cannot derive a run name from '$workdir'; set RUN=name"

# Values for the remote side, each quoted with %q.
header=$(common_header)
header+=$(printf '\nrun=%q\nrel_dest=%q\nrel_venv=%q\nconfig=%q\nworkdir=%q\nlog_sync=%q\nstart_check=%q\nextra=(' \
  "$run" "$BVS_REMOTE_DIR" "$BVS_REMOTE_VENV" "$config" "$workdir" "${LOG_SYNC_SECONDS:-300}" \
  "${START_CHECK_SECONDS:-2}")
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
rm -f "$logs/$run.exit" "$logs/$run.stopped"
# With a gs:// workdir, copy the log there now and then, and at the end (needs gcloud here).
sync_to=
gc=
case "$workdir" in
  gs://*)
    if [ "$log_sync" != 0 ]; then
      gc=$(command -v gcloud 2>/dev/null || true)
      for c in /usr/bin/gcloud /snap/bin/gcloud /usr/lib/google-cloud-sdk/bin/gcloud; do
        if [ -z "$gc" ] && [ -x "$c" ]; then gc=$c; fi
      done
      if [ -n "$gc" ]; then
        sync_to=${workdir%/}/logs/$host.log
      else
        echo "[$host] no gcloud on this worker: the log stays in $log only"
      fi
    fi
    ;;
esac
# The wrapper runs the trainer as its child, forwards SIGTERM/SIGINT to it (as SIGTERM: a
# background job's SIGINT is ignored) and records its exit code in <run>.exit.
IFS= read -r -d '' wrapper <<'WRAP' || true
base=$1 sync_to=$2 sync_every=$3 gc=$4
shift 4
sync_log() {
  if [ -n "$sync_to" ]; then
    "$gc" storage cp "$base.log" "$sync_to" >/dev/null 2>&1 ||
      echo "[bvs] could not copy the log to $sync_to"
  fi
}
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
syncer=
if [ -n "$sync_to" ] && [ "$sync_every" -gt 0 ]; then
  (
    s=
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    while :; do
      sleep "$sync_every" &
      s=$!
      wait "$s"
      sync_log
    done
  ) &
  syncer=$!
fi
while :; do
  wait "$child"
  rc=$?
  # A trapped signal interrupts wait with 128+n while the trainer goes on: wait again.
  if [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null; then continue; fi
  if [ "$rc" -gt 128 ]; then
    wait "$child" 2>/dev/null
    r2=$?
    [ "$r2" = 127 ] || rc=$r2
  fi
  break
done
if [ -n "$syncer" ]; then kill "$syncer" 2>/dev/null || true; fi
echo "===== $(date -u '+%F %T UTC') $(hostname): trainer exited with code $rc"
printf '%s\n' "$rc" >"$base.exit.tmp" && mv -f "$base.exit.tmp" "$base.exit"
sync_log
exit "$rc"
WRAP
cd "$dest"
{
  echo "===== $(date -u '+%F %T UTC') $host: python -m big_vision_style.train --config $config --workdir $workdir ${extra[*]+${extra[*]}}"
} >>"$log"
# setsid: own session and process group, so the trainer outlives this ssh session and
# --stop/relaunch can end it together with its data-loader children.
setsid nohup bash -c "$wrapper" bvs-trainer "$logs/$run" "$sync_to" "$log_sync" "$gc" \
  "$python" -m big_vision_style.train --config "$config" --workdir "$workdir" \
  ${extra[@]+"${extra[@]}"} >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$logs/$run.pid"
ln -sfn "$run.log" "$logs/latest.log"
sleep "$start_check"
if kill -0 "$pid" 2>/dev/null; then
  echo "[$host] started pid $pid, log $log"
elif [ "$(cat "$logs/$run.exit" 2>/dev/null || true)" = 0 ]; then
  echo "[$host] trainer exited 0 right away: the run had already finished"
else
  echo "[$host] trainer exited immediately (code $(cat "$logs/$run.exit" 2>/dev/null || echo '?')); end of $log:" >&2
  tail -n 30 "$log" >&2
  echo "[$host] (other workers may now wait for this one; end them with tpu/launch.sh --stop)" >&2
  exit 1
fi
EOF

note "launching run '$run' on all workers of ${NAME}: $config -> $workdir"
run_remote all "$header"$'\n'"$BVS_STOP_FN"$'\n'"$body"
note "started. Follow it with: NAME=${NAME} ZONE=${ZONE} tpu/launch.sh --logs"
note "to resume after a preemption or a stop, rerun this same command (same WORKDIR),"
note "or let tpu/recover.sh do it: it watches the run and recreates a preempted VM."
