#!/usr/bin/env bash
# Copy this working tree to every worker of a TPU VM and install it there:
#   ~/bvs       the tree (tracked + untracked-but-not-ignored files, as they are on disk now)
#   ~/bvs_venv  a venv with `pip install -c constraints.txt -e '.[tpu]'`: the versions CI tests,
#               jax[tpu] at the pinned jax version (which pins its libtpu)
# Rerun after changing code; with --code-only it just replaces ~/bvs (the editable install
# picks the new code up; rerun without --code-only when dependencies change).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: NAME=my-tpu ZONE=us-central2-b [PROJECT=...] [PYTHON=python3.11] [CONSTRAINTS=constraints.txt] \
         tpu/setup.sh [--code-only]

  --code-only   copy the tree, skip the venv / pip install
  PYTHON        interpreter on the workers for the venv. Default: python3 when it is >= 3.11
                (the pinned jax needs 3.11), else python3.11 (the tpu-ubuntu2204-base / v2-alpha-*
                images ship 3.10). It is installed with apt, with its -venv package, when missing.
  CONSTRAINTS   pip constraints file, relative to the repo root (default constraints.txt: the
                versions CI tests, jax[tpu] at that jax version with its libtpu pin).
                CONSTRAINTS= (empty) installs from pyproject.toml's ranges instead (untested
                newer versions).
  GCLOUD_SSH_FLAGS  extra flags for every gcloud tpu-vm ssh/scp (see tpu/README.md)
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

# Unset: the CI-tested pins; set but empty: pyproject's ranges.
constraints=${CONSTRAINTS-constraints.txt}
if [[ -n "$constraints" && ! -f "$BVS_ROOT/$constraints" ]]; then
  die "CONSTRAINTS=$constraints: no such file under $BVS_ROOT"
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
tpu_scp all "$tarball" "${NAME}:bvs_src.tar.gz"

# Runs on every worker: a header of values (quoted with %q) plus a fixed body. Unpacks into a
# fresh directory and swaps it in, so files deleted locally disappear remotely too; the path
# stays ~/bvs, so the editable install keeps pointing at the right place.
header=$(printf 'rel_dest=%q\nrel_venv=%q\nrel_logs=%q\npy=%q\nconstraints=%q\ncode_only=%q\n' \
  "$BVS_REMOTE_DIR" "$BVS_REMOTE_VENV" "$BVS_REMOTE_LOGS" "${PYTHON:-}" "$constraints" "$code_only")
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
  # (not `tr | grep -q`, which pipefail can fail when grep quits early)
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && case "$cmdline" in *big_vision_style.train*) true ;; *) false ;; esac; then
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
if [ -z "$py" ]; then
  # The pinned jax (0.10) and numpy (2.4) need Python >= 3.11; the TPU images' python3 is 3.10.
  if command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py=python3
  else
    py=python3.11
  fi
fi
if ! command -v "$py" >/dev/null 2>&1; then
  echo "[$host] installing $py with apt"
  apt_install "${py##*/}" "${py##*/}-venv"
fi
# A venv left by an older setup on the image's Python 3.10 cannot take the pinned jax: renew it.
if [ -x "$venv/bin/python" ] &&
  ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "[$host] $venv has $("$venv/bin/python" --version 2>&1); recreating it with $py"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "[$host] installing ${py##*/}-venv with apt"
    apt_install "${py##*/}-venv"
  fi
  "$py" -m venv "$venv"
fi
cflags=()
how="pyproject.toml's ranges"
if [ -n "$constraints" ]; then
  cflags=(-c "$dest/$constraints")
  how="the pins in $constraints"
fi
echo "[$host] $("$venv/bin/python" --version) in $venv; pip install -e '.[tpu]' with $how (a few minutes)"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q --progress-bar off ${cflags[@]+"${cflags[@]}"} -e "$dest[tpu]"
# Import only: initialising the TPU backend here would need every host of a slice at once.
ver=$("$venv/bin/python" -c 'import jax, big_vision_style
from importlib.metadata import version
print("jax", jax.__version__, "libtpu", version("libtpu"))')
echo "[$host] ok: $ver"
EOF

if ((code_only)); then
  note "unpacking on all workers (code only)"
else
  note "unpacking and installing on all workers"
fi
run_remote all "$header"$'\n'"$body"
note "done. Next: NAME=${NAME} ZONE=${ZONE} tpu/launch.sh experiments/<config>.py:<args> gs://<bucket>/<workdir>"
