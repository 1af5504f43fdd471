r"""Does a stronger curated reference make learnability JEST meet the goal? A follow-up to
reproduce.py: the same runs with a reference trained longer, compared seed by seed with the
main sweep's (same learner seeds, same `uniform_3x` targets).

  # Reference trained 90 epochs instead of 30, then learnability JEST at f = 0.8, 3 seeds:
  python -m experiments.jest.reproduce --workdir workdirs/jest_ref90 --ref_epochs 90 \
      --runs learnability_joint_f0.8 --seeds 0,1,2 --parallel 2 --runs_only
  python -m experiments.jest.reference_strength --main workdirs/jest \
      --strong workdirs/jest_ref90 --out results/jest/reference_strength.json

FLOPs are the runs' XLA-measured totals with the reference cache pass and without reference
training, as in reproduce.py: a 3x longer reference costs 3x more to pretrain, once.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from experiments import analysis
from experiments import sweep
from experiments.jest import fig3_filter_ratio as fig3
from experiments.jest import grid


def compare(main: str, variants: dict[str, str], run: str, seeds) -> dict:
  """`run` in the main sweep's workdir and in each variant's (name -> workdir), seed by seed,
  against the main sweep's `uniform_3x` targets."""
  workdirs = {'main': main, **variants}
  rows = []
  for seed in seeds:
    target = fig3.curve(grid.run_dir(main, 'uniform_3x', seed))
    goal_zeroshot = target['zeroshot'][-1]
    row = {'seed': seed, 'uniform_3x_final': goal_zeroshot}
    for name, workdir in workdirs.items():
      full = fig3.run_row(fig3.curve(grid.run_dir(workdir, run, seed)), {'': target})
      # The goal's definition: fractions of the i.i.d. run's whole length and FLOPs.
      row[name] = {key: full[key] for key in ('final', 'retrieval', 'corrupted_selected',
                                               'iterations_fraction', 'flops_fraction')}
    rows.append(row)
  references = {}
  for name, workdir in workdirs.items():
    final = sweep.final_row(os.path.join(workdir, 'reference_curated'))
    references[name] = {'zeroshot': final[grid.METRIC], 'steps': final['step'],
                        'train_flops': final['flops/total']}
  mean = lambda key: {n: float(np.mean([r[n][key] for r in rows])) for n in workdirs}
  return {'run': run, 'references': references, 'per_seed': rows,
          'mean_final': mean('final'), 'mean_retrieval': mean('retrieval'),
          'mean_corrupted_selected': mean('corrupted_selected'),
          'reached': {n: sum(r[n]['iterations_fraction'] is not None for r in rows)
                      for n in workdirs}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--main', default='workdirs/jest')
  parser.add_argument('--strong', default='workdirs/jest_ref90')
  parser.add_argument('--run', default='learnability_joint_f0.8')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--out', default='results/jest/reference_strength.json')
  args = parser.parse_args()
  out = compare(args.main, {'strong': args.strong}, args.run,
                [int(s) for s in args.seeds.split(',')])
  out['command'] = analysis.command('experiments.jest.reference_strength', args)
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  main()
