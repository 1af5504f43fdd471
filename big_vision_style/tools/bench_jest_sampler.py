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
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
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


def _best_time(fn, reps: int) -> float:
  jax.block_until_ready(fn())  # Warm-up (the compiled program is already built).
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
  return best


def measure(super_batch: int, num_selected: int, num_chunks: int, *, dim: int, loss: str,
            reps: int, mesh) -> dict:
  learner, reference = _embeddings(super_batch, dim, 0), _embeddings(super_batch, dim, 1)
  rng = jax.random.key(0)
  sampler = jax.jit(functools.partial(jest.sample_joint, num_selected=num_selected,
                                      num_chunks=num_chunks, mesh=mesh, loss=loss, gain=1.0))
  t0 = time.perf_counter()
  compiled, cost = flops.compile_and_measure(sampler, learner, reference, rng=rng)
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  seconds = _best_time(lambda: compiled(learner, reference, rng=rng).indices, reps)
  independent = jax.jit(functools.partial(jest.select_independent, num_selected=num_selected))
  independent_s = _best_time(lambda: independent(learner, reference, rng=rng), reps)
  return {
      'super_batch': super_batch, 'num_selected': num_selected, 'num_chunks': num_chunks,
      'chunk': num_selected // num_chunks, 'dim': dim, 'loss': loss,
      'seconds': seconds, 'independent_seconds': independent_s, 'compile_seconds': compile_s,
      'flops': cost.flops,
      'temp_bytes': int(memory.temp_size_in_bytes),
      'argument_bytes': int(memory.argument_size_in_bytes),
      'dense_matrix_bytes': 4 * super_batch ** 2,
      'block_bytes': 4 * super_batch * (num_selected // num_chunks),
  }


def _mib(x):
  return f'{x / 2 ** 20:,.1f}'


def _table(rows, title):
  lines = [title, '',
           '| loss | B | b | N | n = b/N | ms / call | independent ms | GFLOP | temp MiB | '
           'inputs MiB | one [B, n] block MiB | dense B x B MiB | temp / dense |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["loss"]} | {r["super_batch"]} | {r["num_selected"]} | {r["num_chunks"]} | '
        f'{r["chunk"]} | {1e3 * r["seconds"]:.1f} | {1e3 * r["independent_seconds"]:.2f} | '
        f'{r["flops"] / 1e9:.2f} | {_mib(r["temp_bytes"])} | {_mib(r["argument_bytes"])} | '
        f'{_mib(r["block_bytes"])} | {_mib(r["dense_matrix_bytes"])} | '
        f'{r["temp_bytes"] / r["dense_matrix_bytes"]:.2%} |')
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='results/bench')
  parser.add_argument('--reps', type=int, default=3)
  parser.add_argument('--dim', type=int, default=64)
  parser.add_argument('--sizes', default='1280,2560,5120,10240,20480')
  parser.add_argument('--chunks', default='1,2,4,8,16,32,64')
  args = parser.parse_args()
  mesh = sharding.make_mesh(1)
  sizes = [int(s) for s in args.sizes.split(',')]
  t0 = time.time()
  by_size = []
  for loss in ('sigmoid', 'softmax'):
    for size in sizes:
      by_size.append(measure(size, size // 5, 16, dim=args.dim, loss=loss, reps=args.reps,
                             mesh=mesh))
      r = by_size[-1]
      print(f'{loss} B={size}: {1e3 * r["seconds"]:.1f} ms, temp {_mib(r["temp_bytes"])} MiB '
            f'(dense {_mib(r["dense_matrix_bytes"])} MiB)', flush=True)
  by_chunks = []
  for n in [int(c) for c in args.chunks.split(',')]:
    by_chunks.append(measure(sizes[-1], sizes[-1] // 5, n, dim=args.dim, loss='sigmoid',
                             reps=args.reps, mesh=mesh))
    r = by_chunks[-1]
    print(f'N={n}: {1e3 * r["seconds"]:.1f} ms, temp {_mib(r["temp_bytes"])} MiB', flush=True)
  device = jax.devices()[0]
  meta = {'device': f'{device.platform}:{device.device_kind}', 'num_devices': 1,
          'host': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
          'jax': jax.__version__, 'dim': args.dim, 'reps': args.reps,
          'total_seconds': time.time() - t0}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'jest_sampler.json'), 'w') as f:
    json.dump({'meta': meta, 'by_super_batch': by_size, 'by_num_chunks': by_chunks}, f,
              indent=1)
  lines = ['# JEST chunked sampler: time and memory', '',
           f'`python -m big_vision_style.tools.bench_jest_sampler --out {args.out}` on one '
           f'{meta["device"]} device ({meta["cpu_count"]} cores, shared), jax {meta["jax"]}, '
           f'embedding dim {args.dim}, learnability scores (two models), best of {args.reps}.',
           '', 'temp is XLA\'s compiled working memory of the sampler (the inputs, 4 [B, d] '
           'embedding matrices, are listed apart); the dense B x B matrix is what a naive '
           'implementation would hold per model.', '']
  lines += _table(by_size, '## vs super-batch size (f = 0.8, N = 16)')
  lines += [''] + _table(by_chunks, f'## vs number of chunks (B = {sizes[-1]}, b = '
                                    f'{sizes[-1] // 5}, sigmoid)')
  with open(os.path.join(args.out, 'jest_sampler.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print(f'Wrote {args.out}/jest_sampler.md in {meta["total_seconds"]:.0f}s.')


if __name__ == '__main__':
  main()
