r"""Benchmark (not a test): what reusing the scoring forward (forward_reuse.py) saves and costs,
for the local JEST learner, on one CPU device.

  python -m big_vision_style.tools.bench_forward_reuse --out results/bench

For each filter ratio f (B = b / (1 - f), b = 128), two compiled programs do the learner's part
of a JEST step: embed the super-batch of B pairs (the scoring forward), then the gradient of the
contrastive loss of b chosen pairs. `plain` runs a forward over the b again before its
backward; `reusing` backpropagates through the chosen rows of the scoring forward's activations.
Reported per program: FLOPs (XLA cost analysis), `temp` memory (XLA's compiled memory
analysis: the activations kept for the backward live here) and wall time (best of --reps), and
the largest gradient difference between the two, relative to the largest gradient. The sampler
is left out (the same in both): random indices stand in for its choice.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import flops
from big_vision_style import image_text
from big_vision_style import input_pipeline
from big_vision_style import models
from big_vision_style import selection
from big_vision_style import sharding
from big_vision_style.tools import timing
from experiments.jest import filter_ratio


def programs(model, mesh, loss: str):
  """The learner's part of a JEST step, both ways, built from the trainer's own functions."""

  @jax.jit
  def plain(params, batch, indices):
    scored = image_text.embed(model, params, batch['image'], batch['text'])
    sub = selection.gather(batch, indices, mesh)
    return jax.grad(functools.partial(image_text.loss_fn, model, batch=sub, loss=loss))(
        params), scored

  @jax.jit
  def reusing(params, batch, indices):
    scored, scored_vjp = image_text.scoring_forward(model, params, batch)
    sub = selection.gather(batch, indices, mesh)
    _, grads = image_text.reused_gradient(model, params, scored, scored_vjp, sub, indices, mesh,
                                          loss=loss)
    return grads, scored

  return {'plain': plain, 'reusing': reusing}


def measure(config, filter_ratio_value: float, reps: int) -> dict:
  b = config.input.batch_size
  super_b = selection.super_batch_size(b, filter_ratio_value)
  mesh = sharding.make_mesh(1)
  model = models.get_model(config.model_name).Model(**config.model)
  size = config.input.pp.image_size
  rng = np.random.default_rng(0)
  batch = jax.device_put(
      {'image': jnp.asarray(rng.normal(size=(super_b, size, size, 3)), jnp.float32),
       'text': jnp.asarray(rng.integers(1, config.model.text.vocab_size,
                                        size=(super_b, config.data.max_text_len)), jnp.int32)},
      input_pipeline.data_sharding(mesh))
  params = image_text.init_params(model, jax.random.key(0), (1, size, size, 3),
                                  (1, config.data.max_text_len))
  indices = jnp.asarray(np.sort(rng.choice(super_b, b, replace=False)), jnp.int32)
  row = {'filter_ratio': filter_ratio_value, 'super_batch': super_b, 'batch': b}
  grads = {}
  for name, fn in programs(model, mesh, config.contrastive_loss).items():
    compiled, cost = flops.compile_and_measure(fn, params, batch, indices)
    grads[name] = compiled(params, batch, indices)[0]
    row[name] = {'gflops': cost.flops / 1e9,
                 'temp_mib': compiled.memory_analysis().temp_size_in_bytes / 2**20,
                 'ms': 1e3 * timing.best_time(lambda: compiled(params, batch, indices), reps)}
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads['plain']))
  row['max_grad_difference_relative'] = max(
      float(jnp.max(jnp.abs(a - c))) for a, c in zip(
          jax.tree.leaves(grads['plain']), jax.tree.leaves(grads['reusing']))) / scale
  forward_b = flops.compile_and_measure(
      jax.jit(lambda p, x: image_text.embed(model, p, x['image'], x['text'])[:2]), params,
      jax.tree.map(lambda x: x[:b], batch))[1].flops
  row['forward_b_gflops'] = forward_b / 1e9
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='results/bench')
  parser.add_argument('--filter_ratios', default='0.5,0.8,0.9')
  parser.add_argument('--reps', type=int, default=10)
  args = parser.parse_args()
  config = filter_ratio.get_config('')
  rows = [measure(config, float(f), args.reps) for f in args.filter_ratios.split(',')]
  out = {'device': jax.devices()[0].device_kind, 'platform': platform.platform(),
         'jax': jax.__version__, 'rows': rows}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'forward_reuse.json'), 'w') as f:
    json.dump(out, f, indent=1)
  lines = ['| f | B | b | GFLOPs plain / reusing | saved / forward over b | temp MiB plain / '
           'reusing | ms plain / reusing | max grad diff (rel.) |',
           '|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    p, q = r['plain'], r['reusing']
    lines.append(
        f'| {r["filter_ratio"]} | {r["super_batch"]} | {r["batch"]} | {p["gflops"]:.3f} / '
        f'{q["gflops"]:.3f} | {(p["gflops"] - q["gflops"]) / r["forward_b_gflops"]:.2f} | '
        f'{p["temp_mib"]:.1f} / {q["temp_mib"]:.1f} | {p["ms"]:.0f} / {q["ms"]:.0f} | '
        f'{r["max_grad_difference_relative"]:.1e} |')
  with open(os.path.join(args.out, 'forward_reuse.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
