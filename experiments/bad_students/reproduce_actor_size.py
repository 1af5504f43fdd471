r"""Local reproduction of the Bad Students actor-size sweep (the paper's Fig. 4): learnability
and easy-reference as the actor and reference shrink, for one learner.

  python -m experiments.bad_students.reproduce_actor_size --parallel 2 \
      --workdir workdirs/bs_arms --out results/bad_students/actor_size

The learner is the policy comparison's (w96d4, 15.1 MFLOP per forward); actors B, S, Ti and mu
(experiments/bad_students/common.py LOCAL_ACTORS: 2x, 8x, 31x and 320x smaller), each with a
reference of its own size trained for 10 epochs on the clean held-out split (the paper's
condition: the reference is no larger than the actor). Per actor size: learnability (actor and
reference) and easy-reference (the reference alone), against uniform on the same seeds, at
--noise label noise. Finished runs are skipped and unfinished ones resume.

Writes to --out: summary.json (per arm: `arms.compare`'s entry; per actor size its forward
FLOPs and its reference's test accuracy), curves.json (mean and per-seed curves), table.md and
actor_size.png (accuracy vs steps and vs FLOPs, ± sample-std bands; per arm, every seed's FLOPs
ratio to its uniform's final accuracy and the paired accuracy difference with its interval).
"""
from __future__ import annotations

import os

from experiments import analysis
from experiments import sweep
from experiments.bad_students import actor_size_sweep
from experiments.bad_students import arms as arms_lib
from experiments.bad_students import common
from experiments.bad_students import policy_comparison

MODULE = 'experiments.bad_students.reproduce_actor_size'
ACTORS = ('B', 'S', 'Ti', 'mu')
POLICIES = ('learnability', 'easy_reference')
# The Ti reference is the policy comparison's held-out reference: its workdir name is shared
# with reproduce_rho_vs_classact, so one --workdir trains it once.
REFERENCE_DIRS = {'Ti': 'reference_holdout'}


def reference_dir(actor: str) -> str:
  return REFERENCE_DIRS.get(actor, f'reference_holdout_{actor}')


def uniform_arm(args) -> arms_lib.Arm:
  return arms_lib.Arm('uniform', lambda seed, ref: policy_comparison.get_config(
      f'policy=uniform,seed={seed},label_noise={args.noise},steps={args.steps}'))


def build_arms(args) -> list[arms_lib.Arm]:
  out = [uniform_arm(args)]
  for k, actor in enumerate(args.actors):
    for policy in args.policies:
      out.append(arms_lib.Arm(
          f'{policy}_{actor}',
          lambda seed, ref, a=actor, p=policy: actor_size_sweep.get_config(
              f'actor={a},policy={p},seed={seed},label_noise={args.noise},steps={args.steps},'
              f'reference_workdir={ref(reference_dir(a))}'),
          # The larger actors train on the whole batch: those runs take longest.
          cost=2 + (len(args.actors) - k if policy == 'learnability' else 0)))
  return out


def references(args) -> list[arms_lib.Reference]:
  return [arms_lib.Reference(reference_dir(actor), lambda a=actor: actor_size_sweep.get_config(
      f'reference_only,actor={a}')) for actor in args.actors]


def train_runs(args):
  arms_lib.train(args, MODULE, build_parser(), references(args), build_arms(args))


def analyze(args):
  result = arms_lib.compare(args, build_arms(args))
  if result is None:
    print('uniform has not finished: nothing to analyse yet.')
    return None
  sizes = {}
  for actor in args.actors:
    final = sweep.final_row(os.path.join(args.workdir, reference_dir(actor)))
    sizes[actor] = {'model': common.LOCAL_ACTORS[actor],
                    'reference_test_accuracy': None if final is None
                    else final['eval/test/accuracy']}
  arms = result['summary']['arms']
  for actor in args.actors:  # The paper's question: does learnability outlast easy-reference?
    pair = [arms.get(f'{p}_{actor}') for p in ('learnability', 'easy_reference')]
    if None not in pair:
      sizes[actor]['learnability_minus_easy_reference'] = analysis.paired_by_seed(
          pair[0]['final_accuracy_per_seed'], pair[1]['final_accuracy_per_seed'])
  arms_lib.write(args.out, result, {'actors': sizes})
  lines = _table(result, sizes, args)
  analysis.write_text(os.path.join(args.out, 'table.md'), lines)
  _plot(result, args)
  print('\n'.join(lines))
  return result


def _table(result, sizes, args) -> list[str]:
  s = result['summary']
  rows = []
  for name, entry in s['arms'].items():
    policy, _, actor = name.rpartition('_') if name != 'uniform' else ('uniform', '', '-')
    ref_acc = sizes.get(actor, {}).get('reference_test_accuracy')
    rows.append([actor, '-' if ref_acc is None else f'{100 * ref_acc:.2f}', policy,
                 *arms_lib.table_cells(entry, name, len(args.seeds))])
  head = ['# Bad Students actor-size sweep (local)', '',
          f'Fashion-MNIST with {args.noise:g} label noise, learner w96d4, {args.steps} learner '
          f'steps, f = 0.5, seeds {args.seeds}. The reference has the actor\'s size. Target: '
          "uniform's final mean test accuracy "
          f'({100 * s["target_accuracy"]:.2f}%; per seed: that seed\'s). FLOPs ratios count '
          'everything but the reference\'s training ("all counted": with it).', '']
  pairs = [[actor, analysis.fmt_interval(v['learnability_minus_easy_reference'], 100)]
           for actor, v in sizes.items() if 'learnability_minus_easy_reference' in v]
  return head + analysis.markdown_table(
      ['actor', 'reference test acc. (%)', 'policy', *arms_lib.TABLE_HEADER], rows,
      'llll' + 'r' * (len(arms_lib.TABLE_HEADER) - 1)) + [
          '', 'Learnability minus easy-reference, final accuracy, paired by seed (points, '
          '[95% t-interval]):', ''] + analysis.markdown_table(
              ['actor = reference size', 'learnability minus easy-reference'], pairs, 'lr') + [
          '', f'Produced by `{analysis.command(MODULE, args)}`.']


def _styles(args) -> dict:
  styles = {'uniform': dict(color='k')}
  for k, actor in enumerate(args.actors):
    for policy, ls in zip(POLICIES, ('-', '--')):
      styles[f'{policy}_{actor}'] = dict(color=f'C{k}', ls=ls)
  return styles


def _plot(result, args):
  plt = analysis.pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(22, 4.6))
  styles = _styles(args)
  arms_lib.plot_curves(axes[:2], result, styles)
  names = [n for n in result['curves'] if n != 'uniform']
  arms_lib.plot_per_seed(axes[2:], result, names, styles)
  fig.suptitle(f'Bad Students actor-size sweep, Fashion-MNIST, label noise {args.noise:g}: '
               'learnability (solid) and easy-reference (dashed), actor = reference size; '
               'mean ± sample std over seeds')
  analysis.save_figure(fig, os.path.join(args.out, 'actor_size.png'), dpi=100)


def build_parser():
  parser = sweep.make_parser(__doc__, workdir='workdirs/bs_arms',
                             out='results/bad_students/actor_size')
  arms_lib.add_arguments(parser, noise=0.3, seeds='3,4,5')
  parser.add_argument('--actors', default=','.join(ACTORS))
  parser.add_argument('--policies', default=','.join(POLICIES))
  return parser


def parse_args(argv=None):
  parser = build_parser()
  args = sweep.parse(parser, argv)
  args.actors = args.actors.split(',')
  args.policies = args.policies.split(',')
  for actor in args.actors:
    if actor not in ACTORS:
      parser.error(f'--actors: {actor!r} is not one of {",".join(ACTORS)}.')
  return args


def main(argv=None):
  sweep.drive(parse_args(argv), train_runs, analyze)


if __name__ == '__main__':
  main()
