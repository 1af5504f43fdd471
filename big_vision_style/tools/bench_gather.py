r"""Benchmark (not a test): per-chip bytes moved by `selection.gather`, before and after the
windowed ppermute path, and how often an i.i.d. selection needs the fallback.

  python -m big_vision_style.tools.bench_gather --out results/bench

Three compiled programs, each the gather alone (`jax.jit` of it, abstract sharded inputs):
  old       the psum_scatter gather as it was (`batch._gather(path='old')`)
  new       `batch.gather`: the windowed ppermutes and the fallback, the two branches of a cond
  windowed  the common path alone, no cond
read with hlo_stats (collectives of the compiled, partitioned program; bytes per chip with a
bandwidth-optimal algorithm, see hlo_stats.py). `new` is reported per branch: the common path
is what a step moves unless the fallback is taken.

Scales: (a) the local JEST-like size, b = 128, f = 0.8 (B = 640), 32x32x3 f32 images, on 8
simulated CPU devices and, with libtpu, compiled for 8 v5p chips (v5p:2x2x2); (b) the JEST
paper's, b = 32768, f = 0.8 (B = 163840), 256x256x3 f32 images, compiled with tools/aot for
v5p:8x8x4 (256 chips) on this host. Each example also carries an int32 label. The fallback rate
is measured on --trials uniformly random b-subsets of B (what any position-blind selection of an
i.i.d.-ordered super-batch is), with numpy on the indices alone.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

if __name__ == '__main__':  # 8 simulated CPU devices, before jax is imported.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8').strip()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from big_vision_style import hlo_stats
from big_vision_style import sharding
from big_vision_style.selection import batch as selection_batch
from big_vision_style.tools import aot

GIB, MIB = 2**30, 2**20
PROGRAMS = ('old', 'new', 'windowed')


def _abstract(mesh, total, num_selected, image):
  data = NamedSharding(mesh, P('data'))
  batch = {'image': jax.ShapeDtypeStruct((total,) + image, jnp.float32, sharding=data),
           'label': jax.ShapeDtypeStruct((total,), jnp.int32, sharding=data)}
  idx = jax.ShapeDtypeStruct((num_selected,), jnp.int32, sharding=NamedSharding(mesh, P()))
  return batch, idx


def _program(which, mesh, total, num_selected, image):
  # pylint: disable=protected-access
  if which in ('old', 'windowed'):
    fn = lambda x, i: selection_batch._gather(x, i, mesh, path=which)[0]
  else:
    fn = lambda x, i: selection_batch.gather(x, i, mesh)
  return aot.StepProgram(f'gather_{which}', jax.jit(fn),
                         _abstract(mesh, total, num_selected, image))


def _path_of(op: dict) -> str:
  """Which path of the gather a collective belongs to: its jax name scope when the compiler kept
  it, else its branch (lax.cond(fallback, fallback_fn, windowed_fn): branch 1 is the fallback)."""
  if 'gather_fallback' in op['op_name']:
    return 'fallback'
  if 'gather_windowed' in op['op_name']:
    return 'windowed'
  branch = op.get('branch', '')
  if branch.endswith((':1', ':true')):
    return 'fallback'
  if branch.endswith((':0', ':false')):
    return 'windowed'
  return 'always'


def _summarise(ops: list[dict], which: str) -> dict:
  by_path = {}
  for op in ops:
    path = _path_of(op) if which == 'new' else '-'
    s = by_path.setdefault(path, {'moved_bytes_per_chip': 0.0, 'kinds': {}})
    s['moved_bytes_per_chip'] += op['moved_bytes_per_chip'] * op['executions']
    kind = s['kinds'].setdefault(op['kind'], {'count': 0, 'raw_bytes_max': 0.0})
    kind['count'] += 1
    kind['raw_bytes_max'] = max(kind['raw_bytes_max'], op['raw_bytes'])
  return by_path


def measure_cpu(total, num_selected, image, reps):
  mesh = sharding.make_mesh()
  out = {}
  rng = np.random.default_rng(0)
  data = {'image': rng.normal(size=(total,) + image).astype(np.float32),
          'label': rng.integers(0, 1000, total).astype(np.int32)}
  data = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, P('data'))), data)
  idx = jnp.asarray(np.sort(rng.choice(total, num_selected, replace=False)), jnp.int32)
  for which in PROGRAMS:
    program = _program(which, mesh, total, num_selected, image)
    t0 = time.perf_counter()
    compiled = program.fn.lower(*program.args).compile()
    compile_s = time.perf_counter() - t0
    stats = hlo_stats.collectives(compiled).as_dict()
    jax.block_until_ready(compiled(data, idx))
    best = float('inf')
    for _ in range(reps):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(data, idx))
      best = min(best, time.perf_counter() - t0)
    out[which] = {'by_path': _summarise(stats['ops'], which), 'compile_s': compile_s,
                  'seconds': best, 'temp_bytes': compiled.memory_analysis().temp_size_in_bytes}
  return out


def measure_tpu(topology, total, num_selected, image):
  out = {}
  for which in PROGRAMS:
    report = aot.compile_on(topology, lambda mesh, w=which: _program(w, mesh, total,
                                                                    num_selected, image))
    ops = report.collectives['ops'] if report.collectives else None
    out[which] = {'by_path': None if ops is None else _summarise(ops, which),
                  'compile_s': report.compile_s, 'fits': report.fits,
                  'needed_bytes': report.needed_bytes,
                  'temp_bytes': (report.memory or {}).get('temp_bytes')}
  return out


def fallback_rate(total, num_selected, n, trials, seed=0):
  """Fraction of uniformly random b-subsets of B whose farthest row is more than W devices from
  its destination, and the distribution of that distance."""
  w = selection_batch.gather_window(total, num_selected, n)
  rng = np.random.default_rng(seed)
  dest = np.arange(num_selected) // (num_selected // n)
  shifts = np.empty(trials, np.int64)
  excess = np.empty(trials)
  for t in range(trials):
    idx = np.sort(rng.permutation(total)[:num_selected])
    shifts[t] = np.abs(dest - idx // (total // n)).max()
    excess[t] = np.abs(np.arange(num_selected) - idx * num_selected / total).max()
  p = num_selected / total
  sigma = 0.5 * math.sqrt(num_selected * (1 - p) * total / (total - 1))
  x = w * (num_selected / n) / (2 * sigma)
  bound = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 20))
  values, counts = np.unique(shifts, return_counts=True)
  return {'B': total, 'b': num_selected, 'n': n, 'window': w, 'trials': trials,
          'fallbacks': int((shifts > w).sum()) if w < n - 1 else 0,
          'rate': float((shifts > w).mean()) if w < n - 1 else 0.0,
          'max_shift_histogram': {int(v): int(c) for v, c in zip(values, counts)},
          'sigma_rows': sigma, 'rows_per_device': num_selected // n,
          'max_excess_rows_mean': float(excess.mean()), 'max_excess_rows_max': float(excess.max()),
          'bridge_estimate': max(bound, 0.0)}


def _row_bytes(image):
  return math.prod(image) * 4 + 4


def _fmt(b):
  return f'{b / GIB:.3f} GiB' if b >= GIB / 4 else f'{b / MIB:.2f} MiB'


def _table(name, result, num_selected, n, image):
  row = _row_bytes(image)
  m = num_selected // n
  w = result['window']
  chunk = selection_batch._fallback_chunk(m, n, w)  # pylint: disable=protected-access
  lines = [f'### {name}', '',
           f'b = {num_selected}, B = {result["B"]}, n = {n}, m = b/n = {m}, W = {w}; one row = '
           f'{row} bytes (f32 {"x".join(map(str, image))} image + int32 label), whole selected '
           f'batch = {_fmt(num_selected * row)}; the fallback reduce-scatters it in '
           f'{m // chunk} step(s) of {n * chunk} rows.', '',
           '| program | path | collectives (count, largest buffer per chip) | moved per chip |',
           '|---|---|---|---:|']
  for which in PROGRAMS:
    for path, s in sorted((result['programs'][which]['by_path'] or {}).items()):
      kinds = ', '.join(f'{k} x{v["count"]} ({_fmt(v["raw_bytes_max"])})'
                        for k, v in sorted(s['kinds'].items()))
      label = {'old': 'old (psum_scatter)', 'new': 'new (gather)',
               'windowed': 'common path alone'}[which]
      lines.append(f'| {label} | {path} | {kinds} | {_fmt(s["moved_bytes_per_chip"])} |')
  old = sum(s['moved_bytes_per_chip'] for s in result['programs']['old']['by_path'].values())
  new = sum(s['moved_bytes_per_chip'] for s in result['programs']['windowed']['by_path'].values())
  lines += ['', f'Common path: 2 W m = {2 * w * m} rows per chip = {_fmt(2 * w * m * row)} '
                f'(measured {_fmt(new)}); old: {_fmt(old)}, {old / new:.1f}x more.', '']
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default='results/bench')
  parser.add_argument('--trials', type=int, default=1000)
  parser.add_argument('--reps', type=int, default=20)
  parser.add_argument('--no_tpu', action='store_true', help='skip the libtpu compilations')
  args = parser.parse_args(argv)
  if jax.device_count() != 8:
    sys.exit('run as `python -m big_vision_style.tools.bench_gather` (8 simulated devices)')
  t_start = time.time()
  local = dict(total=640, num_selected=128, image=(32, 32, 3))
  paper = dict(total=163840, num_selected=32768, image=(256, 256, 3))
  results = {}

  results['local_cpu8'] = dict(B=local['total'], b=local['num_selected'], n=8,
                               window=selection_batch.gather_window(640, 128, 8),
                               device='8 simulated XLA CPU devices',
                               programs=measure_cpu(**local, reps=args.reps))
  print('local cpu8 done', flush=True)
  if not args.no_tpu and aot.libtpu_available():
    results['local_v5p8'] = dict(B=640, b=128, n=8, window=results['local_cpu8']['window'],
                                 device='v5p:2x2x2 (8 chips), compiled with libtpu',
                                 programs=measure_tpu('v5p:2x2x2', **local))
    print('local v5p:2x2x2 done', flush=True)
    results['paper_v5p256'] = dict(B=paper['total'], b=paper['num_selected'], n=256,
                                   window=selection_batch.gather_window(163840, 32768, 256),
                                   device='v5p:8x8x4 (256 chips), compiled with libtpu',
                                   programs=measure_tpu('v5p:8x8x4', **paper))
    print('paper v5p:8x8x4 done', flush=True)
  rates = {'paper': fallback_rate(163840, 32768, 256, args.trials),
           'local': fallback_rate(640, 128, 8, args.trials)}
  print('fallback rates', {k: v['rate'] for k, v in rates.items()}, flush=True)

  meta = {'command': 'python -m big_vision_style.tools.bench_gather --out ' + args.out +
                     (f' --trials {args.trials}' if args.trials != 1000 else ''),
          'host': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
          'jax': jax.__version__, 'total_seconds': time.time() - t_start}
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    meta['libtpu'] = metadata.version('libtpu')
  except Exception:  # pylint: disable=broad-except
    meta['libtpu'] = None
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'gather.json'), 'w') as f:
    json.dump({'meta': meta, 'results': results, 'fallback_rates': rates}, f, indent=1)

  lines = ['# selection.gather: bytes moved per chip, old (psum_scatter) vs new (windowed)', '',
           f'`{meta["command"]}` (jax {meta["jax"]}, libtpu {meta["libtpu"]}, '
           f'{meta["cpu_count"]}-core host; TPU programs compiled here, nothing ran on a TPU).',
           '', 'Each program is the gather alone. Bytes are hlo_stats\' per-chip moved bytes '
           '(bandwidth-optimal: an all-reduce of S moves 2 (n-1)/n S, a reduce-scatter (n-1)/n '
           'S, a collective-permute S; ops in a loop times its trip count). `new` holds both '
           'branches of a cond: `windowed` is what a step moves, `fallback` only when an index '
           'set needs it (rate below).', '']
  for key, title in (('local_cpu8', '(a) Local JEST-like size, 8 simulated CPU devices'),
                     ('local_v5p8', '(a) Local JEST-like size, v5p:2x2x2 (8 chips)'),
                     ('paper_v5p256', '(b) JEST paper scale, v5p:8x8x4 (256 chips)')):
    if key in results:
      lines += _table(title, results[key], results[key]['b'], results[key]['n'],
                      local['image'] if key.startswith('local') else paper['image'])
  cpu = results['local_cpu8']['programs']
  lines += ['Wall time on the 8 simulated CPU devices (2 cores shared with other jobs, so '
            'noise of tens of percent; simulated devices copy memory, no interconnect; best of '
            f'{args.reps}): old {1e3 * cpu["old"]["seconds"]:.2f} ms, new '
            f'{1e3 * cpu["new"]["seconds"]:.2f} ms, common path alone '
            f'{1e3 * cpu["windowed"]["seconds"]:.2f} ms. Temp memory: old '
            f'{_fmt(cpu["old"]["temp_bytes"])}, new {_fmt(cpu["new"]["temp_bytes"])}.', '']
  if 'paper_v5p256' in results:
    tpu = results['paper_v5p256']['programs']
    lines += ['Paper scale, per chip, as compiled: needed memory old '
              f'{_fmt(tpu["old"]["needed_bytes"])}, new {_fmt(tpu["new"]["needed_bytes"])} '
              f'(the old gather holds a [b, ...] buffer per leaf, the new fallback a chunk of '
              f'it), common path alone '
              f'{_fmt(tpu["windowed"]["needed_bytes"])}; compile {tpu["old"]["compile_s"]:.1f} / '
              f'{tpu["new"]["compile_s"]:.1f} / {tpu["windowed"]["compile_s"]:.1f} s.', '']
  lines += ['## Fallback rate over uniformly random selections', '',
            '| scale | B | b | n | W | trials | fallbacks | farthest shift (devices): count | '
            'bridge estimate |', '|---|---:|---:|---:|---:|---:|---:|---|---:|']
  for key, r in rates.items():
    hist = ', '.join(f'{k}: {v}' for k, v in r['max_shift_histogram'].items())
    lines.append(f'| {key} | {r["B"]} | {r["b"]} | {r["n"]} | {r["window"]} | {r["trials"]} | '
                 f'{r["fallbacks"]} | {hist} | {r["bridge_estimate"]:.1e} |')
  lines += ['', 'The bridge estimate is P(max excess > W m rows) for a Brownian bridge of the '
            'selection\'s count imbalance (sigma = '
            f'{rates["paper"]["sigma_rows"]:.1f} rows at paper scale, m = '
            f'{rates["paper"]["rows_per_device"]}), an upper bound on the rate up to the '
            'discreteness of small b.', '']
  with open(os.path.join(args.out, 'gather.md'), 'w') as f:
    f.write('\n'.join(lines))
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
