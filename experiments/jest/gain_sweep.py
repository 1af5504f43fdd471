r"""Is the gain (JEST's score multiplier) what holds learnability JEST back? A follow-up to
reproduce.py: learnability JEST, joint, f = 0.8 at other gains, compared seed by seed with the
main sweep's (gain 1; same learner seeds, same references, same `uniform_3x` targets).

  for g in 3 10; do  # The main sweep's curated reference and its cache, not a new one.
    mkdir -p workdirs/jest_gain$g && cp -r workdirs/jest/reference_curated workdirs/jest_gain$g/
    python -m experiments.jest.reproduce --workdir workdirs/jest_gain$g --gain $g \
        --runs learnability_joint_f0.8 --seeds 0,1,2 --runs_only
  done
  python -m experiments.jest.reproduce --workdir workdirs/jest_gain10 --gain 10 \
      --runs learnability_independent_f0.8 --seeds 0,1,2 --runs_only --parallel 2
  python -m experiments.jest.gain_sweep --main workdirs/jest --gains 3,10 \
      --out results/jest/gain_sweep.json

Each run is compared with the gains whose workdir has it (independent selection: gain 10).

Held out: gain 10 was chosen on seeds 0-2, so it is checked on seeds 3-5, with their own
`uniform_3x` targets and gain-1 runs (results/jest/gain_heldout.json):

  for w in jest_heldout jest_heldout_g10; do
    mkdir -p workdirs/$w && cp -r workdirs/jest/reference_curated workdirs/$w/
  done
  python -m experiments.jest.reproduce --workdir workdirs/jest_heldout --seeds 3,4,5 \
      --runs uniform_3x,learnability_joint_f0.8,learnability_independent_f0.8,\
easy_reference_joint_f0.8 --runs_only --parallel 2
  python -m experiments.jest.reproduce --workdir workdirs/jest_heldout_g10 --gain 10 \
      --seeds 3,4,5 --runs learnability_joint_f0.8,learnability_independent_f0.8 \
      --runs_only --parallel 2
  python -m experiments.jest.gain_sweep --main workdirs/jest_heldout --gains 10 \
      --gain_workdir 'workdirs/jest_heldout_g{gain}' --seeds 3,4,5 \
      --runs learnability_joint_f0.8,learnability_independent_f0.8,easy_reference_joint_f0.8 \
      --out results/jest/gain_heldout.json

Statistics as reference_strength.py's (`restat`: sample std, paired by seed with 95%
t-intervals against gain 1), and joint minus independent, paired by seed, for each gain both
have; `--regenerate` recomputes them from a committed JSON's per-seed rows.

The gain multiplies the learnability scores before the sampler's softmax: 0 is uniform
sampling, large values approach the arg-max sub-batch. The paper uses 100 on its (differently
scaled) scores.
"""
from __future__ import annotations

import argparse
import json

from experiments import analysis
from experiments import sweep
from experiments.jest import grid
from experiments.jest import reference_strength


def joint_minus_independent(out: dict) -> dict:
  """'<policy>_<f>: <gain>' -> key -> joint minus independent, paired by seed, for every joint
  run of `out` whose independent counterpart is there, at each gain (workdir) both have."""
  pairs = {}
  for run in [r for r in out if isinstance(out[r], dict) and 'stats' in out[r] and '_joint_' in r]:
    other = run.replace('_joint_', '_independent_')
    if other not in out:
      continue
    for name in out[run]['stats']:
      if name in out[other]['stats']:
        pairs[f'{run.replace("_joint", "")}: {name}'] = {
            key: analysis.paired_by_seed(reference_strength.values(out[run], name, key),
                                         reference_strength.values(out[other], name, key))
            for key in reference_strength.PAIRED_KEYS}
  return pairs


def regenerate(path: str) -> dict:
  """Rewrites the JSON at `path` with its statistics recomputed from its per-seed rows."""
  with open(path) as f:
    out = json.load(f)
  for run, value in out.items():
    if isinstance(value, dict) and 'per_seed' in value:
      out[run] = reference_strength.restat(value)
  out['joint_minus_independent'] = joint_minus_independent(out)
  with open(path, 'w') as f:
    json.dump(out, f, indent=1)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--main', default='workdirs/jest')
  parser.add_argument('--gains', default='3,10')
  parser.add_argument('--gain_workdir', default='workdirs/jest_gain{gain}',
                      help="Each gain's workdir, '{gain}' standing for the gain.")
  parser.add_argument('--runs', default='learnability_joint_f0.8,learnability_independent_f0.8')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--out', default='results/jest/gain_sweep.json')
  parser.add_argument('--regenerate', action='store_true',
                      help="Recompute --out's statistics from its per-seed rows (no workdirs).")
  args = parser.parse_args()
  if args.regenerate:
    print(json.dumps(regenerate(args.out)['joint_minus_independent'], indent=1))
    return
  seeds = [int(s) for s in args.seeds.split(',')]
  out = {'note': "'main' is the main sweep's gain of 1.",
         'command': analysis.command('experiments.jest.gain_sweep', args)}
  for run in args.runs.split(','):
    workdirs = {f'gain_{g}': args.gain_workdir.format(gain=g) for g in args.gains.split(',')}
    variants = {name: w for name, w in workdirs.items()
                if all(sweep.is_finished(grid.run_dir(w, run, s)) for s in seeds)}
    out[run] = reference_strength.compare(args.main, variants, run, seeds)
    print(run, json.dumps({k: out[run][k] for k in (
        'mean_final', 'mean_retrieval', 'mean_corrupted_selected', 'reached')}, indent=1))
  out['joint_minus_independent'] = joint_minus_independent(out)
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)


if __name__ == '__main__':
  main()
