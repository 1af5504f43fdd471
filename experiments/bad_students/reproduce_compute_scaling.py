r"""Local reproduction of the Bad Students compute-scaling claim: does learnability's saving
hold, or grow, as the learner grows while the actor and reference stay small?

  python -m experiments.bad_students.reproduce_compute_scaling --parallel 2 \
      --workdir workdirs/bad_students_scaling --out results/bad_students/compute_scaling

Learners of three sizes (experiments/bad_students/common.py LOCAL_LEARNERS: 1.0, 3.5 and 15.1
forward MFLOP per image, a 15x span), each trained with uniform sampling and with learnability
(Ti actor and the Ti reference trained once on the held-out split, f = 0.5), 800 steps, on
clean Fashion-MNIST. Two stages:
  1. tuning, on a seed that is not reported (--tune_seed): uniform at each learning rate of
     --lrs, per learner; the rate with the best accuracy on the held-out split (not the test
     split) is kept for both policies of that learner;
  2. the reported runs, seeds --seeds, at the chosen rates.
Finished runs are skipped and unfinished ones resume: rerun the command after an interruption.
Writes to --out: summary.json (per learner: the chosen rate and every tuning accuracy, then the
policy_comparison entry of each policy: final accuracy, paired difference to uniform with a
95% t-interval, step and FLOPs ratios to uniform's final accuracy on the seed-mean curves and
per seed with k/n reached), curves.json (mean and per-seed curves), table.md, accuracy.png
and accuracy_and_ratios.png (accuracy vs total FLOPs per learner, ± sample-std bands; then,
per learner size, a selecting step's FLOPs over a uniform one's and every seed's FLOPs ratio
to its uniform's final accuracy where it got there).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from experiments import analysis
from experiments import sweep
from experiments.bad_students import common
from experiments.bad_students import compute_scaling
from experiments.bad_students import reference
from experiments.bad_students import reproduce_policy_comparison as pc

MODULE = 'experiments.bad_students.reproduce_compute_scaling'
VAL = 'eval/val/accuracy'


def _config(args, learner, policy, seed, lr, *, validate=False):
  ref_dir = os.path.join(args.workdir, 'reference_holdout')
  config = compute_scaling.get_config(
      f'learner={learner},policy={policy},seed={seed},lr={lr},budget={args.steps},'
      f'reference_workdir={ref_dir}')
  with config.unlocked():
    config.evals.test.log_steps = args.eval_every
    if validate:  # The held-out split: the reference's training data, never the learner's.
      config.evals.val = dict(config.evals.test, split='holdout', log_steps=args.steps)
  return config


def tune_dir(args, learner, lr):
  return os.path.join(args.workdir, 'tune', f'{learner}_lr{lr:g}_s{args.tune_seed}')


def run_dir(args, learner, policy, seed):
  return os.path.join(args.workdir, learner, f'{policy}_s{seed}')


def tune_runs(args) -> list[sweep.Run]:
  # Larger learners first: they take longest (`cost` orders the parallel queue).
  return [sweep.Run(f'tune_{learner}_lr{lr:g}', tune_dir(args, learner, lr),
                    lambda l=learner, r=lr: _config(args, l, 'uniform', args.tune_seed, r,
                                                    validate=True), cost=k + 1)
          for k, learner in enumerate(args.learners) for lr in args.lrs]


def chosen_lr(args, learner) -> tuple[float, dict]:
  """The rate whose tuning run scored best on the held-out split, and every rate's score."""
  scores = {}
  for lr in args.lrs:
    final = sweep.final_row(tune_dir(args, learner, lr))
    if final is None:
      raise SystemExit(f'The tuning run {tune_dir(args, learner, lr)} has not finished: rerun '
                       'without --phase main (or with --phase tune) first.')
    scores[f'{lr:g}'] = final[VAL]
  best = max(args.lrs, key=lambda lr: scores[f'{lr:g}'])
  return best, scores


def main_runs(args) -> list[sweep.Run]:
  runs = []
  for k, learner in enumerate(args.learners):
    lr = chosen_lr(args, learner)[0]
    runs += [sweep.Run(f'{learner}_{policy}_s{seed}', run_dir(args, learner, policy, seed),
                       lambda l=learner, p=policy, s=seed, r=lr: _config(args, l, p, s, r),
                       cost=(k + 1) * (2 if policy != 'uniform' else 1))
             for seed in args.seeds for policy in args.policies]
  return runs


def train_runs(args):
  """The reference, the tuning runs, then the reported runs (a --parallel worker runs the
  stage of its --phase)."""
  if not args.queue:
    sweep.train_once(reference.get_config(), os.path.join(args.workdir, 'reference_holdout'))
  sweep.run_phases(args, {'tune': tune_runs, 'main': main_runs}, module=MODULE,
                   parser=build_parser())


def analyze(args) -> dict:
  summary, curves = {}, {}
  for learner in args.learners:
    try:
      lr, scores = chosen_lr(args, learner)
    except SystemExit:
      continue
    per_policy = {p: c for p in args.policies if (c := pc.curves_of(
        {s: run_dir(args, learner, p, s) for s in args.seeds}, args.steps)) is not None}
    if 'uniform' not in per_policy:
      continue
    u = per_policy['uniform']
    target, entries = pc.against_uniform(per_policy, 0.0)  # Clean data.
    per_step = u['flops'][pc.HEADLINE_LEVEL][-1] / u['steps'][-1]
    # What a selecting step costs over a uniform one (actor and reference scoring the super-
    # batch, the actor's training): the overhead the paper's saving must pay back.
    overhead = {p: c['flops'][pc.HEADLINE_LEVEL][-1] / c['steps'][-1] / per_step
                for p, c in per_policy.items()}
    summary[learner] = {
        'model': common.LOCAL_LEARNERS[learner], 'lr': lr,
        'tuning_val_accuracy': scores, 'tune_seed': args.tune_seed,
        'uniform_flops_per_step': per_step, 'flops_per_step_over_uniform': overhead,
        'target_accuracy': target,
        'policies': entries}
    curves[learner] = per_policy
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump({'flops_to_target_ratio_level': pc.HEADLINE_LEVEL, 'steps': args.steps,
               'seeds': args.seeds, 'std_ddof': pc.DDOF, 'learners': summary}, f, indent=1)
  with open(os.path.join(args.out, 'curves.json'), 'w') as f:
    json.dump(curves, f)
  lines = _table(summary, args)
  analysis.write_text(os.path.join(args.out, 'table.md'), lines)
  if summary:
    _plot(curves, summary, args.out)
  print('\n'.join(lines))
  return summary


def _table(summary, args) -> list[str]:
  rows = []
  for learner, s in summary.items():
    for policy, e in s['policies'].items():
      per_seed = e['per_seed_ratios']
      rows.append([
          learner, f'{s["uniform_flops_per_step"] / 1e9:.2f}', f'{s["lr"]:g}', policy,
          analysis.fmt(s['flops_per_step_over_uniform'][policy]),
          analysis.fmt_stat({'mean': e['final_accuracy_mean'], 'std': e['final_accuracy_std'],
                             'n': e['num_seeds'], 'of': len(args.seeds)}, 100),
          '-' if policy == 'uniform' else analysis.fmt_interval(
              e['final_accuracy_minus_uniform'], 100),
          'never' if e['steps_to_target'] is None else
          f'{e["steps_to_target"]} ({analysis.fmt(e["steps_to_target_ratio"])})',
          analysis.fmt(e['flops_to_target_ratio']),
          analysis.fmt(((e['flops_to_target_ratio_by_level'] or {}).get('all'))),
          analysis.fmt_stat(per_seed['steps_to_target_ratio'], always_count=True),
          analysis.fmt_stat(per_seed['flops_to_target_ratio'], always_count=True)])
  head = ['# Bad Students compute scaling (local)', '',
          f'Clean Fashion-MNIST, {args.steps} learner steps, seeds {args.seeds} (learning rate '
          f'per learner chosen on seed {args.tune_seed}, on the held-out split). Target: '
          "uniform's final mean test accuracy (per seed: that seed's). FLOPs ratios count "
          'everything but the reference\'s training ("all counted": with it).', '']
  return head + analysis.markdown_table(
      ['learner', 'uniform GFLOP/step', 'lr', 'policy', 'FLOPs/step vs uniform',
       'final accuracy (%)',
       'minus uniform [95% CI]', 'steps to target (ratio)', 'FLOPs ratio', 'all counted',
       'per-seed steps ratio (k/n)', 'per-seed FLOPs ratio (k/n)'], rows, 'lrrlrrrrrrrr') + [
           '', f'Produced by `{analysis.command(MODULE, args)}`.']


def _plot(curves, summary, out):
  plt = analysis.pyplot()
  learners = list(summary)
  fig, axes = plt.subplots(1, len(learners) + 1, figsize=(5 * len(learners) + 5, 4.2),
                           squeeze=False)
  for ax, learner in zip(axes[0], learners):
    for policy, c in curves[learner].items():
      analysis.plot_seeds(ax, np.asarray(c['flops'][pc.HEADLINE_LEVEL]) / 1e12,
                          [p['acc'] for p in c['per_seed'].values()], scale=100, band='std',
                          style='-', marker='o', ms=2, label=policy)
    ax.axhline(100 * summary[learner]['target_accuracy'], color='k', ls=':', lw=1,
               label='uniform final (target)')
    ax.set_title(f'learner {learner} (lr {summary[learner]["lr"]:g})', fontsize=10)
    ax.set_xlabel('total TFLOPs (reference training excluded)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_ylim(100 * (summary[learner]['target_accuracy'] - 0.12), None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
  ax = axes[0, -1]
  x = [s['uniform_flops_per_step'] / 1e9 for s in summary.values()]
  for k, policy in enumerate(p for p in next(iter(summary.values()))['policies']
                             if p != 'uniform'):
    color = f'C{k + 1}'
    ax.plot(x, [s['flops_per_step_over_uniform'].get(policy) for s in summary.values()], 's--',
            color=color, label=f'{policy}: FLOPs per step / uniform\'s (the overhead)')
    for xi, s in zip(x, summary.values()):
      ratios = s['policies'][policy]['per_seed_ratios']
      got = [r['flops_to_target_ratio'] for r in ratios['per_seed'].values()
             if r['flops_to_target_ratio'] is not None]
      ax.plot([xi] * len(got), got, 'o', color=color, alpha=0.6, ms=5)
      ax.annotate(f'reached {len(got)}/{len(ratios["per_seed"])}', (xi, 0.8), fontsize=7,
                  ha='center', color=color)
    ax.plot([], [], 'o', color=color, alpha=0.6,
            label=f"{policy}: FLOPs to each seed's uniform final / uniform's (dots)")
  ax.axhline(1.0, color='k', ls=':', lw=1, label='uniform')
  ax.axhline(0.75, color='g', ls='--', lw=1, label="paper's goal (<= 0.75x)")
  ax.set_xscale('log')
  ax.set_xticks(x, [f'{learner}\n{xi:.2f}' for learner, xi in zip(summary, x)], fontsize=7)
  ax.minorticks_off()
  ax.set_xlabel('learner, GFLOP per uniform step')
  ax.set_ylabel('ratio to uniform')
  ax.set_ylim(0.7, None)
  ax.set_title('cost and saving vs learner size', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6.5, loc='upper right')
  fig.suptitle('Bad Students compute scaling on Fashion-MNIST: mean ± sample std over seeds')
  analysis.save_figure(fig, os.path.join(out, 'accuracy_and_ratios.png'), dpi=110)


def build_parser() -> argparse.ArgumentParser:
  parser = sweep.make_parser(__doc__, workdir='workdirs/bad_students_scaling',
                             out='results/bad_students/compute_scaling')
  parser.add_argument('--learners', default='w32d2,w64d2,w96d4')
  parser.add_argument('--policies', default='uniform,learnability')
  parser.add_argument('--lrs', default='0.001,0.003')
  parser.add_argument('--tune_seed', type=int, default=10)
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--eval_every', type=int, default=50)
  parser.add_argument('--phase', default='all', choices=('all', 'tune', 'main'),
                      help='Which stage to train (workers get theirs from the parent).')
  return parser


def main(argv=None):
  parser = build_parser()
  args = sweep.parse(parser, argv)
  args.learners = args.learners.split(',')
  args.policies = args.policies.split(',')
  args.lrs = [float(x) for x in str(args.lrs).split(',')]
  if 'uniform' not in args.policies:
    parser.error('--policies must include uniform: it defines the target.')
  sweep.drive(args, train_runs, analyze)


if __name__ == '__main__':
  main()
