r"""Benchmark (not a test): the trainer's learner step against a plain flax/optax step of the same
model and against the matmul peak, measured in the same run, interleaved.

  python -m big_vision_style.tools.bench_learner_step --out results/bench

The learner step is what `train.py` runs for the uniform baseline (methods.supervised through
methods.jit_step: rng folding, the role dict state, AdamW from optim.py, the measurements).
The plain step is what a user would write by hand for the same model: the same ViT module,
optax.chain(clip_by_global_norm, adamw) with the same warm-up/cosine schedule, weight decay
mask and label smoothing, `jax.jit` with the parameters and optimiser state donated, returning
the loss. Both run on the same batch on one CPU device.

Timing: after a warm-up, A and B alternate (A, B, A, B, ...; the order flips every pair), each
call timed to `block_until_ready`; the reported ratio is the median of the per-pair ratios
learner / plain, so that slow phases of a shared machine hit both sides alike. FLOPs per step
are XLA's cost analysis of each compiled step, checked against the analytic count
(models.vit analytic_forward_flops x 3 x batch). MFU is XLA FLOPs per second over the f32
4096^3 matmul peak, measured in the same process before and after the steps (the higher of
the two is used).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from big_vision_style import flops
from big_vision_style import input_pipeline
from big_vision_style import methods
from big_vision_style import models
from big_vision_style import sharding
from big_vision_style.tools import bench_throughput
from experiments.baseline import fashion_mnist as baseline_config

NUM_CLASSES, IMAGE = 10, (28, 28, 1)


def _load() -> str:
  try:
    return subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()
  except OSError:
    return ''


def plain_step_fn(model, optax_config, total_steps: int, label_smoothing: float):
  """(init, jitted step) of the hand-written flax/optax reference."""
  warmup = int(round(optax_config['warmup_frac'] * total_steps))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optax_config['lr'], warmup_steps=warmup,
      decay_steps=total_steps, end_value=0.0)
  tx = optax.chain(
      optax.clip_by_global_norm(optax_config['clip_norm']),
      optax.adamw(schedule, b1=optax_config['b1'], b2=optax_config['b2'],
                  weight_decay=optax_config['wd'],
                  mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))

  def init(rng):
    params = model.init(rng, jnp.zeros((1,) + IMAGE, jnp.float32))['params']
    return params, tx.init(params)

  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits, _ = model.apply({'params': p}, images, train=True)
      targets = optax.smooth_labels(jax.nn.one_hot(labels, NUM_CLASSES), label_smoothing)
      return optax.softmax_cross_entropy(logits, targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return init, jax.jit(step, donate_argnums=(0, 1))


def compare(model_kwargs: dict, batch_size: int, pairs: int, mesh) -> dict:
  config = baseline_config.get_config()
  with config.unlocked():
    config.model = dict(model_kwargs)
    config.input.batch_size = batch_size
  total_steps = 10_000
  example = {'image': jax.ShapeDtypeStruct(IMAGE, jnp.float32),
             'label': jax.ShapeDtypeStruct((), jnp.int32),
             'id': jax.ShapeDtypeStruct((), jnp.int64)}
  ctx, built = methods.standalone(config, mesh, example, num_classes=NUM_CLASSES,
                                  total_steps=total_steps)
  data = input_pipeline.data_sharding(mesh)
  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch_size,) + IMAGE).astype(np.float32)
  labels = (np.arange(batch_size) % NUM_CLASSES).astype(np.int32)
  batch = {'image': jax.device_put(images, data), 'label': jax.device_put(labels, data),
           'id': jax.device_put(np.arange(batch_size, dtype=np.int64), data)}
  step_no = jnp.asarray(100, jnp.int32)  # Past the warm-up: a non-zero learning rate.

  state = jax.jit(built.init, out_shardings=ctx.replicated)(jax.random.key(0))
  learner, learner_cost = flops.compile_and_measure(methods.jit_step(built.phases[0], ctx),
                                                    state, {}, batch, step_no)
  model = models.get_model('vit').Model(num_classes=NUM_CLASSES, **model_kwargs)
  init, plain_jit = plain_step_fn(model, config.optax, total_steps, config.label_smoothing)
  params, opt_state = jax.jit(init)(jax.random.key(0))
  images_d, labels_d = batch['image'], batch['label']
  plain, plain_cost = flops.compile_and_measure(plain_jit, params, opt_state, images_d, labels_d)
  holder = {'state': state, 'params': params, 'opt': opt_state}

  def run_learner():
    holder['state'], m = learner(holder['state'], {}, batch, step_no)
    jax.block_until_ready((holder['state'], m))

  def run_plain():
    holder['params'], holder['opt'], loss = plain(holder['params'], holder['opt'], images_d,
                                                  labels_d)
    jax.block_until_ready((holder['params'], holder['opt'], loss))

  def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t

  for _ in range(3):  # Warm-up.
    run_learner()
    run_plain()
  times = {'learner': [], 'plain': []}
  for i in range(pairs):
    order = (('learner', run_learner), ('plain', run_plain))
    for name, fn in (order if i % 2 == 0 else order[::-1]):
      times[name].append(timed(fn))
  ratios = np.asarray(times['learner']) / np.asarray(times['plain'])
  num_params = sum(x.size for x in jax.tree.leaves(params))
  analytic = 3 * batch_size * models.get_model('vit').analytic_forward_flops(
      image_size=IMAGE[0], num_classes=NUM_CLASSES, channels=IMAGE[2], **model_kwargs)
  out = {'model': model_kwargs, 'batch_size': batch_size, 'params': int(num_params),
         'pairs': pairs, 'analytic_flops': analytic}
  for name, cost in (('learner', learner_cost), ('plain', plain_cost)):
    t = np.asarray(times[name])
    out[name] = {'flops': cost.flops, 'flops_over_analytic': cost.flops / analytic,
                 'median_s': float(np.median(t)), 'min_s': float(t.min()),
                 'times_s': [float(x) for x in t]}
  out['ratio_median'] = float(np.median(ratios))
  out['ratio_quartiles'] = [float(np.quantile(ratios, 0.25)), float(np.quantile(ratios, 0.75))]
  out['ratio_of_minima'] = out['learner']['min_s'] / out['plain']['min_s']
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='results/bench')
  parser.add_argument('--pairs', type=int, default=30)
  parser.add_argument('--quick', action='store_true', help='The learner only, few pairs.')
  args = parser.parse_args()
  mesh = sharding.make_mesh(1)
  load_before = _load()
  t0 = time.time()
  peak_before = bench_throughput.matmul_peak()
  print(f'matmul peak: {peak_before["gflops_per_s"]:.1f} GFLOP/s; {load_before}', flush=True)
  learner_model = dict(baseline_config.get_config().model)
  candidates = [(learner_model, 256)]
  if not args.quick:
    candidates.append(({'variant': 'S/7', 'depth': 4}, 256))
  rows = []
  for kwargs, bs in candidates:
    r = compare(kwargs, bs, 6 if args.quick else args.pairs, mesh)
    r['is_learner'] = kwargs == learner_model
    rows.append(r)
    print(f'{kwargs} bs={bs}: learner/plain median ratio {r["ratio_median"]:.3f} (IQR '
          f'{r["ratio_quartiles"][0]:.3f}-{r["ratio_quartiles"][1]:.3f}), learner '
          f'{1e3 * r["learner"]["median_s"]:.0f} ms, plain {1e3 * r["plain"]["median_s"]:.0f} '
          f'ms, XLA GFLOP {r["learner"]["flops"] / 1e9:.2f} / {r["plain"]["flops"] / 1e9:.2f}',
          flush=True)
  peak_after = bench_throughput.matmul_peak()
  load_after = _load()
  peak = max(peak_before['gflops_per_s'], peak_after['gflops_per_s'])
  for r in rows:
    for name in ('learner', 'plain'):
      s = r[name]
      s['gflops_per_s_median'] = s['flops'] / s['median_s'] / 1e9
      s['gflops_per_s_best'] = s['flops'] / s['min_s'] / 1e9
      s['mfu_median'] = s['gflops_per_s_median'] / peak
      s['mfu_best'] = s['gflops_per_s_best'] / peak
  device = jax.devices()[0]
  meta = {'device': f'{device.platform}:{device.device_kind}', 'cpu_count': os.cpu_count(),
          'platform': platform.platform(), 'jax': jax.__version__, 'optax': optax.__version__,
          'pairs': args.pairs, 'load_before': load_before, 'load_after': load_after,
          'matmul_peak_before': peak_before, 'matmul_peak_after': peak_after,
          'matmul_peak_gflops_per_s': peak, 'total_seconds': time.time() - t0}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'learner_step.json'), 'w') as f:
    json.dump({'meta': meta, 'rows': rows}, f, indent=1)
  lines = [
      '# Learner step vs a plain flax/optax step and the matmul peak', '',
      f'`python -m big_vision_style.tools.bench_learner_step --out {args.out}` on one '
      f'{meta["device"]} device ({meta["cpu_count"]} cores, shared with other jobs), jax '
      f'{meta["jax"]}, optax {meta["optax"]}; {rows[0]["pairs"]} interleaved pairs per model.',
      '', f'Load before: `{load_before}`; after: `{load_after}`.', '',
      f'Matmul peak (f32 4096^3, best of 5): {peak_before["gflops_per_s"]:.1f} GFLOP/s before, '
      f'{peak_after["gflops_per_s"]:.1f} after; MFU uses {peak:.1f}.', '',
      '| model | batch | params | XLA GFLOP learner / plain | XLA / analytic | learner ms '
      '(median, min) | plain ms (median, min) | learner / plain (median of pairs, IQR) | '
      'MFU learner (median, best) | MFU plain (median, best) |',
      '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    name = ', '.join(f'{k}={v}' for k, v in r['model'].items())
    le, pl = r['learner'], r['plain']
    lines.append(
        f'| {name}{" (learner)" if r["is_learner"] else ""} | {r["batch_size"]} | '
        f'{r["params"]:,} | {le["flops"] / 1e9:.2f} / {pl["flops"] / 1e9:.2f} | '
        f'{le["flops_over_analytic"]:.3f} / {pl["flops_over_analytic"]:.3f} | '
        f'{1e3 * le["median_s"]:.0f}, {1e3 * le["min_s"]:.0f} | '
        f'{1e3 * pl["median_s"]:.0f}, {1e3 * pl["min_s"]:.0f} | '
        f'**{r["ratio_median"]:.3f}** ({r["ratio_quartiles"][0]:.3f}-'
        f'{r["ratio_quartiles"][1]:.3f}) | {100 * le["mfu_median"]:.0f}%, '
        f'{100 * le["mfu_best"]:.0f}% | {100 * pl["mfu_median"]:.0f}%, '
        f'{100 * pl["mfu_best"]:.0f}% |')
  with open(os.path.join(args.out, 'learner_step.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print(f'Wrote {args.out}/learner_step.md in {meta["total_seconds"]:.0f}s.')


if __name__ == '__main__':
  main()
