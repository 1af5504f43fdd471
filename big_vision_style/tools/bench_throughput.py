r"""Benchmark (not a test): train-step throughput and model FLOP utilisation (MFU) against this
machine's matmul peak measured in the same run, and the Grain pipeline's throughput against
what the trainer consumes.

  python -m big_vision_style.tools.bench_throughput --out results/bench

Writes throughput.json (raw numbers) and throughput.md (table). FLOPs per step are XLA's cost
analysis of the very executable that is timed (see flops.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import datasets
from big_vision_style import flops
from big_vision_style import input_pipeline
from big_vision_style import methods
from big_vision_style import models
from big_vision_style import preprocess
from big_vision_style import sharding
from big_vision_style.tools import timing
from experiments.baseline import fashion_mnist as baseline_config


def matmul_peak(n: int = 4096, reps: int = 5) -> dict:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul).lower(a, b).compile()
  cost = flops.measure_compiled(mm).flops
  dt = timing.best_time(lambda: mm(a, b).block_until_ready(), reps)
  return {'n': n, 'flops': cost, 'analytic_flops': 2.0 * n ** 3, 'seconds': dt,
          'gflops_per_s': cost / dt / 1e9}


def train_step_throughput(model_kwargs: dict, batch_size: int, reps: int, mesh) -> dict:
  config = baseline_config.get_config()
  with config.unlocked():
    config.model = dict(model_kwargs)
    config.input.batch_size = batch_size
  example = {'image': jax.ShapeDtypeStruct((28, 28, 1), jnp.float32),
             'label': jax.ShapeDtypeStruct((), jnp.int32),
             'id': jax.ShapeDtypeStruct((), jnp.int64)}
  ctx, built = methods.standalone(config, mesh, example, num_classes=10, total_steps=10_000)
  state = jax.jit(built.init, out_shardings=ctx.replicated)(jax.random.key(0))
  params = state['learner']['params']
  data = input_pipeline.data_sharding(mesh)
  batch = {'image': jax.device_put(np.random.randn(batch_size, 28, 28, 1).astype(np.float32),
                                   data),
           'label': jax.device_put(np.arange(batch_size, dtype=np.int32) % 10, data),
           'id': jax.device_put(np.arange(batch_size, dtype=np.int64), data)}
  step = jnp.asarray(1, jnp.int32)
  compiled, cost = flops.compile_and_measure(methods.jit_step(built.phases[0], ctx), state, {},
                                             batch, step)
  holder = {'state': state}

  def run():
    holder['state'], m = compiled(holder['state'], {}, batch, step)
    jax.block_until_ready(m)

  dt = timing.best_time(run, reps)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  analytic = 3 * batch_size * models.get_model('vit').analytic_forward_flops(
      image_size=28, num_classes=10, channels=1, **model_kwargs)
  return {'model': model_kwargs, 'batch_size': batch_size, 'params': int(num_params),
          'flops_per_step': cost.flops, 'analytic_flops_per_step': analytic,
          'seconds_per_step': dt, 'examples_per_s': batch_size / dt,
          'gflops_per_s': cost.flops / dt / 1e9}


def pipeline_throughput(batch_size: int, num_batches: int, mesh) -> dict:
  config = baseline_config.get_config()
  source = datasets.get_source(config.data, 'train')
  pp = preprocess.make(augment=tuple(config.input.augment), **config.input.pp)
  it = input_pipeline.make_train_iterator(source, global_batch_size=batch_size, seed=0,
                                          preprocess_fn=pp,
                                          num_threads=config.input.num_threads)
  jax.block_until_ready(input_pipeline.to_global(next(it), mesh))
  t = time.perf_counter()
  for _ in range(num_batches):
    jax.block_until_ready(input_pipeline.to_global(next(it), mesh))
  dt = time.perf_counter() - t
  return {'batch_size': batch_size, 'augment': list(config.input.augment),
          'num_threads': config.input.num_threads, 'examples_per_s': num_batches * batch_size / dt}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='results/bench')
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--quick', action='store_true', help='Fewer models and reps (smoke).')
  args = parser.parse_args()
  mesh = sharding.make_mesh()
  peak = matmul_peak(reps=args.reps)
  print(f'matmul peak: {peak["gflops_per_s"]:.1f} GFLOP/s (f32, {peak["n"]}^3)', flush=True)
  learner = dict(baseline_config.get_config().model)
  candidates = [(learner, 256)] if args.quick else [
      (learner, 256), (learner, 512), ({**learner, 'depth': 12}, 256),
      ({'variant': 'S/7', 'depth': 4}, 256), ({'variant': 'S/4', 'depth': 4}, 128),
      ({'variant': 'mu/7'}, 256)]
  steps = []
  for kwargs, bs in candidates:
    r = train_step_throughput(kwargs, bs, 2 if args.quick else args.reps, mesh)
    r['mfu'] = r['gflops_per_s'] / peak['gflops_per_s']
    r['is_learner'] = kwargs == learner
    print(f'{kwargs} bs={bs}: {r["examples_per_s"]:.0f} ex/s, {r["gflops_per_s"]:.1f} GFLOP/s, '
          f'MFU {100 * r["mfu"]:.1f}% (XLA/analytic FLOPs '
          f'{r["flops_per_step"] / r["analytic_flops_per_step"]:.3f})', flush=True)
    steps.append(r)
  pipe = pipeline_throughput(256, 20 if args.quick else 100, mesh)
  learner_rate = steps[0]['examples_per_s']
  pipe['ratio_to_learner_consumption'] = pipe['examples_per_s'] / learner_rate
  print(f'grain pipeline: {pipe["examples_per_s"]:.0f} ex/s = '
        f'{pipe["ratio_to_learner_consumption"]:.1f}x what the learner consumes', flush=True)
  out = {'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                     'devices': [str(d) for d in jax.devices()], 'jax': jax.__version__},
         'matmul_peak': peak, 'train_steps': steps, 'pipeline': pipe}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'throughput.json'), 'w') as f:
    json.dump(out, f, indent=1)
  lines = ['| model | batch | params | MFLOP/step (XLA) | XLA/analytic | ex/s | GFLOP/s | MFU |',
           '|---|---|---|---|---|---|---|---|']
  for r in steps:
    name = ', '.join(f'{k}={v}' for k, v in r['model'].items())
    lines.append(f'| {name}{" (learner)" if r["is_learner"] else ""} | {r["batch_size"]} | '
                 f'{r["params"] / 1e6:.2f}M | {r["flops_per_step"] / 1e6:.0f} | '
                 f'{r["flops_per_step"] / r["analytic_flops_per_step"]:.3f} | '
                 f'{r["examples_per_s"]:.0f} | {r["gflops_per_s"]:.1f} | '
                 f'{100 * r["mfu"]:.1f}% |')
  with open(os.path.join(args.out, 'throughput.md'), 'w') as f:
    f.write(f'Matmul peak (f32 {peak["n"]}^3, best of {args.reps}): '
            f'{peak["gflops_per_s"]:.1f} GFLOP/s\n\n' + '\n'.join(lines) +
            f'\n\nGrain pipeline (batch 256, augment {pipe["augment"]}, '
            f'{pipe["num_threads"]} threads): {pipe["examples_per_s"]:.0f} examples/s, '
            f'{pipe["ratio_to_learner_consumption"]:.1f}x the learner\'s consumption.\n')


if __name__ == '__main__':
  main()
