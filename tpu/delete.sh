#!/usr/bin/env bash
# Delete a TPU VM, or the queued resource (with its VM) when it was created with QUEUED=1.
# Anything stored on the workers (local workdirs, ~/bvs_logs) goes with it; gs:// workdirs stay.
# Extra arguments go to gcloud (e.g. --quiet to skip the confirmation prompt, --async).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: NAME=my-tpu ZONE=us-central2-b [PROJECT=...] tpu/delete.sh [--quiet] [extra gcloud flags...]
EOF
}

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  usage
  exit 0
fi

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init_tpu_env

if gcloud compute tpus queued-resources describe "$NAME" "${GCLOUD_LOC[@]}" >/dev/null 2>&1; then
  note "deleting queued resource ${NAME} and its TPU VM in ${ZONE}"
  gcloud compute tpus queued-resources delete "$NAME" "${GCLOUD_LOC[@]}" --force "$@"
elif gcloud compute tpus tpu-vm describe "$NAME" "${GCLOUD_LOC[@]}" >/dev/null 2>&1; then
  note "deleting TPU VM ${NAME} in ${ZONE}"
  gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_LOC[@]}" "$@"
else
  echo "error: no TPU VM or queued resource named '${NAME}' in ${ZONE}${PROJECT:+ (project ${PROJECT})}." >&2
  echo "List them with: gcloud compute tpus tpu-vm list --zone=${ZONE}; gcloud compute tpus queued-resources list --zone=${ZONE}" >&2
  exit 1
fi
