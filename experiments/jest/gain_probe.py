r"""How different are joint and independent selection at each gain? A probe of the v2 benchmark's
null joint-vs-independent result (joint_vs_independent.py), without training.

  python -m experiments.jest.gain_probe --workdir workdirs/jest_v2_paired \
      --run learnability_joint_f0.8 --seed 3 --out results/jest/v2/gain_probe.json
  python -m experiments.jest.gain_probe --workdir workdirs/jest_v2_paired \
      --run learnability_joint_f0.9 --seed 3 --super_batch 1280 \
      --out results/jest/v2/gain_probe_f0.9.json

On one super-batch of B training pairs (640: f = 0.8; `--super_batch 1280`: f = 0.9) scored
by a trained learner (the final learner of `--run` at `--seed`) and the run's curated
reference, for each gain g (the multiplier of the learnability scores before the sampler's
softmax; the configs use 1): the per-pair learnability (sum of the chosen b x b block of the
learnability matrix over b, as Fig. 2) of b = 128 pairs chosen by the chunked joint sampler
(16 chunks), by independent sampling from softmax(g S_ii), and, as the two ends, by a uniform
draw and by the top b of S_ii; the overlap of the joint and independent selections (share of b); and the share of
corrupted pairs each one selects (the pool's rate is 30%). Means over `--draws` draws, with
each draw kept. Deterministic given the run's checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import sharding
from big_vision_style.selection import jest
from big_vision_style.selection import jest_gibbs
from experiments import analysis
from experiments.jest import fig2_sampler
from experiments.jest import grid

GAINS = (1.0, 3.0, 10.0, 30.0, 100.0)


def probe(workdir: str, run: str, seed: int, *, gains=GAINS, draws: int = 8, size: int = 640,
          b: int = 128, num_chunks: int = 16) -> dict:
  args = argparse.Namespace(workdir=workdir, benchmark='v2', steps=1600, eval_every=100,
                            gain=None, reuse=False)
  config = grid.run_config(args, run, seed)
  emb_l, emb_r, items = fig2_sampler.embed_super_batch(
      config, grid.run_dir(workdir, run, seed), grid.reference_dir(args, 'curated'), size)
  corrupted = np.asarray([int(item['corruption']) != 0 for item in items])
  scores = jest.dense_score_matrix(emb_l, emb_r, policy='learnability')
  mesh = sharding.make_mesh(1)

  def learnability(indices):
    return float(jest_gibbs.learnability(scores, indices) / b)

  def summary(selections):
    values = [learnability(s) for s in selections]
    return {'learnability': float(np.mean(values)), 'per_draw': values,
            'corrupted_selected': float(np.mean([corrupted[np.asarray(s)].mean()
                                                 for s in selections]))}

  keys = [jax.random.key(k) for k in range(draws)]
  top = jnp.sort(jax.lax.top_k(jest.diagonal_scores(emb_l, emb_r), b)[1])
  out = {'run': run, 'seed': seed, 'super_batch': size, 'num_selected': b,
         'num_chunks': num_chunks, 'draws': draws,
         'pool_corrupted': float(corrupted.mean()),
         'uniform': summary([jax.random.permutation(k, size)[:b] for k in keys]),
         'top_b_of_diagonal': summary([top]), 'gains': {}}
  for gain in gains:
    joint_fn = jax.jit(lambda k, g=gain: jest.sample_joint(
        emb_l, emb_r, num_selected=b, num_chunks=num_chunks, rng=k, mesh=mesh, gain=g).indices)
    joint = [joint_fn(k) for k in keys]
    independent = [jest.select_independent(emb_l, emb_r, num_selected=b, rng=k, gain=gain)
                   for k in keys]
    overlap = [len(np.intersect1d(np.asarray(j), np.asarray(i))) / b
               for j, i in zip(joint, independent)]
    out['gains'][str(gain)] = {'joint': summary(joint), 'independent': summary(independent),
                               'overlap': float(np.mean(overlap))}
  return out


def table_lines(out: dict) -> list[str]:
  rows = [[g, f'{v["joint"]["learnability"]:.3f}', f'{v["independent"]["learnability"]:.3f}',
           f'{v["joint"]["learnability"] - v["independent"]["learnability"]:+.3f}',
           f'{100 * v["overlap"]:.0f}', f'{100 * v["joint"]["corrupted_selected"]:.1f}',
           f'{100 * v["independent"]["corrupted_selected"]:.1f}']
          for g, v in out['gains'].items()]
  lines = analysis.markdown_table(
      ['gain', 'joint learnability', 'independent', 'joint - independent', 'overlap (%)',
       'corrupted, joint (%)', 'corrupted, independent (%)'], rows, 'rrrrrrr')
  return lines + ['', f'Uniform draw: {out["uniform"]["learnability"]:.3f} '
                  f'({100 * out["uniform"]["corrupted_selected"]:.1f}% corrupted); top {out["num_selected"]} '
                  f'of the diagonal: {out["top_b_of_diagonal"]["learnability"]:.3f} '
                  f'({100 * out["top_b_of_diagonal"]["corrupted_selected"]:.1f}% corrupted); '
                  f'pool: {100 * out["pool_corrupted"]:.1f}% corrupted.']


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='workdirs/jest_v2_paired')
  parser.add_argument('--run', default='learnability_joint_f0.8')
  parser.add_argument('--seed', type=int, default=3)
  parser.add_argument('--draws', type=int, default=8)
  parser.add_argument('--super_batch', type=int, default=640,
                      help='B; the probe selects b = 128 of it (640: f = 0.8, 1280: f = 0.9).')
  parser.add_argument('--out', default='results/jest/v2/gain_probe.json')
  args = parser.parse_args(argv)
  out = probe(args.workdir, args.run, args.seed, draws=args.draws, size=args.super_batch)
  out['command'] = analysis.command('experiments.jest.gain_probe', args)
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)
  print('\n'.join(table_lines(out)))


if __name__ == '__main__':
  main()
