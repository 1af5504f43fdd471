r"""The main job of `make demo`: a short Bad Students policy comparison on Fashion-MNIST with 30%
label noise (one seed, 300 learner steps, about 5 minutes on 2 CPU cores): the uniform
baseline against hard-learner, easy-reference, learnability and RHO selection. Ends with the
results table and a plot.

  python -m big_vision_style.tools.demo --workdir workdirs/demo

Rerunning with the same workdir skips finished runs and resumes unfinished ones. The full
reproduction (3 seeds, clean and noisy data, 800 steps) is
experiments/bad_students/reproduce_policy_comparison.py; results/bad_students/ has its output.
"""
from __future__ import annotations

import argparse
import os

from big_vision_style import train
from experiments.bad_students import reproduce_policy_comparison as comparison


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='workdirs/demo')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--noise', default='0.3')
  args = parser.parse_args()
  run = argparse.Namespace(workdir=args.workdir, out=os.path.join(args.workdir, 'results'),
                           seeds=[0], noise=[float(n) for n in args.noise.split(',')],
                           policies=list(comparison.POLICIES), steps=args.steps, eval_every=50)
  train.setup_script_logging()
  comparison.run_all(run)
  print(f'\nBad Students on Fashion-MNIST, label noise {args.noise}, {args.steps} learner steps '
        '(target = the uniform baseline\'s final test accuracy):\n')
  comparison.analyze(run)
  print(f'\nPlots: {os.path.abspath(run.out)}/accuracy.png, amortisation.png; '
        f'numbers: summary.json')


if __name__ == '__main__':
  main()
