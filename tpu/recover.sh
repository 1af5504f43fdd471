#!/usr/bin/env bash
# Run a training job to its end on a TPU VM that may be preempted: launch it, watch it, and
# whenever the VM is preempted or deleted (or its queued resource suspended or failed), wait for
# capacity, recreate the VM with create.sh's settings, set it up and relaunch into the same
# WORKDIR (the trainer resumes from its last checkpoint). A trainer that exits 75 (stopped
# before its end after saving: preemption notice, maintenance, SIGTERM) is relaunched too.
# Stops when the trainer exits 0 (finished) or with another code (a real failure, reported).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: NAME=my-tpu ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 [SPOT=1] [QUEUED=1] \
         [RUNTIME_VERSION=...] [PROJECT=...] [CREATE_FLAGS="..."] [RUN=name] \
         tpu/recover.sh CONFIG_WITH_ARGS gs://BUCKET/WORKDIR [extra trainer flags...]

Launches the run (or attaches to it when it is already running on every worker), then every
POLL_SECONDS checks the VM and the trainer on every worker:
  trainer exited 0 on every worker     -> done: collect the logs, exit 0
  trainer exited 75 (or was lost)      -> relaunch it (same VM), it resumes
  VM PREEMPTED / missing / FAILED,     -> delete it, recreate it (retrying until there is
  queued resource SUSPENDED / FAILED      capacity, at most MAX_WAIT s), tpu/setup.sh, relaunch
  trainer exited with another code     -> stop the other workers, collect the logs, exit with it
  stopped with tpu/launch.sh --stop    -> exit 75 (rerun this line to resume)
Ctrl-C stops watching only; the run goes on (rerun this line to attach again).

  NAME, ZONE, ACCELERATOR_TYPE, SPOT, QUEUED, RUNTIME_VERSION, PROJECT: as for tpu/create.sh,
                    used to recreate the VM (and by all other steps)
  CREATE_FLAGS      extra flags for tpu/create.sh (gcloud create), split on whitespace
  POLL_SECONDS      seconds between checks and between capacity retries (default 60)
  MAX_WAIT          seconds to wait for a READY VM after a preemption, capacity retries included
                    (default 86400; 0 = no limit)
  MAX_RESTARTS      relaunches + recreations before giving up (default 100)
  MAX_SSH_FAILURES  consecutive checks that cannot reach the workers of a READY VM before giving
                    up (default 10)
  STRAGGLER_SECONDS when some workers' trainers have ended cleanly (0/75) and others still run
                    after this long, stop the rest and relaunch (default 900)
  COLLECT_LOGS=0    do not copy the workers' logs to LOG_DIR at the end
  DELETE_WHEN_DONE=1  delete the VM (tpu/delete.sh --quiet) once the run has finished (exit 0),
                    so that it stops billing
  LOG_DIR           where the logs go (default workdirs/tpu_logs/<run>)
  STOP_TIMEOUT, LOG_SYNC_SECONDS, TFDS_DATA_DIR, XLA_FLAGS, LIBTPU_INIT_ARGS, GCLOUD_SSH_FLAGS,
  PYTHON, CONSTRAINTS: passed on to tpu/launch.sh and tpu/setup.sh

Exit code: 0 the run finished; the trainer's code when it failed; 75 stopped with
tpu/launch.sh --stop; 1 this script gave up (no capacity within MAX_WAIT, MAX_RESTARTS reached,
workers unreachable).
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_cmd gcloud "Install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
need_var NAME ZONE ACCELERATOR_TYPE
gcloud_loc_flags
gcloud_ssh_flags
(($# >= 2)) || die "CONFIG_WITH_ARGS and WORKDIR are required"
config=$1
workdir=$2
shift 2
case "$workdir" in
  gs://*) ;;
  *) die "WORKDIR must be gs://... for recovery: a recreated VM starts with empty disks" ;;
esac
config_file=${config%%:*}
[[ -f "$BVS_ROOT/$config_file" ]] || die "config file '$config_file' not found under $BVS_ROOT"

need_seconds POLL_SECONDS 60
for v in MAX_WAIT MAX_RESTARTS MAX_SSH_FAILURES STRAGGLER_SECONDS; do
  case "${!v:-0}" in '' | *[!0-9]*) die "$v must be a whole number, got '${!v}'" ;; esac
done
case "${QUEUED:-0}" in 0 | 1) ;; *) die "QUEUED must be 0 or 1, got '${QUEUED}'" ;; esac
poll=${POLL_SECONDS:-60}
max_wait=${MAX_WAIT:-86400}
max_restarts=${MAX_RESTARTS:-100}
max_ssh_failures=${MAX_SSH_FAILURES:-10}
straggler_seconds=${STRAGGLER_SECONDS:-900}
queued=${QUEUED:-0}

run=$(run_name "$workdir")
[[ -n "$run" && "$run" != latest ]] || die "cannot derive a run name from '$workdir'; set RUN=name"
export RUN=$run
log_dir=${LOG_DIR:-workdirs/tpu_logs/$run}
create_flags=()
if [[ -n "${CREATE_FLAGS:-}" ]]; then read -r -a create_flags <<<"$CREATE_FLAGS"; fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bvs_recover.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'echo "[recover] stopped watching; the run goes on (rerun this line to attach)" >&2; exit 130' INT

say() { echo "[recover $(date '+%H:%M:%S')] $*" >&2; }
give_up() {
  say "giving up: $*"
  exit 1
}

# describe KIND FIELD : prints the field (tpu-vm state, or queued resource state.state),
# NOT_FOUND when gcloud says there is no such resource, UNKNOWN:<first error line> otherwise.
describe() {
  local out
  if out=$(gcloud compute tpus "$1" describe "$NAME" "${GCLOUD_LOC[@]}" \
    --format="value($2)" 2>"$tmp/err"); then
    echo "${out:-UNKNOWN:empty}"
  elif grep -qiE 'NOT_FOUND|not found|was not found|404' "$tmp/err"; then
    echo NOT_FOUND
  else
    echo "UNKNOWN:$(grep -m1 . "$tmp/err" || echo "gcloud failed")"
  fi
}

# pod_state : READY | WAIT:<state> | RECREATE:<state> | FATAL:<state> | UNKNOWN:<why>
pod_state() {
  local qr vm
  if [[ "$queued" == 1 ]]; then
    qr=$(describe queued-resources state.state)
    case "$qr" in
      ACTIVE) ;;
      NOT_FOUND) echo RECREATE:NOT_FOUND; return ;;
      SUSPENDING | SUSPENDED | FAILED) echo "RECREATE:queued resource $qr"; return ;;
      UNKNOWN:*) echo "$qr"; return ;;
      *) echo "WAIT:queued resource $qr"; return ;; # ACCEPTED, PROVISIONING, WAITING_FOR_RESOURCES, CREATING, DELETING
    esac
  fi
  vm=$(describe tpu-vm state)
  case "$vm" in
    READY) echo READY ;;
    NOT_FOUND)
      if [[ "$queued" == 1 ]]; then echo "RECREATE:queued resource ACTIVE without its VM"; else echo RECREATE:NOT_FOUND; fi ;;
    PREEMPTED | TERMINATED | FAILED) echo "RECREATE:$vm" ;;
    STOPPED | STOPPING | HIDDEN | HIDING) echo "FATAL:$vm" ;;
    UNKNOWN:*) echo "$vm" ;;
    *) echo "WAIT:$vm" ;; # CREATING, STARTING, RESTARTING, REPAIRING, REIMAGING, DELETING, ...
  esac
}

restarts=0
count_restart() {
  restarts=$((restarts + 1))
  if ((max_restarts && restarts > max_restarts)); then
    give_up "MAX_RESTARTS=${max_restarts} relaunches/recreations reached"
  fi
}

# ensure_ready : returns once the VM is READY, recreating it when needed; sets recreated=1
# when it created one.
recreated=0
ensure_ready() {
  local start=$SECONDS state unknown=0 last=
  while :; do
    state=$(pod_state)
    case "$state" in
      READY)
        n_workers=$(tpu_worker_count) || {
          say "cannot read the worker count of ${NAME}"
          state=UNKNOWN:workers
          unknown=$((unknown + 1))
          ((unknown < 10)) || give_up "gcloud describe failed 10 times in a row"
          sleep "$poll"
          continue
        }
        return 0
        ;;
      RECREATE:NOT_FOUND)
        say "${NAME} does not exist: creating it (${ACCELERATOR_TYPE}${SPOT:+, SPOT=$SPOT}${QUEUED:+, QUEUED=$QUEUED})"
        if WAIT=0 "$BVS_TPU_DIR/create.sh" ${create_flags[@]+"${create_flags[@]}"}; then
          recreated=1
          continue
        fi
        say "create failed (no capacity?); retrying in ${poll}s"
        ;;
      RECREATE:*)
        say "${NAME} is ${state#RECREATE:}: deleting it to recreate it"
        count_restart
        if "$BVS_TPU_DIR/delete.sh" --quiet; then continue; fi
        say "delete failed; retrying in ${poll}s"
        ;;
      FATAL:*)
        give_up "${NAME} is ${state#FATAL:}; start or delete it yourself, then rerun this line"
        ;;
      UNKNOWN:*)
        unknown=$((unknown + 1))
        say "cannot read the state of ${NAME} (${state#UNKNOWN:})"
        ((unknown < 10)) || give_up "gcloud describe failed 10 times in a row"
        ;;
      WAIT:*)
        if [[ "$state" != "$last" ]]; then say "waiting: ${NAME} is ${state#WAIT:}"; fi
        ;;
    esac
    last=$state
    if ((max_wait && SECONDS - start >= max_wait)); then
      give_up "no READY ${NAME} after MAX_WAIT=${max_wait}s (last state: ${state})"
    fi
    sleep "$poll"
  done
}

probe_script() {
  common_header
  printf 'run=%q\nrel_dest=%q\nrel_venv=%q\n' "$run" "$BVS_REMOTE_DIR" "$BVS_REMOTE_VENV"
  printf '%s\n' "$BVS_PROBE_BODY"
}

# probe : one BVS_PROBE line per worker into $tmp/probe; sets n_seen and the counts
# (n_workers comes from ensure_ready).
n_workers=0
probe() {
  run_remote all "$(probe_script)" >"$tmp/probe.out" 2>"$tmp/probe.err" || true
  grep '^BVS_PROBE ' "$tmp/probe.out" >"$tmp/probe" || true
  n_seen=0 n_inst=0 n_running=0 n_ok=0 n_pre=0 n_lost=0 n_stopped=0 bad_code='' bad_host=''
  local host inst state code stopped
  while read -r _ host inst state code stopped; do
    n_seen=$((n_seen + 1))
    if [[ "$inst" == 1 ]]; then n_inst=$((n_inst + 1)); fi
    if [[ "$stopped" == 1 ]]; then n_stopped=$((n_stopped + 1)); fi
    case "$state:$code" in
      running:*) n_running=$((n_running + 1)) ;;
      exited:0) n_ok=$((n_ok + 1)) ;;
      "exited:$BVS_EXIT_PREEMPTED") n_pre=$((n_pre + 1)) ;;
      exited:-) n_lost=$((n_lost + 1)) ;;
      exited:*)
        if [[ -z "$bad_code" ]]; then bad_code=$code bad_host=$host; fi
        ;;
      *) n_lost=$((n_lost + 1)) ;; # lost, none, exited without a code
    esac
  done <"$tmp/probe"
}

probe_complete() { ((n_workers > 0 && n_seen == n_workers)); }

stop_run() {
  run_remote all "$(common_header)"$'\n'"$BVS_STOP_FN"$'\n'"$(printf 'stop_trainers %q\n' "$run")" >&2 || true
}

collect_logs() {
  if [[ "${COLLECT_LOGS:-1}" != 0 ]]; then
    "$BVS_TPU_DIR/launch.sh" --collect-logs "$run" "$log_dir" ||
      say "could not collect every worker's log"
  fi
}

# watch : until the trainer ends everywhere or the VM goes; sets outcome to
# done | relaunch | recreate | setup | failed | stopped.
watch() {
  local fails=0 straggle_start=
  while :; do
    sleep "$poll"
    if [[ "$(pod_state)" != READY ]]; then
      say "${NAME} is no longer READY"
      outcome=recreate
      return
    fi
    probe
    if ! probe_complete; then
      fails=$((fails + 1))
      say "reached ${n_seen} of ${n_workers} worker(s) ($fails/${max_ssh_failures}): $(grep -m1 . "$tmp/probe.err" 2>/dev/null || true)"
      ((fails < max_ssh_failures)) || give_up "cannot reach the workers of ${NAME}; the run may go on: rerun this line to attach"
      continue
    fi
    fails=0
    if ((n_inst < n_workers)); then
      say "$((n_workers - n_inst)) worker(s) have no install (rebuilt?)"
      outcome=setup
      return
    fi
    if [[ -n "$bad_code" ]]; then
      outcome=failed
      return
    fi
    if ((n_running == 0)); then
      if ((n_stopped)); then
        outcome=stopped
      elif ((n_ok == n_workers)); then
        outcome='done'
      else
        outcome=relaunch
      fi
      return
    fi
    if ((n_running < n_workers)); then
      if [[ -z "$straggle_start" ]]; then
        straggle_start=$SECONDS
        say "$((n_workers - n_running)) of ${n_workers} worker(s) ended; waiting for the others"
      elif ((SECONDS - straggle_start >= straggler_seconds)); then
        say "workers still running ${straggler_seconds}s after the others ended: stopping them"
        stop_run
        straggle_start=
      fi
    else
      straggle_start=
    fi
  done
}

say "run '${run}': ${config} -> ${workdir} on ${NAME} (${ZONE})"
need_setup=0
attach=0
no_code=0
setup_failures=0
ensure_ready
if ((recreated)); then
  need_setup=1
else
  probe
  if probe_complete && ((n_inst < n_workers)); then need_setup=1; fi
  if probe_complete && ((n_running == n_workers)); then
    say "the trainer is running on all ${n_workers} worker(s): watching it"
    attach=1
  fi
fi

while :; do
  if ((!attach)); then
    if ((need_setup)); then
      say "setting up ${NAME}"
      if ! "$BVS_TPU_DIR/setup.sh"; then
        setup_failures=$((setup_failures + 1))
        ((setup_failures < 3)) || give_up "tpu/setup.sh failed 3 times in a row"
        say "setup failed; checking ${NAME} again"
        count_restart
        recreated=0
        ensure_ready
        continue
      fi
      need_setup=0
      setup_failures=0
    fi
    say "launching (restart ${restarts})"
    "$BVS_TPU_DIR/launch.sh" "$config" "$workdir" "$@" ||
      say "launch reported a problem; checking the workers"
  fi
  attach=0
  watch
  case "$outcome" in
    done)
      say "finished: the trainer exited 0 on all ${n_workers} worker(s)"
      collect_logs
      if [[ "${DELETE_WHEN_DONE:-0}" == 1 ]]; then
        say "DELETE_WHEN_DONE=1: deleting ${NAME}"
        "$BVS_TPU_DIR/delete.sh" --quiet || say "could not delete ${NAME}; delete it yourself (it bills until then)"
      fi
      exit 0
      ;;
    failed)
      say "the trainer failed on ${bad_host} with exit code ${bad_code}; stopping the other workers"
      stop_run
      collect_logs
      say "logs: ${log_dir}/worker-*.log (or NAME=${NAME} ZONE=${ZONE} tpu/launch.sh --status)"
      exit "$bad_code"
      ;;
    stopped)
      say "the run was stopped with tpu/launch.sh --stop; rerun this line to resume"
      exit "$BVS_EXIT_PREEMPTED"
      ;;
    relaunch)
      say "the trainer stopped before its end (exit ${BVS_EXIT_PREEMPTED} on ${n_pre}, 0 on ${n_ok}, no exit code on ${n_lost} of ${n_workers} worker(s)): relaunching"
      # No exit code anywhere, again and again: it does not start (or is killed at once).
      if ((n_pre + n_ok == 0)); then no_code=$((no_code + 1)); else no_code=0; fi
      ((no_code < 3)) || give_up "3 launches in a row ended without an exit code; see tpu/launch.sh --status"
      count_restart
      ;;
    setup)
      need_setup=1
      count_restart
      ;;
    recreate) ;; # ensure_ready below
  esac
  # Before every relaunch: the VM must be READY (recreated, and then set up, if it went).
  recreated=0
  ensure_ready
  if ((recreated)); then need_setup=1; fi
done
