r"""Compile every `:tpu` config's train step for TPU slices and find the smallest slice it fits
on (the one its docstring names), and the JEST step from 64 to 1024 v5p chips, with
tools/aot.py; writes results/aot/ (its README.md reads the files).

  python -m big_vision_style.tools.aot_sweep --out results/aot           # everything, resumable
  python -m big_vision_style.tools.aot_sweep --out results/aot --only jest_filter_ratio
  python -m big_vision_style.tools.aot_sweep --out results/aot --report  # tables only
  python -m big_vision_style.tools.aot_sweep --list                      # the entries

Every entry is one config (the arm of it that needs the most memory, `ENTRIES`) and a ladder
of slices (v4, 4 to 1024 chips). Its search compiles it at a first guess, then one slice
smaller while it fits, or one larger while it does not, until the smallest slice that fits
and the one below it are both compiled (`next_topology`); all entries advance one compile per
round, so an interrupted sweep has a first number for each. The JEST scaling entries compile
at one slice each. An entry whose config is the same dict as an earlier one's is not compiled
again: the table says "= <that config>".

Each compile is one run, in its own process, of the command a person would type,

  python -m big_vision_style.tools.aot --config SPEC --topology SLICE --out RAW.json

(libtpu holds GBs of host memory compiling a large program; a fresh process gives them back),
niced, and killed if the host's available memory falls under --mem_floor_gib (the host is
shared; a killed compile is retried by the next run). `<out>/raw/<entry>@<slice>.json` keeps
its report with what made it: the command, the digest of the config (its whole `to_dict()`),
the digest of the code that builds and compiles the step (big_vision_style/**/*.py), the
commit, libtpu's version, wall time, the compiler process's peak host memory and the
program's digest (`aot.program_digest`: sha256 of the lowered StableHLO). A rerun keeps every
compile whose config digest is the same and whose code digest is too, or, after code edits,
whose program is: the entry is lowered again (`aot --lower_only`, seconds; cached in
`<out>/lowered.json`) and its digest compared. So the sweep resumes where it stopped, and
recompiles only the steps that an edit changed; the tables mark any report that is neither
(STALE).

  python -m big_vision_style.tools.aot_sweep --out results/aot --backfill_lowered

gives reports written before digests were recorded theirs, by lowering each at the commit that
compiled it (in a temporary `git worktree`); the record says so (`lowered_digest_backfilled`).

Outputs: aot.json (per entry: its compiles, with reports less the per-op collective list, and
its smallest fitting slice), table.md, jest_scaling.json and jest_scaling.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

GIB = 2**30


# Slices of one generation by size (Google's default shapes: aot.parse_topology('v4-N')).
V4 = ('v4:2x2x1', 'v4:2x2x2', 'v4:2x2x4', 'v4:2x4x4', 'v4:4x4x4', 'v4:4x4x8', 'v4:4x8x8',
      'v4:8x8x8', 'v4:8x8x16')


@dataclasses.dataclass(frozen=True)
class Entry:
  """One :tpu config (its most memory-hungry arm), searched for the smallest slice of `ladder`
  that fits: compiled first at `start`, then one slice smaller while it fits, or one larger
  while it does not, until the smallest fitting slice and the one below it (or the ladder's
  first) are both compiled."""
  name: str      # Unique; raw files are named after it.
  spec: str      # --config of tools/aot.py.
  start: str     # First slice compiled: the smallest that fitted in the last full sweep.
  arm: str = ''  # Which arm of the config, and why that one.
  ladder: tuple[str, ...] = V4
  fixed: bool = False  # Compile at `start` only (the scaling study).


def key(name: str, topology: str) -> str:
  return f'{name}@{topology.replace(":", "_")}'


JEST = 'experiments/jest/filter_ratio.py:tpu'
SCALING_SLICES = ('v5p:4x4x4', 'v5p:4x4x8', 'v5p:4x8x8', 'v5p:8x8x8', 'v5p:8x8x16')
BS = 'experiments/bad_students/'
JE = 'experiments/jest/'
RE = 'experiments/rela/'

ENTRIES = [
    # Bad Students: ViT-L/16 learner (bf16, remat), b = 4096, f = 0.5 (B = 8192).
    Entry('bs_policy_comparison', BS + 'policy_comparison.py:tpu', 'v4:2x2x2',
          'learnability, Ti actor and Ti reference, both live (the default)'),
    Entry('bs_policy_comparison_rho', BS + 'policy_comparison.py:tpu,policy=rho', 'v4:2x2x2',
          'RHO: the ViT-L learner itself scores the super-batch (B = 8192) before its update'),
    Entry('bs_compute_scaling_S', BS + 'compute_scaling.py:tpu,actor=S', 'v4:2x2x2',
          'learnability with the S/16 actor, the larger of its two actors (the budget only '
          'sets the epochs)'),
    Entry('bs_actor_size_sweep_B', BS + 'actor_size_sweep.py:tpu,actor=B', 'v4:2x2x2',
          'actor B/16, the largest (the reference has the actor\'s size)'),
    Entry('bs_compute_amortisation', BS + 'compute_amortisation.py:tpu', 'v4:2x2x2',
          'cached reference scores, its only arm'),
    Entry('bs_rho_vs_classact_online', BS + 'rho_vs_classact.py:tpu,variant=online',
          'v4:2x2x1', 'ClassAct-Online: the Ti reference trains on the whole super-batch '
          '(B = 8192) besides the ViT-B/16 learner (bf16, remat)'),
    Entry('bs_reference', BS + 'reference.py:tpu', 'v4:2x2x1', 'the Ti/16 reference, b = 4096'),
    Entry('bs_active_clip', BS + 'active_clip.py:tpu', 'v4:2x4x4',
          'pool=curated (the pools differ only in the reference checkpoint): two-tower B '
          'learner, Ti actor trained on b = 32768, B reference on B = 65536'),
    # JEST: two towers, B/16 image + B text (bf16, remat), b = 32768.
    Entry('jest_filter_ratio_f0.9', JE + 'filter_ratio.py:tpu,filter_ratio=0.9', 'v4:4x4x8',
          'f = 0.9 (B = 327,680), joint learnability: the largest super-batch of Fig. 3'),
    Entry('jest_filter_ratio', JEST, 'v4:4x4x4', 'f = 0.8 (B = 163,840), the paper\'s setting'),
    Entry('jest_reference_curation', JE + 'reference_curation.py:tpu', 'v4:4x8x8',
          'pool=curated (the pools differ only in the reference checkpoint)'),
    Entry('jest_sampler_quality', JE + 'sampler_quality.py:tpu', 'v4:4x8x8', 'its only config'),
    Entry('jest_table1', JE + 'table1.py:tpu', 'v4:4x8x8',
          'method_name=jest (method_name=siglip is an i.i.d. step like jest_reference\'s)'),
    Entry('jest_variants_softmax', JE + 'variants.py:tpu,loss=softmax', 'v4:4x4x4',
          'softmax (CLIP) loss, joint f = 0.8: its sampler recomputes log-sum-exps for every '
          'chunk (the hard-learner arms, f up to 0.9, run no reference)'),
    Entry('jest_flexi', JE + 'flexi.py:tpu', 'v4:2x4x4',
          'Flexi-JEST, f = 0.8: scores at patch 32, trains half the batch at each patch size'),
    Entry('jest_reference', JE + 'reference.py:tpu', 'v4:2x4x4',
          'the reference: i.i.d. SigLIP, b = 32768'),
    # ReLA: ViT students (bf16; remat on ImageNet).
    Entry('rela_table1_imagenet', RE + 'table1.py:tpu,dataset=imagenet,objective=byol,'
          'prior=siglip', 'v4:2x2x4', 'ImageNet, BYOL (two views of 4096 on ViT-B/16), '
          'SigLIP prior: the grid\'s largest dataset and student; its BYOL phase (the last)'),
    Entry('rela_imagenet_claims', RE + 'imagenet_claims.py', 'v4:2x2x4',
          'claim=half_beats_full, arm=rela (BYOL with the SigLIP prior; the other arms drop '
          'ReLA); its BYOL phase'),
    Entry('rela_table1_cifar100', RE + 'table1.py:tpu,dataset=cifar100,objective=byol,'
          'prior=cifar10', 'v4:2x2x1', 'CIFAR-100, BYOL, ViT-S/4 student (32 px): the grid\'s '
          'CIFAR arms'),
    Entry('rela_prior_imagenet', RE + 'prior.py:tpu,prior=imagenet', 'v4:2x2x1',
          'the ImageNet prior, ViT-S/16 at 224 px, b = 1024 (the CIFAR priors see 32 px)'),
    # Divide and Contrast: MoCLR on ViT-B/16 (bf16, remat), two views of 4096.
    Entry('dnc_moclr', 'experiments/dnc/curation_gap.py:tpu,pool=uncurated', 'v4:2x2x4',
          'MoCLR, the step of the base model, of every expert and of the equal-compute '
          'baseline (distillation: dnc_distill)'),
    Entry('dnc_distill', 'experiments/dnc/dnc_vs_moclr.py:tpu,stage=distill,pool=uncurated,k=5',
          'v4:2x2x1', 'distillation, K = 5: the ViT-B/16 student and 6 heads on one view of '
          '4096, the 6 teachers (base and 5 experts) forward only; placeholder teachers and '
          'cluster table (common.distill_stage_config), shapes only'),
] + [Entry(f'jest_scaling_{t.split(":")[1]}', JEST, t, 'f = 0.8', ladder=(t,), fixed=True)
     for t in SCALING_SLICES]
ORDER = [e.name for e in ENTRIES]  # The tables' order.
# The order of each round: the headline steps and the scaling study first.
_FIRST = ('bs_policy_comparison', 'jest_filter_ratio', *(f'jest_scaling_{t.split(":")[1]}'
                                                         for t in SCALING_SLICES))
ENTRIES.sort(key=lambda e: _FIRST.index(e.name) if e.name in _FIRST else len(_FIRST))


def next_topology(entry: Entry, results: dict[str, bool | None]) -> str | None:
  """The next slice to compile for `entry`, given {slice: fits (None: no report)}; None when
  its search is over."""
  if entry.start not in results:
    return entry.start
  if entry.fixed or any(v is None for v in results.values()):
    return None
  ladder = list(entry.ladder)
  fits = [ladder.index(t) for t, ok in results.items() if ok]
  if fits:
    low = min(fits)
    if low == 0 or ladder[low - 1] in results:
      return None
    return ladder[low - 1]
  high = max(ladder.index(t) for t in results)
  return None if high == len(ladder) - 1 else ladder[high + 1]


# ----------------------------------------------------------------------------- provenance


def config_digest(spec: str) -> tuple[str, dict]:
  from big_vision_style import config_utils  # pylint: disable=g-import-not-at-top
  d = config_utils.load_config(spec).to_dict()
  text = json.dumps(d, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16], d


def code_digest(root: str = '.') -> str:
  """Of every module that builds or compiles a step (not this sweep, not the configs)."""
  h = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(root, 'big_vision_style', '**', '*.py'),
                               recursive=True)):
    if path.endswith(os.path.join('tools', 'aot_sweep.py')):
      continue
    h.update(os.path.relpath(path, root).encode())
    with open(path, 'rb') as f:
      h.update(f.read())
  return h.hexdigest()[:16]


def _git(*args) -> str:
  try:
    return subprocess.run(['git', *args], capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''


# Lowers a config at a commit that may predate `aot --lower_only`, with only the APIs that every
# commit since the sweep's first has: prints [{'topology', 'lowered_digest', 'module'}] as JSON.
_LOWER_SNIPPET = r'''
import hashlib, json, os, sys
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
from big_vision_style import config_utils, programs
from big_vision_style.tools import aot
config = config_utils.load_config(sys.argv[1])
out = []
for t in sys.argv[2:]:
  program = programs.build_program(config, aot.topology_mesh(aot.parse_topology(t)))
  text = program.fn.trace(*program.args).lower().as_text()
  out.append({'topology': t, 'lowered_digest': hashlib.sha256(text.encode()).hexdigest()[:16],
              'module': os.path.abspath(programs.__file__)})
print('LOWERED ' + json.dumps(out))
'''


def lower_at(root: str, spec: str, topologies: list[str], timeout: float = 1800) -> dict:
  """{topology: program digest} of `spec` lowered by the code under `root` (a checkout)."""
  env = {**os.environ, 'PYTHONPATH': os.path.abspath(root), 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run([sys.executable, '-c', _LOWER_SNIPPET, spec, *topologies], cwd=root,
                        env=env, capture_output=True, text=True, timeout=timeout)
  line = next((l for l in proc.stdout.splitlines() if l.startswith('LOWERED ')), None)
  if proc.returncode or line is None:
    raise RuntimeError(f'lowering {spec} at {root} failed (rc {proc.returncode}):\n'
                       f'{proc.stderr[-2000:]}')
  result = json.loads(line[len('LOWERED '):])
  for r in result:  # The code that lowered it must be the checkout's, not an installed copy.
    if not r['module'].startswith(os.path.abspath(root) + os.sep):
      raise RuntimeError(f'lowered with {r["module"]}, not the code under {root}')
  return {r['topology']: r['lowered_digest'] for r in result}


class Lowerings:
  """Program digests of the current code, per (entry, slice): lowered on demand, cached in
  `<out>/lowered.json` under the code and config digests they were lowered with."""

  def __init__(self, out: str, code: str):
    self.path, self.code = os.path.join(out, 'lowered.json'), code
    self.cache = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.cache = json.load(f)

  def digest(self, entry: 'Entry', topology: str, config_digest: str) -> str:
    k = key(entry.name, topology)
    hit = self.cache.get(k)
    if not hit or hit['code_digest'] != self.code or hit['config_digest'] != config_digest:
      print(f'lower  {k} (is the compiled program still the step?)', flush=True)
      digest = lower_at('.', entry.spec, [topology])[topology]
      self.cache[k] = hit = {'code_digest': self.code, 'config_digest': config_digest,
                             'lowered_digest': digest}
      with open(self.path + '.tmp', 'w') as f:
        json.dump(self.cache, f, indent=1, sort_keys=True)
      os.replace(self.path + '.tmp', self.path)
    return hit['lowered_digest']


def record_digest(record: dict) -> str | None:
  return record.get('lowered_digest') or (record.get('report') or {}).get('lowered_digest')


def is_current(record: dict, entry: 'Entry', config_digest: str, code: str,
               lowerings: Lowerings) -> bool:
  """Whether `record` reports the step the current code and config compile."""
  if record.get('config_digest') != config_digest:
    return False
  if record.get('code_digest') == code:
    return True
  digest = record_digest(record)
  return digest is not None and digest == lowerings.digest(entry, record['topology'],
                                                            config_digest)


def backfill_lowered(out: str) -> int:
  """Gives raw reports without a program digest the digest of their config lowered at the
  commit that compiled them (a temporary git worktree); returns how many it filled."""
  todo = {}
  for path in sorted(glob.glob(os.path.join(out, 'raw', '*.json'))):
    with open(path) as f:
      rec = json.load(f)
    if record_digest(rec) is None and rec.get('commit') and not rec.get('uncommitted_changes'):
      todo.setdefault(rec['commit'], []).append((path, rec))
  filled = 0
  for commit, records in todo.items():
    tree = tempfile.mkdtemp(prefix=f'aot_lower_{commit[:10]}_')
    subprocess.run(['git', 'worktree', 'add', '--detach', tree, commit], check=True,
                   capture_output=True)
    try:
      by_spec = {}
      for path, rec in records:
        by_spec.setdefault(rec['spec'], []).append((path, rec))
      for spec, recs in by_spec.items():
        print(f'lower  {spec} at {commit[:10]}: {[r["topology"] for _, r in recs]}', flush=True)
        digests = lower_at(tree, spec, [r['topology'] for _, r in recs])
        for path, rec in recs:
          rec['lowered_digest'] = digests[rec['topology']]
          rec['lowered_digest_backfilled'] = (
              f'lowered at {commit[:10]} (the commit that compiled it) by aot_sweep '
              f'--backfill_lowered, {datetime.date.today().isoformat()}')
          with open(path + '.tmp', 'w') as f:
            json.dump(rec, f, indent=1)
          os.replace(path + '.tmp', path)
          filled += 1
    finally:
      subprocess.run(['git', 'worktree', 'remove', '--force', tree], capture_output=True)
  return filled


def _libtpu_version() -> str:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version('libtpu')
  except Exception:  # pylint: disable=broad-except
    return 'unknown'


# ----------------------------------------------------------------------------- compiling


def command(spec: str, topology: str, out_path: str) -> list[str]:
  return [sys.executable, '-m', 'big_vision_style.tools.aot', '--config', spec,
          '--topology', topology, '--out', out_path]


def shown_command(spec: str, topology: str, name: str) -> str:
  return (f'python -m big_vision_style.tools.aot --config {spec} --topology {topology} '
          f'--out {key(name, topology)}.json')


def _mem_available() -> float:
  with open('/proc/meminfo') as f:
    for line in f:
      if line.startswith('MemAvailable:'):
        return float(line.split()[1]) * 1024
  return float('inf')


def _run_guarded(cmd, timeout: float, mem_floor: float):
  """Runs `cmd`; kills it if it outlives `timeout` or if the host's available memory falls
  under `mem_floor` bytes (the host is shared: better this compile than someone's tests).
  (returncode, stdout, stderr, why killed or None, peak RSS bytes)."""
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True)
    t0, killed, peak = time.time(), None, 0.0
    while proc.poll() is None:
      try:
        with open(f'/proc/{proc.pid}/status') as f:
          peak = max(peak, float(f.read().split('VmRSS:')[1].split()[0]) * 1024)
      except (OSError, IndexError, ValueError):
        pass
      if time.time() - t0 > timeout:
        killed = f'timeout after {timeout:.0f} s'
      elif _mem_available() < mem_floor:
        killed = f'host memory: under {mem_floor / GIB:.1f} GiB available'
      if killed:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        break
      time.sleep(1)
    out.seek(0)
    err.seek(0)
    return proc.returncode, out.read(), err.read(), killed, peak


def compile_one(entry: Entry, topology: str, out: str, digests: tuple[str, str],
                timeout: float, mem_floor: float) -> dict:
  raw_dir = os.path.join(out, 'raw')
  os.makedirs(raw_dir, exist_ok=True)
  k = key(entry.name, topology)
  tmp = os.path.join(raw_dir, f'.{k}.aot.json')
  if os.path.exists(tmp):
    os.remove(tmp)
  t0 = time.time()
  rc, stdout, stderr, killed, peak = _run_guarded(command(entry.spec, topology, tmp), timeout,
                                                  mem_floor)
  record = {'name': entry.name, 'spec': entry.spec, 'topology': topology, 'arm': entry.arm,
            'command': shown_command(entry.spec, topology, entry.name), 'returncode': rc,
            'killed': killed, 'config_digest': digests[0], 'code_digest': digests[1],
            'commit': _git('rev-parse', 'HEAD'),
            'uncommitted_changes': bool(_git('status', '--porcelain', '--', 'big_vision_style',
                                             'experiments')),
            'libtpu': _libtpu_version(), 'wall_s': round(time.time() - t0, 1), 'host_peak_rss_gib': round(peak / GIB, 2),
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'stdout_tail': stdout[-3000:], 'stderr_tail': stderr[-3000:], 'report': None}
  if os.path.exists(tmp):
    with open(tmp) as f:
      record['report'] = json.load(f)[0]
    record['lowered_digest'] = record['report'].get('lowered_digest')
    os.remove(tmp)
  if killed is None and record['report'] is None and rc is not None and rc < 0:
    killed = f'killed by signal {-rc} (not by this sweep)'
    record['killed'] = killed
  if killed:  # Not a result: a rerun tries again.
    print(f'killed {k}: {killed}', flush=True)
    return record
  path = os.path.join(raw_dir, f'{k}.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f, indent=1)
  os.replace(path + '.tmp', path)
  return record


def load_raw(out: str, name: str, topology: str) -> dict | None:
  path = os.path.join(out, 'raw', f'{key(name, topology)}.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _fits(record: dict) -> bool | None:
  return None if record.get('report') is None else bool(record['report']['fits'])


# ----------------------------------------------------------------------------- tables


def _gib(x):
  return None if x is None else x / GIB


def _fmt(x, digits=2):
  return '-' if x is None else f'{x:.{digits}f}'


def summarise(record: dict) -> dict:
  """The numbers of one compile the tables show (memory breakdown, FLOPs and collectives are
  None where the compiler ran out of memory and gave only its own total)."""
  r = record.get('report')
  if r is None:
    return {'compiled': False}
  mem = r.get('memory') or {}
  coll = r.get('collectives') or {}
  kinds = {k: {'count': v['count'], 'executions': v.get('executions', v['count']),
               'raw_bytes': v['raw_bytes'], 'moved_bytes_per_chip': v['moved_bytes_per_chip']}
           for k, v in (coll.get('summary') or {}).items()}
  flops = r.get('flops_total')
  # hlo_stats counts an op in a conditional's branch as if that branch ran, so its total adds
  # every branch: selection.gather's windowed ppermutes (the branch a step takes unless a
  # selection needs a longer shift) and its exact fallback (an all-reduce of the whole [b, ...]
  # selected batch). `typical` counts the ops outside conditionals plus the windowed branch.
  by_branch, windowed = {}, set()
  for op in coll.get('ops') or []:
    moved = op['moved_bytes_per_chip'] * op['executions']
    by_branch[op.get('branch', '')] = by_branch.get(op.get('branch', ''), 0.0) + moved
    if 'gather_windowed' in (op.get('op_name') or ''):
      windowed.add(op.get('branch', ''))
  typical = by_branch.get('', 0.0) + sum(by_branch.get(b, 0.0) for b in windowed - {''})
  where = {}  # kind -> {'unconditional' | 'windowed gather' | 'other branches': bytes}
  for op in coll.get('ops') or []:
    branch = op.get('branch', '')
    label = ('unconditional' if not branch else
             'windowed gather' if branch in windowed else 'other branches')
    d = where.setdefault(op['kind'], {})
    d[label] = d.get(label, 0.0) + op['moved_bytes_per_chip'] * op['executions']
  return {'compiled': True, 'fits': r['fits'], 'needed_gib': _gib(r['needed_bytes']),
          'usable_hbm_gib': _gib(r['usable_hbm_bytes']), 'margin_gib': _gib(r['margin_bytes']),
          'argument_gib': _gib(mem.get('argument_bytes')),
          'output_gib': _gib(mem.get('output_bytes')), 'alias_gib': _gib(mem.get('alias_bytes')),
          'temp_gib': _gib(mem.get('temp_bytes')), 'peak_gib': _gib(mem.get('peak_memory_bytes')),
          'generated_code_gib': _gib(mem.get('generated_code_bytes')),
          'tflop_per_step': None if flops is None else flops / 1e12,
          'tflop_per_chip': None if flops is None else flops / 1e12 / r['num_devices'],
          'collective_moved_gib_per_chip': _gib(coll.get('moved_bytes_per_chip')),
          'collective_typical_gib_per_chip': _gib(typical) if coll else None,
          'collective_gib_per_chip_by_branch': {k or 'unconditional': _gib(v)
                                                for k, v in sorted(by_branch.items())},
          'windowed_gather_branches': sorted(windowed),
          'collective_gib_per_chip_by_kind_and_branch': {
              k: {label: _gib(v) for label, v in d.items()} for k, d in sorted(where.items())},
          'collectives': kinds, 'compile_s': r['compile_s'], 'compile_cpu_s': r['compile_cpu_s'],
          'lower_s': r['lower_s'], 'compiler_oom': bool(r.get('compiler_oom')),
          'num_chips': r['num_chips'], 'program': r['name'], 'notes': r.get('notes', [])}


def _slim(report: dict | None) -> dict | None:
  """The report without its per-op collective list (kept in raw/)."""
  if report is None:
    return None
  report = dict(report)
  if report.get('collectives'):
    report['collectives'] = {k: v for k, v in report['collectives'].items() if k != 'ops'}
  if report.get('compiler_oom'):
    report['compiler_oom'] = report['compiler_oom'][:600]
  return report


def _kind_cell(s: dict) -> str:
  parts = [f'{k} {v["moved_bytes_per_chip"] / GIB:.3g}'
           for k, v in sorted(s.get('collectives', {}).items(),
                              key=lambda kv: -kv[1]['moved_bytes_per_chip'])
           if v['moved_bytes_per_chip'] >= 2**20]
  return ', '.join(parts) or '-'


def main_table(entries_out: list[dict]) -> str:
  lines = ['| config, arm | slice | chips | GiB/chip | HBM GiB | fits | TFLOP/step | '
           'collectives GiB/chip: typical / bound (bound by kind) | compile s (CPU) |',
           '|---|---|---:|---:|---:|:---:|---:|---|---:|']
  for e in entries_out:
    if e['fixed']:
      continue
    label = f'`{e["spec"]}`'
    if e['same_as']:
      lines.append(f'| {label} | {e["minimum"] or "-"} | | | | | | = `{e["same_as"]}` (the '
                   'same config) | |')
      continue
    for c in e['compiles']:
      s = c['summary']
      top = c['topology']
      if c['topology'] == e['minimum']:
        top += ' **(minimum)**' if e['minimum_proven'] else ' (fits; smaller not compiled)'
      if not s['compiled']:
        lines.append(f'| {label} | {top} | | | | failed (rc {c["returncode"]}) | | | |')
        continue
      fits = 'yes' if s['fits'] else ('no (compiler OOM)' if s['compiler_oom'] else 'no')
      moved = ('-' if s['collective_moved_gib_per_chip'] is None else
               f'{s["collective_typical_gib_per_chip"]:.3g} / {s["collective_moved_gib_per_chip"]:.3g}'
               f' ({_kind_cell(s)})')
      tflop = '-' if s['tflop_per_step'] is None else f'{s["tflop_per_step"]:.4g}'
      lines.append(f'| {label} | {top} | {s["num_chips"]} | {_fmt(s["needed_gib"])} | '
                   f'{_fmt(s["usable_hbm_gib"])} | {fits} | {tflop} | {moved} | '
                   f'{s["compile_s"]:.0f} ({s["compile_cpu_s"]:.0f}) |')
      label = ''
  return '\n'.join(lines)


def scaling_table(entries_out: list[dict]) -> str:
  rows = [c for e in entries_out if e['fixed'] for c in e['compiles'] if c['summary']['compiled']]
  cols = sorted({(k, label) for c in rows
                 for k, d in c['summary'].get('collective_gib_per_chip_by_kind_and_branch',
                                              {}).items() for label in d},
                key=lambda kl: (['unconditional', 'windowed gather', 'other branches'].index(
                    kl[1]), kl[0]))
  head = (['chips', 'slice', 'arguments', 'temporaries', 'outputs - aliased', 'XLA peak',
           'needed', 'fits', 'TFLOP/step', 'TFLOP/chip'] + [f'{k} ({label})' for k, label in cols]
          + ['collectives, typical', 'collectives, bound'])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---:|' * len(head)]
  for c in rows:
    s = c['summary']
    cells = [str(s['num_chips']), c['topology']]
    if s['compiler_oom']:
      cells += ['-'] * 4 + [_fmt(s['needed_gib']), 'no (OOM)'] + ['-'] * (len(cols) + 4)
    else:
      where = s['collective_gib_per_chip_by_kind_and_branch']
      cells += [_fmt(s['argument_gib']), _fmt(s['temp_gib']),
                _fmt(s['output_gib'] - s['alias_gib']), _fmt(s['peak_gib']),
                _fmt(s['needed_gib']), 'yes' if s['fits'] else 'no',
                f'{s["tflop_per_step"]:.4g}', f'{s["tflop_per_chip"]:.4g}']
      cells += [_fmt(where.get(k, {}).get(label, 0.0), 3) for k, label in cols]
      cells += [_fmt(s['collective_typical_gib_per_chip'], 3),
                _fmt(s['collective_moved_gib_per_chip'], 3)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def collect(out: str, entries: list[Entry], code: str, digests: dict[str, str],
            lowerings: Lowerings) -> list[dict]:
  """Every entry with its compiles (ladder order) and its smallest fitting slice."""
  result, by_digest = [], {}
  for e in entries:
    digest = digests[e.spec]
    first = e if e.fixed else by_digest.setdefault(digest, e)
    compiles = []
    for t in e.ladder:
      rec = load_raw(out, e.name, t)
      if rec is None:
        continue
      compiles.append({
          **{k: rec.get(k) for k in ('topology', 'command', 'config_digest', 'code_digest',
                                     'commit', 'uncommitted_changes', 'libtpu', 'wall_s', 'host_peak_rss_gib', 'date',
                                     'returncode')},
          'lowered_digest': record_digest(rec),
          'stale': not is_current(rec, e, digest, code, lowerings),
          'summary': summarise(rec), 'report': _slim(rec.get('report'))})
    fitting = [c['topology'] for c in compiles if c['summary'].get('fits')]
    low = fitting[0] if fitting else None
    below = None if low is None or e.ladder.index(low) == 0 else e.ladder[e.ladder.index(low) - 1]
    entry = {'name': e.name, 'spec': e.spec, 'arm': e.arm, 'fixed': e.fixed,
             'config_digest': digest, 'same_as': None, 'compiles': compiles,
             'minimum': low,  # The smallest slice compiled that fits...
             # ...and whether it is the smallest of the ladder that does: the first, or the one
             # below it was compiled and does not fit.
             'minimum_proven': low is not None and (below is None or any(
                 c['topology'] == below and c['summary'].get('fits') is False
                 for c in compiles))}
    if first is not e and not e.fixed:
      twin = next(r for r in result if r['name'] == first.name)
      entry.update(same_as=first.spec, minimum=twin['minimum'],
                   minimum_proven=twin['minimum_proven'], compiles=[])
    result.append(entry)
  return result


def write_outputs(out: str, entries: list[Entry], code: str, digests: dict[str, str],
                  lowerings: Lowerings):
  collected = sorted(collect(out, entries, code, digests, lowerings),
                     key=lambda e: ORDER.index(e['name']))
  main_rows = [e for e in collected if not e['fixed']]
  scaling = [e for e in collected if e['fixed']]
  with open(os.path.join(out, 'aot.json'), 'w') as f:
    json.dump(main_rows, f, indent=1)
  with open(os.path.join(out, 'jest_scaling.json'), 'w') as f:
    json.dump(scaling, f, indent=1)
  compiles = [c for e in collected for c in e['compiles']]
  commits = sorted({c['commit'][:10] for c in compiles if c.get('commit')})
  libtpu = sorted({c['libtpu'] for c in compiles if c.get('libtpu')})
  stale = sorted({e['name'] for e in collected for c in e['compiles'] if c['stale']})
  note = (f'Compiled at commit {", ".join(commits) or "-"} with libtpu {", ".join(libtpu) or "-"}'
          f' on a CPU host by `python -m big_vision_style.tools.aot_sweep --out {out}` (each '
          'compile\'s own command is in aot.json). GiB/chip: max(arguments + outputs - aliased '
          '+ temporaries, XLA\'s peak) + code, against the HBM libtpu lets a program use. '
          'Collectives: GiB each chip sends per step by bandwidth-optimal algorithms '
          '(hlo_stats.py). Compile s: wall (CPU) seconds of `compile()` on a shared 2-core '
          'host. (minimum): the smallest slice that fits, the one the config\'s docstring names.')
  if stale:
    note += (f' STALE (the config, or the program its code lowers to, changed since): '
             f'{", ".join(stale)}.')
  with open(os.path.join(out, 'table.md'), 'w') as f:
    f.write(note + '\n\n' + main_table(main_rows) + '\n')
  with open(os.path.join(out, 'jest_scaling.md'), 'w') as f:
    f.write(f'`{JEST}` (f = 0.8, b = 32,768, B = 163,840) on v5p slices: GiB per chip '
            '(memory_analysis) and GiB each chip moves per step, by collective kind.\n\n' +
            scaling_table(scaling) + '\n')
  return main_rows, scaling


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default='results/aot')
  parser.add_argument('--only', default='', help='comma-separated entry names (default: all)')
  parser.add_argument('--report', action='store_true', help='write the tables; compile nothing')
  parser.add_argument('--list', action='store_true')
  parser.add_argument('--backfill_lowered', action='store_true',
                      help='give reports without a program digest theirs, then continue')
  parser.add_argument('--timeout', type=float, default=3 * 3600, help='seconds per compile')
  parser.add_argument('--mem_floor_gib', type=float, default=1.5,
                      help="kill a compile when the host's available memory falls under this")
  parser.add_argument('--nice', type=int, default=10)
  args = parser.parse_args(argv)
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # This process only loads configs.
  only = set(filter(None, args.only.split(',')))
  unknown = only - {e.name for e in ENTRIES}
  if unknown:
    parser.error(f'unknown entries {sorted(unknown)}; see --list')
  entries = [e for e in ENTRIES if not only or e.name in only]
  if args.list:
    for e in entries:
      print(f'{e.name:<28} {e.start:<11} {e.spec}')
    return 0
  os.makedirs(args.out, exist_ok=True)
  code = code_digest()
  digests = {e.spec: config_digest(e.spec)[0] for e in ENTRIES}
  lowerings = Lowerings(args.out, code)
  if args.backfill_lowered:
    print(f'backfilled {backfill_lowered(args.out)} program digests', flush=True)
  if not args.report:
    if args.nice:
      os.nice(args.nice)
    primary, seen = [], set()
    for e in entries:  # Entries whose config equals an earlier one's are not compiled.
      if e.fixed or digests[e.spec] not in seen:
        primary.append(e)
        if not e.fixed:
          seen.add(digests[e.spec])
      else:
        print(f'same   {e.name}: the config of an earlier entry', flush=True)
    pending = list(primary)
    while pending:  # Breadth first: every entry's next compile, round after round.
      still = []
      for e in pending:
        results = {}
        for t in e.ladder:
          rec = load_raw(args.out, e.name, t)
          if rec and is_current(rec, e, digests[e.spec], code, lowerings):
            results[t] = _fits(rec)
        t = next_topology(e, results)
        if t is None:
          continue
        print(f'start  {key(e.name, t)}: {shown_command(e.spec, t, e.name)}', flush=True)
        rec = compile_one(e, t, args.out, (digests[e.spec], code), args.timeout,
                          args.mem_floor_gib * GIB)
        s = summarise(rec)
        print(f'done   {key(e.name, t)} rc={rec["returncode"]} wall={rec["wall_s"]}s '
              f'rss={rec["host_peak_rss_gib"]}GiB ' +
              (f'needs {s["needed_gib"]:.2f} GiB, fits: {s["fits"]}' if s['compiled']
               else 'no report: ' + (rec['killed'] or rec['stderr_tail'][-800:])), flush=True)
        if not rec['killed']:
          still.append(e)
      pending = still
  main_rows, scaling = write_outputs(args.out, ENTRIES, code, digests, lowerings)
  print(main_table(main_rows))
  print(scaling_table(scaling))
  return 0


if __name__ == '__main__':
  sys.exit(main())
