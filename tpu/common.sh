# shellcheck shell=bash
# Shared helpers for tpu/*.sh. Sourced, never run directly; each script defines usage() first.
#
# Kept to bash 3.2 features (the bash macOS ships), since these run on the user's laptop:
# no mapfile, no associative arrays, and "${arr[@]+"${arr[@]}"}" for possibly-empty arrays.

# shellcheck disable=SC2034  # the variables below are used by the scripts that source this.

# Paths on every TPU worker, relative to the login user's $HOME.
BVS_REMOTE_DIR=${BVS_REMOTE_DIR:-bvs}        # the copied working tree
BVS_REMOTE_VENV=${BVS_REMOTE_VENV:-bvs_venv} # python3 -m venv, editable install of '.[tpu]'
BVS_REMOTE_LOGS=${BVS_REMOTE_LOGS:-bvs_logs} # <run>.log, <run>.pid, latest.log

# Repository root: the parent of the directory holding this file.
BVS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
  echo "error: $*" >&2
  echo >&2
  usage >&2
  exit 1
}

note() { echo "[tpu] $*" >&2; }

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH. $2"
}

# need_var VAR... : every named variable must be set and non-empty.
need_var() {
  local v missing=()
  for v in "$@"; do
    [[ -n "${!v:-}" ]] || missing+=("$v")
  done
  if ((${#missing[@]})); then
    die "required environment variable(s) not set: ${missing[*]}"
  fi
}

# Flags common to every gcloud compute tpus call: --zone, plus --project when PROJECT is set
# (otherwise gcloud's configured core/project is used).
gcloud_loc_flags() {
  GCLOUD_LOC=(--zone="$ZONE")
  if [[ -n "${PROJECT:-}" ]]; then
    GCLOUD_LOC+=(--project="$PROJECT")
  fi
}

# Common preamble for scripts that talk to an existing TPU VM.
init_tpu_env() {
  need_cmd gcloud "Install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
  need_var NAME ZONE
  gcloud_loc_flags
}

# tpu_ssh WORKER [gcloud ssh flags...] : WORKER is a number or 'all' (parallel on every host).
tpu_ssh() {
  local worker=$1
  shift
  gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_LOC[@]}" --worker="$worker" "$@"
}

# run_remote WORKER SCRIPT : runs the bash script text SCRIPT on WORKER ('all' or a number).
# The script travels base64-encoded, so no quoting survives two shells by accident; values
# spliced into it must be quoted with printf %q (the remote side is bash).
run_remote() {
  local worker=$1 script=$2 encoded
  encoded=$(printf '%s\n' "$script" | base64 | tr -d '\n')
  tpu_ssh "$worker" --command="echo $encoded | base64 -d | bash"
}
