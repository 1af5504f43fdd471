"""AdamW with linear warm-up and cosine decay, global-norm clipping, decay on kernels only."""
from __future__ import annotations

import jax
import optax


def make_schedule(config, total_steps: int):
  warmup = int(round(config.get('warmup_frac', 0.0) * total_steps)) or config.get(
      'warmup_steps', 0)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.lr, warmup_steps=max(warmup, 0),
      decay_steps=max(total_steps, warmup + 1), end_value=config.lr * config.get('end_frac', 0.0))


def make_optimizer(config, total_steps: int):
  """`config` = {lr, wd, b1, b2, warmup_steps | warmup_frac, end_frac, clip_norm}."""
  schedule = make_schedule(config, total_steps)
  # Weight decay on matrices only (not biases, norms or position embeddings' scale params).
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  chain = []
  if config.get('clip_norm'):
    chain.append(optax.clip_by_global_norm(config.clip_norm))
  chain.append(optax.adamw(schedule, b1=config.get('b1', 0.9), b2=config.get('b2', 0.999),
                           weight_decay=config.get('wd', 0.0), mask=decay_mask))
  return optax.chain(*chain), schedule
