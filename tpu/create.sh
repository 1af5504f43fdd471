#!/usr/bin/env bash
# Create a Cloud TPU VM: a single host (v4-8, v5litepod-8, ...) or a pod slice (v4-32,
# v5litepod-64, ...). Extra arguments go to gcloud unchanged (e.g. --reserved,
# --service-account=SA, --scopes=cloud-platform, --labels=k=v).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: NAME=my-tpu ZONE=us-central2-b ACCELERATOR_TYPE=v4-8 [RUNTIME_VERSION=...] \
         [SPOT=1] [QUEUED=1] [WAIT=0] [PROJECT=...] tpu/create.sh [extra gcloud flags...]

  NAME              TPU VM name (also the queued-resource name with QUEUED=1)
  ZONE              zone that has the accelerator, e.g. us-central2-b (v4), us-west4-a (v5e)
  ACCELERATOR_TYPE  v4-8, v4-32, v5litepod-8, v5litepod-64, v5p-8, v6e-8, ...
  RUNTIME_VERSION   TPU software version; inferred from ACCELERATOR_TYPE when unset:
                      v2/v3/v4 -> tpu-ubuntu2204-base   v5litepod (v5e) -> v2-alpha-tpuv5-lite
                      v5p      -> v2-alpha-tpuv5         v6e             -> v2-alpha-tpuv6e
  SPOT=1            Spot (preemptible) capacity: much cheaper, can be reclaimed at any time
  QUEUED=1          request through a queued resource (gcloud compute tpus queued-resources),
                    which waits for capacity instead of failing; recommended for pod slices
  WAIT=0            with QUEUED=1, return right away instead of polling until ACTIVE
                    (every POLL_SECONDS, default 60)
  PROJECT           GCP project (default: gcloud's configured core/project)
EOF
}

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  usage
  exit 0
fi

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_cmd gcloud "Install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
need_var NAME ZONE ACCELERATOR_TYPE
gcloud_loc_flags

case "${SPOT:-0}" in 0 | 1) ;; *) die "SPOT must be 0 or 1, got '${SPOT}'" ;; esac
case "${QUEUED:-0}" in 0 | 1) ;; *) die "QUEUED must be 0 or 1, got '${QUEUED}'" ;; esac
case "${WAIT:-1}" in 0 | 1) ;; *) die "WAIT must be 0 or 1, got '${WAIT}'" ;; esac

case "$ACCELERATOR_TYPE" in
  v5e-*)
    note "warning: gcloud names v5e slices v5litepod-N (e.g. v5litepod-8), not ${ACCELERATOR_TYPE}"
    ;;
esac

if [[ -z "${RUNTIME_VERSION:-}" ]]; then
  case "$ACCELERATOR_TYPE" in
    v2-* | v3-* | v4-*) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) die "RUNTIME_VERSION not set and no default known for ACCELERATOR_TYPE=${ACCELERATOR_TYPE}; list them with: gcloud compute tpus versions list --zone=${ZONE}" ;;
  esac
  note "RUNTIME_VERSION not set; using ${RUNTIME_VERSION} for ${ACCELERATOR_TYPE}"
fi

spot_flags=()
capacity=on-demand
if [[ "${SPOT:-0}" == 1 ]]; then
  spot_flags=(--spot)
  capacity=spot
fi

if [[ "${QUEUED:-0}" == 1 ]]; then
  note "requesting queued resource ${NAME} (${ACCELERATOR_TYPE}, ${RUNTIME_VERSION}, ${capacity}) in ${ZONE}"
  gcloud compute tpus queued-resources create "$NAME" "${GCLOUD_LOC[@]}" \
    --node-id="$NAME" \
    --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" \
    ${spot_flags[@]+"${spot_flags[@]}"} "$@"

  if [[ "${WAIT:-1}" == 0 ]]; then
    note "not waiting. Check with: gcloud compute tpus queued-resources describe ${NAME} --zone=${ZONE}"
    exit 0
  fi
  note "waiting for ${NAME} to become ACTIVE (Ctrl-C stops waiting, not the request)"
  while true; do
    state=$(gcloud compute tpus queued-resources describe "$NAME" "${GCLOUD_LOC[@]}" \
      --format='value(state.state)' 2>/dev/null || echo UNKNOWN)
    case "$state" in
      ACTIVE)
        note "${NAME} is ACTIVE. Next: NAME=${NAME} ZONE=${ZONE} tpu/setup.sh"
        exit 0
        ;;
      FAILED | SUSPENDED | SUSPENDING)
        gcloud compute tpus queued-resources describe "$NAME" "${GCLOUD_LOC[@]}" >&2 || true
        echo "error: queued resource ${NAME} is ${state}; delete it with tpu/delete.sh and retry" >&2
        exit 1
        ;;
      *)
        note "$(date '+%H:%M:%S') ${NAME}: ${state}"
        sleep "${POLL_SECONDS:-60}"
        ;;
    esac
  done
else
  note "creating TPU VM ${NAME} (${ACCELERATOR_TYPE}, ${RUNTIME_VERSION}, ${capacity}) in ${ZONE}"
  gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_LOC[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" \
    ${spot_flags[@]+"${spot_flags[@]}"} "$@"
  note "created. Next: NAME=${NAME} ZONE=${ZONE} tpu/setup.sh"
fi
