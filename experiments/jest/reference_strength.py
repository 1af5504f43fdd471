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

Statistics (`restat`, also run by `--regenerate` on a committed JSON's per-seed rows): per
workdir, mean ± sample std (ddof=1) over seeds with "reached in k of n seeds" for the ratios;
every variant minus the main sweep, paired by seed, with 95% t-intervals. Per seed, the
iterations and FLOPs to the target on the ratio basis (over `uniform_3x`'s own first reach) and
the fraction basis (of its whole run; kept for the first committed JSONs, which have only it),
and the run's evaluation curve ('curve'), so that later analyses need no workdirs.
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


ROW_KEYS = ('final', 'retrieval', 'corrupted_selected', 'iterations_ratio', 'flops_ratio',
            'iterations_fraction', 'flops_fraction')
PAIRED_KEYS = ('final', 'retrieval')


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
      c = fig3.curve(grid.run_dir(workdir, run, seed))
      full = fig3.run_row(c, {'': target})
      row[name] = {key: full[key] for key in ROW_KEYS}
      row[name]['curve'] = c
    rows.append(row)
  references = {}
  for name, workdir in workdirs.items():
    final = sweep.final_row(os.path.join(workdir, 'reference_curated'))
    references[name] = {'zeroshot': final[grid.METRIC], 'steps': final['step'],
                        'train_flops': final['flops/total']}
  return restat({'run': run, 'references': references, 'per_seed': rows})


def values(out: dict, name: str, key: str) -> dict:
  """Seed (str) -> workdir `name`'s `key` in `out`'s per-seed rows (None where missing)."""
  return {str(r['seed']): r[name].get(key) for r in out['per_seed']}


def restat(out: dict) -> dict:
  """`out` (a `compare` result, or a committed one) with its statistics (re)computed from its
  per-seed rows: means, sample stds with the seeds that reached, paired differences to main."""
  names = [n for n in out['per_seed'][0] if n not in ('seed', 'uniform_3x_final')]
  keys = [k for k in ROW_KEYS if all(k in r[n] for r in out['per_seed'] for n in names)]
  mean = lambda key: {n: float(np.mean([r[n][key] for r in out['per_seed']])) for n in names}
  return {
      **{k: v for k, v in out.items() if k in ('run', 'references', 'per_seed')},
      'mean_final': mean('final'), 'mean_retrieval': mean('retrieval'),
      'mean_corrupted_selected': mean('corrupted_selected'),
      'reached': {n: sum(r[n]['iterations_fraction'] is not None for r in out['per_seed'])
                  for n in names},
      'std_ddof': fig3.DDOF,
      'stats': {n: {k: analysis.seed_stat(list(values(out, n, k).values()), ddof=fig3.DDOF)
                    for k in keys} for n in names},
      'paired_vs_main': {n: {k: analysis.paired_by_seed(values(out, n, k),
                                                        values(out, 'main', k))
                             for k in PAIRED_KEYS} for n in names if n != 'main'},
      'ratio_basis': ('per seed' if 'iterations_ratio' in keys else
                      'not committed: these per-seed rows have only the fraction basis (of '
                      "uniform_3x's whole run), and the run curves were not kept"),
      **{k: v for k, v in out.items() if k == 'command'},
  }


def regenerate(path: str):
  """Rewrites the JSON at `path` with `restat` of its committed per-seed rows."""
  with open(path) as f:
    out = restat(json.load(f))
  with open(path, 'w') as f:
    json.dump(out, f, indent=1)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--main', default='workdirs/jest')
  parser.add_argument('--strong', default='workdirs/jest_ref90')
  parser.add_argument('--run', default='learnability_joint_f0.8')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--out', default='results/jest/reference_strength.json')
  parser.add_argument('--regenerate', action='store_true',
                      help="Recompute --out's statistics from its per-seed rows (no workdirs).")
  args = parser.parse_args()
  if args.regenerate:
    print(json.dumps(regenerate(args.out), indent=1)[:3000])
    return
  out = compare(args.main, {'strong': args.strong}, args.run,
                [int(s) for s in args.seeds.split(',')])
  out['command'] = analysis.command('experiments.jest.reference_strength', args)
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  main()
