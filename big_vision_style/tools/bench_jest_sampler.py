r"""Benchmark (not a test): JEST's chunked joint sampler, wall time, FLOPs and memory vs the
super-batch size B and vs the number of chunks N, on one device.

  python -m big_vision_style.tools.bench_jest_sampler --out results/bench

Learnability scoring (learner and reference embeddings, d = --dim), filter ratio 0.8 (b = B/5)
for the B sweep, N = 16; the N sweep at the largest B. Memory is XLA's compiled memory analysis
(`temp`: the sampler's working buffers; the inputs are the 4 embedding matrices), set against
the dense B x B float32 score matrix the sampler never forms. FLOPs are XLA's cost analysis
with scan bodies counted per iteration (flops.py). Independent (per-pair) selection over the
same super-batch is timed for comparison. Inputs are random unit vectors: the sampler's cost
does not depend on their values.

Every row also compiles the sampler as it was before the fused update (`unfused_update`
below, patched in for tracing) and times the two interleaved (fused, unfused, fused, ...), so
that the before/after figures come from the same run and the same load; `same_indices` says
whether the two returned the same chunks.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import flops
from big_vision_style.selection import jest
from big_vision_style import sharding


def _embeddings(size: int, dim: int, seed: int) -> jest.Embeddings:
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(2, size, dim)).astype(np.float32)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  return jest.Embeddings(jnp.asarray(x[0]), jnp.asarray(x[1]), jnp.float32(10.0),
                         jnp.float32(-10.0))


def unfused_update(self, state, models, chunk_models, positions, chunk):
  """jest._Accumulated.update before the fused version (git 016547b): masked [B/D, n] blocks,
  jax.nn.softplus / logsumexp, the text side as a transposed product. For the 'before' column."""
  if self.loss == 'sigmoid':
    positive = positions[:, None] == chunk[None, :]
    total = state['sum']
    for sign, e, c in zip(self.signs, models, chunk_models):
      as_image = jest._pair_losses(jest._logits(e, e.image, c.text), positive)
      as_text = jest._pair_losses(jest._logits(e, c.image, e.text).T, positive)
      total = total + sign * jnp.sum(as_image + as_text, axis=1)
    return {'sum': total}
  i2t, t2i = [], []
  for m, (e, c) in enumerate(zip(models, chunk_models)):
    i2t.append(jnp.logaddexp(state['lse_i2t'][m],
                             jax.nn.logsumexp(jest._logits(e, e.image, c.text), axis=1)))
    t2i.append(jnp.logaddexp(state['lse_t2i'][m],
                             jax.nn.logsumexp(jest._logits(e, c.image, e.text), axis=0)))
  return {'lse_i2t': jnp.stack(i2t), 'lse_t2i': jnp.stack(t2i)}


@contextlib.contextmanager
def _unfused():
  fused = jest._Accumulated.update
  jest._Accumulated.update = unfused_update
  try:
    yield
  finally:
    jest._Accumulated.update = fused


def _interleaved_times(fns: dict, reps: int) -> dict:
  """{name: [seconds] * reps}, the calls alternating between the functions (order flipped
  every round), after one warm-up call each (the programs are already compiled)."""
  names = list(fns)
  for name in names:
    jax.block_until_ready(fns[name]())
  times = {name: [] for name in names}
  for i in range(reps):
    for name in (names if i % 2 == 0 else names[::-1]):
      t = time.perf_counter()
      jax.block_until_ready(fns[name]())
      times[name].append(time.perf_counter() - t)
  return times


def _ablated_update(guard_free_softplus: bool, candidate_major_text: bool,
                    diagonal_positives: bool, temperature_on_chunk: bool):
  """The sigmoid update with each of the fused update's changes on or off (ablation)."""
  softplus = jest._softplus if guard_free_softplus else jax.nn.softplus

  def logits(e, rows, cols):  # [len(rows), len(cols)]
    if temperature_on_chunk:
      return rows @ (e.temperature * cols).T + e.bias
    return e.temperature * rows @ cols.T + e.bias

  def update(self, state, models, chunk_models, positions, chunk):
    positive = positions[:, None] == chunk[None, :]
    total = state['sum']
    for sign, e, c in zip(self.signs, models, chunk_models):
      as_image = logits(e, e.image, c.text)
      if candidate_major_text:
        as_text = logits(e, e.text, c.image)
      elif temperature_on_chunk:
        as_text = (c.image @ (e.temperature * e.text).T + e.bias).T
      else:
        as_text = logits(e, c.image, e.text).T
      if diagonal_positives:
        own = e.temperature * jnp.sum(e.image * e.text, -1) + e.bias
        total = total + sign * (jnp.sum(softplus(as_image) + softplus(as_text), axis=1)
                                + jnp.where(jest._members(positions, chunk), -2.0 * own, 0.0))
      else:
        total = total + sign * jnp.sum(softplus(jnp.where(positive, -as_image, as_image))
                                       + softplus(jnp.where(positive, -as_text, as_text)), axis=1)
    return {'sum': total}

  return update


ABLATION = {  # name: (guard-free softplus, candidate-major text, diagonal positives, t on chunk)
    'fused: all four changes': (True, True, True, True),
    'without the guard-free softplus': (False, True, True, True),
    'without the candidate-major text block': (True, False, True, True),
    'without the diagonal-only positives': (True, True, False, True),
    'without the temperature on the chunk side': (True, True, True, False),
    'only the guard-free softplus': (True, False, False, False),
    'only the candidate-major text block': (False, True, False, False),
    'only the diagonal-only positives': (False, False, True, False),
    'unfused (none; the update before)': (False, False, False, False),
}


def ablation(super_batch: int, num_chunks: int, *, dim: int, reps: int, mesh) -> list[dict]:
  """Sigmoid sampler at one size with each change on or off, all timed interleaved."""
  learner, reference = _embeddings(super_batch, dim, 0), _embeddings(super_batch, dim, 1)
  rng = jax.random.key(0)
  compiled = {}
  fused_update = jest._Accumulated.update
  for name, switches in ABLATION.items():
    jest._Accumulated.update = _ablated_update(*switches)
    try:
      fn = jax.jit(functools.partial(jest.sample_joint, num_selected=super_batch // 5,
                                     num_chunks=num_chunks, mesh=mesh, loss='sigmoid'))
      compiled[name] = fn.lower(learner, reference, rng=rng).compile()
    finally:
      jest._Accumulated.update = fused_update
  times = _interleaved_times(
      {k: (lambda c=c: c(learner, reference, rng=rng).indices) for k, c in compiled.items()},
      reps)
  reference_chunks = compiled['unfused (none; the update before)'](learner, reference,
                                                                    rng=rng).chunks
  rows = []
  for name, c in compiled.items():
    rows.append({'variant': name, 'switches': ABLATION[name], 'seconds': min(times[name]),
                 'median_seconds': float(np.median(times[name])),
                 'temp_bytes': int(c.memory_analysis().temp_size_in_bytes),
                 'same_indices': bool(jnp.array_equal(c(learner, reference, rng=rng).chunks,
                                                       reference_chunks))})
  return rows


def _load() -> str:
  try:
    return subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()
  except OSError:
    return ''


def measure(super_batch: int, num_selected: int, num_chunks: int, *, dim: int, loss: str,
            reps: int, mesh) -> dict:
  learner, reference = _embeddings(super_batch, dim, 0), _embeddings(super_batch, dim, 1)
  rng = jax.random.key(0)
  sampler = jax.jit(functools.partial(jest.sample_joint, num_selected=num_selected,
                                      num_chunks=num_chunks, mesh=mesh, loss=loss, gain=1.0))
  t0 = time.perf_counter()
  compiled, cost = flops.compile_and_measure(sampler, learner, reference, rng=rng)
  compile_s = time.perf_counter() - t0
  with _unfused():
    before = jax.jit(functools.partial(jest.sample_joint, num_selected=num_selected,
                                       num_chunks=num_chunks, mesh=mesh, loss=loss, gain=1.0))
    compiled_before, cost_before = flops.compile_and_measure(before, learner, reference, rng=rng)
  memory, memory_before = compiled.memory_analysis(), compiled_before.memory_analysis()
  independent = jax.jit(functools.partial(jest.select_independent, num_selected=num_selected))
  times = _interleaved_times({
      'fused': lambda: compiled(learner, reference, rng=rng).indices,
      'unfused': lambda: compiled_before(learner, reference, rng=rng).indices,
      'independent': lambda: independent(learner, reference, rng=rng)}, reps)
  same = bool(jnp.array_equal(compiled(learner, reference, rng=rng).chunks,
                              compiled_before(learner, reference, rng=rng).chunks))
  return {
      'super_batch': super_batch, 'num_selected': num_selected, 'num_chunks': num_chunks,
      'chunk': num_selected // num_chunks, 'dim': dim, 'loss': loss,
      'seconds': min(times['fused']), 'median_seconds': float(np.median(times['fused'])),
      'unfused_seconds': min(times['unfused']),
      'unfused_median_seconds': float(np.median(times['unfused'])),
      'independent_seconds': min(times['independent']), 'compile_seconds': compile_s,
      'times': times, 'same_indices': same,
      'flops': cost.flops, 'unfused_flops': cost_before.flops,
      'temp_bytes': int(memory.temp_size_in_bytes),
      'unfused_temp_bytes': int(memory_before.temp_size_in_bytes),
      'argument_bytes': int(memory.argument_size_in_bytes),
      'dense_matrix_bytes': 4 * super_batch ** 2,
      'block_bytes': 4 * super_batch * (num_selected // num_chunks),
  }


def _mib(x):
  return f'{x / 2 ** 20:,.1f}'


def _table(rows, title):
  lines = [title, '',
           '| loss | B | b | N | n = b/N | ms fused (best, median) | ms unfused (best, median) | '
           'fused / unfused (best) | same indices | independent ms | GFLOP fused / unfused | '
           'temp MiB fused / unfused | inputs MiB | one [B, n] block MiB | dense B x B MiB |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["loss"]} | {r["super_batch"]} | {r["num_selected"]} | {r["num_chunks"]} | '
        f'{r["chunk"]} | **{1e3 * r["seconds"]:.1f}**, {1e3 * r["median_seconds"]:.1f} | '
        f'{1e3 * r["unfused_seconds"]:.1f}, {1e3 * r["unfused_median_seconds"]:.1f} | '
        f'{r["seconds"] / r["unfused_seconds"]:.2f}x | {"yes" if r["same_indices"] else "NO"} | '
        f'{1e3 * r["independent_seconds"]:.2f} | '
        f'{r["flops"] / 1e9:.2f} / {r["unfused_flops"] / 1e9:.2f} | '
        f'**{_mib(r["temp_bytes"])}** / {_mib(r["unfused_temp_bytes"])} | '
        f'{_mib(r["argument_bytes"])} | {_mib(r["block_bytes"])} | '
        f'{_mib(r["dense_matrix_bytes"])} |')
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='results/bench')
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--dim', type=int, default=64)
  parser.add_argument('--sizes', default='1280,2560,5120,10240,20480')
  parser.add_argument('--chunks', default='1,2,4,8,16,32,64')
  parser.add_argument('--no-ablation', dest='ablation', action='store_false',
                      help='Skip the one-change-at-a-time table.')
  args = parser.parse_args()
  mesh = sharding.make_mesh(1)
  sizes = [int(s) for s in args.sizes.split(',')]
  t0 = time.time()
  load_before = _load()
  by_size = []
  for loss in ('sigmoid', 'softmax'):
    for size in sizes:
      by_size.append(measure(size, size // 5, 16, dim=args.dim, loss=loss, reps=args.reps,
                             mesh=mesh))
      r = by_size[-1]
      print(f'{loss} B={size}: {1e3 * r["seconds"]:.1f} ms (unfused '
            f'{1e3 * r["unfused_seconds"]:.1f}), temp {_mib(r["temp_bytes"])} MiB (unfused '
            f'{_mib(r["unfused_temp_bytes"])}), same indices {r["same_indices"]}', flush=True)
  by_chunks = []
  for n in [int(c) for c in args.chunks.split(',')]:
    by_chunks.append(measure(sizes[-1], sizes[-1] // 5, n, dim=args.dim, loss='sigmoid',
                             reps=args.reps, mesh=mesh))
    r = by_chunks[-1]
    print(f'N={n}: {1e3 * r["seconds"]:.1f} ms (unfused {1e3 * r["unfused_seconds"]:.1f}), '
          f'temp {_mib(r["temp_bytes"])} MiB (unfused {_mib(r["unfused_temp_bytes"])})',
          flush=True)
  ablation_rows = []
  if args.ablation:
    ablation_rows = ablation(sizes[-1], 16, dim=args.dim, reps=args.reps, mesh=mesh)
    for r in ablation_rows:
      print(f'{r["variant"]}: {1e3 * r["seconds"]:.1f} ms, temp {_mib(r["temp_bytes"])} MiB',
            flush=True)
  device = jax.devices()[0]
  meta = {'device': f'{device.platform}:{device.device_kind}', 'num_devices': 1,
          'host': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
          'jax': jax.__version__, 'dim': args.dim, 'reps': args.reps,
          'total_seconds': time.time() - t0, 'load_before': load_before,
          'load_after': _load()}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'jest_sampler.json'), 'w') as f:
    json.dump({'meta': meta, 'by_super_batch': by_size, 'by_num_chunks': by_chunks,
               'ablation': ablation_rows}, f, indent=1)
  lines = ['# JEST chunked sampler: time and memory', '',
           f'`python -m big_vision_style.tools.bench_jest_sampler --out {args.out}` on one '
           f'{meta["device"]} device ({meta["cpu_count"]} cores, shared), jax {meta["jax"]}, '
           f'embedding dim {args.dim}, learnability scores (two models), {args.reps} calls of each '
           'program, interleaved.', '',
           f'Load before: `{meta["load_before"]}`; after: `{meta["load_after"]}`.', '',
           '*fused* is the sampler as it is; *unfused* the update it replaced, compiled and timed '
           'in the same run. temp is XLA\'s compiled working memory of the sampler (the inputs, '
           '4 [B, d] embedding matrices, are listed apart); the dense B x B matrix is what a '
           'naive implementation would hold per model.', '']
  lines += _table(by_size, '## vs super-batch size (f = 0.8, N = 16)')
  lines += [''] + _table(by_chunks, f'## vs number of chunks (B = {sizes[-1]}, b = '
                                    f'{sizes[-1] // 5}, sigmoid)')
  if ablation_rows:
    base = ablation_rows[-1]['seconds']
    lines += ['', f'## One change at a time (sigmoid, B = {sizes[-1]}, b = {sizes[-1] // 5}, '
              'N = 16)', '',
              '| variant | ms (best, median) | vs unfused (best) | temp MiB | same indices |',
              '|---|---|---|---|---|']
    for r in ablation_rows:
      lines.append(f'| {r["variant"]} | {1e3 * r["seconds"]:.1f}, '
                   f'{1e3 * r["median_seconds"]:.1f} | {r["seconds"] / base:.2f}x | '
                   f'{_mib(r["temp_bytes"])} | {"yes" if r["same_indices"] else "NO"} |')
  lines += ['', 'Why it is faster: the unfused update wrote each [B, n] block out and read it '
            'back several times (the logits, the masked sign flip, softplus, the sum), and the '
            'text side\'s transposed product [n, d] @ [d, B] followed by a transpose kept XLA '
            'from fusing the matmul with its consumers. With the softplus free of '
            'jax.nn.softplus\'s isnan guard, both blocks computed candidate-major '
            '([B, d] @ [d, n]), the positive pairs corrected on the chunk members only and the '
            'temperature applied to the chunk\'s rows (scaling the candidates\' rows is hoisted '
            'out of the loop as [B, d] copies), XLA fuses matmul, softplus and row sum: no block '
            'is written and the working memory is a few [B] vectors. For softmax the '
            'log-sum-exp is written without jax.nn.logsumexp\'s isfinite guard and the bias is '
            'added to the row result. See results/bench/README.md for the reading of the numbers.']
  with open(os.path.join(args.out, 'jest_sampler.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print(f'Wrote {args.out}/jest_sampler.md in {meta["total_seconds"]:.0f}s.')


if __name__ == '__main__':
  main()
