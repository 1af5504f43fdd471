r"""Benchmark (not a test): the cost of online batch selection per step, as a fraction of the
learner's update, in wall time and in FLOPs (XLA cost analysis), with the reference scored live
and with cached reference scores, at filter ratios 0.5 and 0.8.

  python -m big_vision_style.tools.bench_selection --out results/bench

Uses the local Bad Students models (experiments/bad_students/common.py): learnability policy,
online actor ViT-mu/7, reference ViT-mu/7, learner batch b = 128.
"""
from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import flops
from big_vision_style import input_pipeline
from big_vision_style import methods
from big_vision_style import selection
from big_vision_style import sharding
from big_vision_style.tools import timing
from experiments.bad_students import policy_comparison


def measure(filter_ratio: float, reference: str, reps: int, mesh) -> dict:
  policy = 'uniform' if reference == 'none' else 'learnability'
  config = policy_comparison.get_config(
      f'policy={policy},filter_ratio={filter_ratio},reference='
      f'{"cached" if reference == "cached" else "pretrained"}')
  b = config.input.batch_size
  big = selection.super_batch_size(b, filter_ratio)
  example = {'image': jax.ShapeDtypeStruct((28, 28, 1), jnp.float32),
             'label': jax.ShapeDtypeStruct((), jnp.int32),
             'id': jax.ShapeDtypeStruct((), jnp.int32),
             'label_flipped': jax.ShapeDtypeStruct((), jnp.bool_)}
  if reference == 'cached':
    example['reference_loss'] = jax.ShapeDtypeStruct((), jnp.float32)
  # Abstract build: no reference run on disk; a random reference is as costly as a trained one.
  ctx, built = methods.standalone(config, mesh, example, num_classes=10, total_steps=1000)
  state = jax.jit(built.init, out_shardings=ctx.replicated)(jax.random.key(0))
  frozen = {}
  if 'reference' in built.frozen:
    frozen['reference'] = jax.jit(lambda: built.models['reference'].init(
        jax.random.key(9), jnp.zeros((1, 28, 28, 1)))['params'], out_shardings=ctx.replicated)()
  data = input_pipeline.data_sharding(mesh)
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(big, 28, 28, 1)).astype(np.float32),
           'label': (np.arange(big) % 10).astype(np.int32),
           'id': np.arange(big).astype(np.int32),
           'label_flipped': np.zeros(big, bool)}
  if reference == 'cached':
    batch['reference_loss'] = rng.uniform(size=big).astype(np.float32)
  batch = jax.device_put(batch, data)
  phase = built.phases[0]
  step = jnp.asarray(1, jnp.int32)
  compiled, cost = flops.compile_and_measure(methods.jit_step(phase, ctx), state, frozen, batch,
                                             step)
  categories = phase.costs(cost.flops, state, frozen)
  holder = {'state': state}

  def run():
    holder['state'], m = compiled(holder['state'], frozen, batch, step)
    jax.block_until_ready(m)

  return {'filter_ratio': filter_ratio, 'reference': reference, 'batch': b, 'super_batch': big,
          'seconds_per_step': timing.best_time(run, reps), 'flops_per_step': cost.flops,
          'flops_by_category': categories}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='results/bench')
  parser.add_argument('--reps', type=int, default=10)
  args = parser.parse_args()
  mesh = sharding.make_mesh()
  base = measure(0.0, 'none', args.reps, mesh)
  print(f'learner-only step: {1e3 * base["seconds_per_step"]:.1f} ms, '
        f'{base["flops_per_step"]:.4g} FLOPs', flush=True)
  rows = []
  for f in (0.5, 0.8):
    for reference in ('live', 'cached'):
      r = measure(f, reference, args.reps, mesh)
      r['time_overhead'] = r['seconds_per_step'] / base['seconds_per_step'] - 1
      r['flops_overhead'] = r['flops_per_step'] / base['flops_per_step'] - 1
      print(f'f={f} reference={reference}: {1e3 * r["seconds_per_step"]:.1f} ms '
            f'(+{100 * r["time_overhead"]:.1f}%), {r["flops_per_step"]:.4g} FLOPs '
            f'(+{100 * r["flops_overhead"]:.1f}%)', flush=True)
      rows.append(r)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'selection_overhead.json'), 'w') as fh:
    json.dump({'devices': len(jax.devices()), 'learner_only': base, 'selection': rows}, fh,
              indent=1)
  lines = [f'Learner-only update (b = {base["batch"]}): {1e3 * base["seconds_per_step"]:.1f} ms, '
           f'{base["flops_per_step"] / 1e9:.2f} GFLOP per step.', '',
           '| f | B | reference | ms/step | time overhead | GFLOP/step | FLOP overhead | '
           'scoring (actor fwd + selection) | reference scoring | actor train |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    c = r['flops_by_category']
    lines.append(f'| {r["filter_ratio"]} | {r["super_batch"]} | {r["reference"]} | '
                 f'{1e3 * r["seconds_per_step"]:.1f} | {100 * r["time_overhead"]:+.1f}% | '
                 f'{r["flops_per_step"] / 1e9:.2f} | {100 * r["flops_overhead"]:+.1f}% | '
                 f'{c["scoring"] / 1e9:.3f} | {c["reference_scoring"] / 1e9:.3f} | '
                 f'{c["actor_train"] / 1e9:.3f} |')
  with open(os.path.join(args.out, 'selection_overhead.md'), 'w') as fh:
    fh.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  main()
