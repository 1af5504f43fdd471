#!/usr/bin/env bash
# Copy this working tree to every worker of a TPU VM and install it there:
#   ~/bvs       the tree (tracked + untracked-but-not-ignored files, as they are on disk now)
#   ~/bvs_venv  python3 -m venv with `pip install -e '.[tpu]'`
# Rerun after changing code; with --code-only it just replaces ~/bvs (the editable install
# picks the new code up; rerun without --code-only when dependencies change).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: NAME=my-tpu ZONE=us-central2-b [PROJECT=...] [PYTHON=python3] [CONSTRAINTS=constraints.txt] \
         tpu/setup.sh [--code-only]

  --code-only   copy the tree, skip the venv / pip install
  PYTHON        interpreter on the workers for the venv (default python3; it is installed with
                apt, together with its -venv package, when missing)
  CONSTRAINTS   pip constraints file, relative to the repo root (default: none, i.e. the ranges
                in pyproject.toml). constraints.txt pins the CI set, which needs Python >= 3.11:
                the tpu-ubuntu2204-base / v2-alpha-* images ship Python 3.10, so use
                PYTHON=python3.11 with it.
EOF
}

code_only=0
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --code-only) code_only=1; shift ;;
  "") ;;
  *) usage >&2; echo "error: unknown argument '$1'" >&2; exit 1 ;;
esac
if (($#)); then
  usage >&2
  echo "error: unexpected arguments: $*" >&2
  exit 1
fi

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init_tpu_env
need_cmd tar ""

if [[ -n "${CONSTRAINTS:-}" && ! -f "$BVS_ROOT/$CONSTRAINTS" ]]; then
  die "CONSTRAINTS=$CONSTRAINTS: no such file under $BVS_ROOT"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bvs_tpu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tarball="$tmp/bvs_src.tar.gz"

# Pack the working tree. In a git checkout: every tracked or untracked file that .gitignore
# does not exclude (so .venv, workdirs, data stay home), skipping tracked files deleted on disk.
cd "$BVS_ROOT"
export COPYFILE_DISABLE=1 # macOS tar: no ._* AppleDouble files in the archive
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
      if [[ -e "$f" || -L "$f" ]]; then printf '%s\0' "$f"; fi
    done |
    tar -czf "$tarball" --null -T -
else
  note "not a git checkout; packing $BVS_ROOT minus the usual build/venv/data folders"
  tar -czf "$tarball" --exclude=./.git --exclude=./.venv --exclude=./workdirs --exclude=./data \
    --exclude='*.egg-info' --exclude='__pycache__' --exclude='*.pyc' .
fi
note "packed $(du -h "$tarball" | cut -f1) from $BVS_ROOT"

note "copying to all workers of ${NAME}"
gcloud compute tpus tpu-vm scp "$tarball" "${NAME}:bvs_src.tar.gz" "${GCLOUD_LOC[@]}" --worker=all

# Runs on every worker: a header of values (quoted with %q) plus a fixed body. Unpacks into a
# fresh directory and swaps it in, so files deleted locally disappear remotely too; the path
# stays ~/bvs, so the editable install keeps pointing at the right place.
header=$(printf 'rel_dest=%q\nrel_venv=%q\nrel_logs=%q\npy=%q\nconstraints=%q\ncode_only=%q\n' \
  "$BVS_REMOTE_DIR" "$BVS_REMOTE_VENV" "$BVS_REMOTE_LOGS" "${PYTHON:-python3}" "${CONSTRAINTS:-}" "$code_only")
# (read -d '' rather than $(cat <<EOF): bash 3.2 misparses ')' in heredocs inside $(...).
IFS= read -r -d '' body <<'EOF' || true
set -euo pipefail
host=$(hostname)
for rel in "$rel_dest" "$rel_venv"; do
  case "$rel" in "" | . | .. | /* | */*) echo "[$host] bad remote dir name '$rel'" >&2; exit 1 ;; esac
done
dest=$HOME/$rel_dest
venv=$HOME/$rel_venv

# Replacing the tree under a running trainer invites odd failures: refuse.
for pidfile in "$HOME/$rel_logs"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'big_vision_style.train'; then
    rm -f "$HOME/bvs_src.tar.gz"
    echo "[$host] trainer pid $pid ($(basename "$pidfile" .pid)) is running; stop it first: tpu/launch.sh --stop" >&2
    exit 1
  fi
done

new=$(mktemp -d "$HOME/.bvs_new.XXXXXX")
tar -xzf "$HOME/bvs_src.tar.gz" -C "$new"
chmod 755 "$new"
rm -rf "$dest"
mv "$new" "$dest"
rm -f "$HOME/bvs_src.tar.gz"
echo "[$host] code in $dest"
if [ "$code_only" = 1 ]; then exit 0; fi

apt_install() {
  sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@" >/dev/null
}
if ! command -v "$py" >/dev/null 2>&1; then
  echo "[$host] installing $py with apt"
  apt_install "${py##*/}" "${py##*/}-venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "[$host] installing ${py##*/}-venv with apt"
    apt_install "${py##*/}-venv"
  fi
  "$py" -m venv "$venv"
fi
echo "[$host] $("$venv/bin/python" --version) in $venv; pip install -e '.[tpu]' (a few minutes)"
"$venv/bin/python" -m pip install -q --upgrade pip
cflags=()
if [ -n "$constraints" ]; then cflags=(-c "$dest/$constraints"); fi
"$venv/bin/python" -m pip install -q --progress-bar off ${cflags[@]+"${cflags[@]}"} -e "$dest[tpu]"
# Import only: initialising the TPU backend here would need every host of a slice at once.
ver=$("$venv/bin/python" -c 'import jax, big_vision_style; print(jax.__version__)')
echo "[$host] ok: jax $ver"
EOF

if ((code_only)); then
  note "unpacking on all workers (code only)"
else
  note "unpacking and installing on all workers"
fi
run_remote all "$header"$'\n'"$body"
note "done. Next: NAME=${NAME} ZONE=${ZONE} tpu/launch.sh experiments/<config>.py:<args> gs://<bucket>/<workdir>"
