"""JEST Fig. 2 analogue: the chunked joint sampler against brute-force Gibbs sampling.

On one super-batch (B = 640) scored by the uniform run's learner and the curated reference, the
learnability of the sub-batch chosen by the chunked sampler vs its number of chunks, against a
brute-force Gibbs sampler vs its iterations, an independent draw and a uniform one; and joint
vs independent selection vs the filter ratio f. Each point is the mean of 4 draws of the
sampler (one super-batch, no training seeds); the chunked sampler's per-draw values are kept
(`chunks_per_draw`) and drawn as points. Writes fig2_sampler.png.
"""
from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import checkpointing
from big_vision_style import datasets
from big_vision_style import image_text
from big_vision_style import models
from big_vision_style import preprocess
from big_vision_style import sharding
from big_vision_style.selection import jest
from big_vision_style.selection import jest_gibbs
from experiments import analysis
from experiments.jest import grid


def embed_super_batch(config, learner_dir: str, reference_dir: str, size: int):
  """(learner embeddings, reference embeddings, raw items) of `size` training pairs drawn
  without replacement by a fixed rng (seed 0), so every probe of one config sees the same
  super-batch; the two models are the finished runs in the two workdirs."""
  model = models.get_model('two_towers').Model(**config.model)
  learner, _ = checkpointing.load_trained_params(learner_dir)
  reference, _ = checkpointing.load_trained_params(reference_dir)
  source = datasets.get_source(config.data, 'train')
  pp = preprocess.make(**dict(config.input.pp))
  items = [source[int(i)] for i in np.random.default_rng(0).choice(len(source), size, False)]
  rows = [pp(item) for item in items]
  images = jnp.asarray(np.stack([r['image'] for r in rows]))
  texts = jnp.asarray(np.stack([r['text'] for r in rows]))
  return (image_text.embed(model, learner, images, texts),
          image_text.embed(model, reference, images, texts), items)


def sampler_quality(args) -> dict:
  """Learnability (per pair, sum of S over the b x b chosen pairs / b) on one super-batch."""
  learner_dir = grid.run_dir(args.workdir, 'uniform', args.seeds[0])
  config = grid.run_config(args, 'learnability_joint_f0.8', args.seeds[0])
  size = 640
  emb_l, emb_r, _ = embed_super_batch(config, learner_dir, grid.reference_dir(args, 'curated'),
                                      size)
  scores = jest.dense_score_matrix(emb_l, emb_r, policy='learnability')
  mesh = sharding.make_mesh(1)
  out = {'super_batch': size, 'gain': float(config.selection.gain)}
  draws = 4
  logging.info('Fig. 2: sampling sub-batches of one super-batch of %d.', size)

  samplers = {}

  def chunked(b, n, key):  # One compiled sampler per (b, N), reused across draws.
    if (b, n) not in samplers:
      samplers[b, n] = jax.jit(lambda k, b=b, n=n: jest.sample_joint(
          emb_l, emb_r, num_selected=b, num_chunks=n, rng=k, mesh=mesh,
          gain=config.selection.gain).indices)
    return samplers[b, n](key)

  def per_draw(fn, b):
    return [float(jest_gibbs.learnability(scores, fn(jax.random.key(k))) / b)
            for k in range(draws)]

  def mean_learnability(fn, b):
    return float(np.mean(per_draw(fn, b)))

  b = 128
  # Every draw's value too, so the figure shows their spread (the sampler's randomness).
  out['chunks_per_draw'] = {str(n): per_draw(lambda k, n=n: chunked(b, n, k), b)
                            for n in (1, 2, 4, 8, 16, 32, 64, 128)}
  out['chunks'] = {n: float(np.mean(v)) for n, v in out['chunks_per_draw'].items()}
  out['independent'] = mean_learnability(lambda k: jest.select_independent(
      emb_l, emb_r, num_selected=b, rng=k, gain=config.selection.gain), b)
  out['uniform'] = mean_learnability(
      lambda k: jax.random.permutation(k, size)[:b], b)
  sweeps = 40
  _, trace = jest_gibbs.gibbs_sample(scores, b, jax.random.key(0), num_sweeps=sweeps,
                                     gain=config.selection.gain)
  out['gibbs'] = {'iterations': [(s + 1) * b for s in range(sweeps)],
                  'learnability': (np.asarray(trace) / b).tolist()}
  out['vs_filter_ratio'] = {}
  for f in (0.0, 0.5, 0.8, 0.9):
    sub = int(round(size * (1 - f)))
    sub -= sub % 16
    out['vs_filter_ratio'][str(f)] = {
        'joint': mean_learnability(lambda k, s=sub: chunked(s, 16, k), sub),
        'independent': mean_learnability(lambda k, s=sub: jest.select_independent(
            emb_l, emb_r, num_selected=s, rng=k, gain=config.selection.gain), sub),
        'b': sub}
  return out


def plot(out: str, s: dict):
  """fig2_sampler.png from `sampler_quality`'s result `s`."""
  plt = analysis.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  ax = axes[0]
  line, = ax.semilogx([int(n) for n in s['chunks']], list(s['chunks'].values()), 'o-',
                      label='JEST chunked sampler (x: chunks), mean of draws')
  if 'chunks_per_draw' in s:  # Not in the first committed results: only the draws' means.
    analysis.seed_points(ax, [int(n) for n in s['chunks_per_draw']],
                         list(s['chunks_per_draw'].values()), color=line.get_color(),
                         label='each draw')
  ax.semilogx(s['gibbs']['iterations'], s['gibbs']['learnability'], '-',
              label='Gibbs (x: single-slot updates)')
  ax.axhline(s['independent'], color='gray', ls='--', label='independent')
  ax.axhline(s['uniform'], color='k', ls=':', label='uniform')
  ax.set_xlabel('sampler iterations')
  ax.set_ylabel('learnability of the sub-batch (per pair)')
  ax.legend(fontsize=8)
  ax = axes[1]
  fs = sorted(s['vs_filter_ratio'], key=float)
  for method in ('joint', 'independent'):
    ax.plot([float(f) for f in fs], [s['vs_filter_ratio'][f][method] for f in fs], 'o-',
            label=method)
  ax.set_xlabel('filter ratio f')
  ax.set_ylabel('learnability of the sub-batch (per pair)')
  ax.legend()
  for a in axes:
    a.grid(alpha=0.3)
  fig.suptitle(f'JEST Fig. 2 analogue: one super-batch of {s["super_batch"]}')
  analysis.save_figure(fig, os.path.join(out, 'fig2_sampler.png'), dpi=120)
