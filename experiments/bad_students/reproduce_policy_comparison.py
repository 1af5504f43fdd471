r"""Local reproduction of the Bad Students policy comparison, and its analysis.

  python -m experiments.bad_students.reproduce_policy_comparison \
      --workdir workdirs/bad_students --out results/bad_students

Trains the held-out reference once, then uniform, hard-learner, easy-reference, learnability
and RHO with the same learner budget, for each seed and each label-noise rate; finished runs
are skipped, unfinished ones resume, so the command can be rerun after an interruption. Then
writes to --out:
  summary.json    per dataset variant and policy: final accuracy (mean, std, per seed),
                  steps_to_target_ratio and flops_to_target_ratio (target: the uniform
                  baseline's final mean accuracy), at every amortisation level;
  curves.json     the mean curves the figures show;
  accuracy.png    test accuracy vs learner steps and vs total FLOPs (reference training
                  excluded), one row per dataset variant;
  amortisation.png  test accuracy vs FLOPs at the paper's four amortisation levels.
`--analyze_only` redoes the analysis from existing workdirs; `--parallel 2` trains the runs with
two single-core workers sharing one queue (experiments/sweep.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np

from experiments import analysis
from experiments import sweep
from experiments.bad_students import policy_comparison
from experiments.bad_students import reference

MODULE = 'experiments.bad_students.reproduce_policy_comparison'
POLICIES = ('uniform', 'hard_learner', 'easy_reference', 'learnability', 'rho')
ACC = 'eval/test/accuracy'
FLIPPED = 'selection/flipped_selected'
# The paper's amortisation levels: which FLOP counter each uses.
LEVELS = {
    'all': 'flops/total',
    'pretrained_reference': 'flops/total_pretrained_reference',
    'cached_reference_scores': 'flops/total_cached_reference',
    'learner_only': 'flops/total_learner_only',
}
HEADLINE_LEVEL = 'pretrained_reference'  # "Everything counted except reference training".
REACH_TOL = 1e-12  # A mean accuracy at `target - REACH_TOL` has reached the target.
DDOF = 0  # The committed summary's std over seeds (analysis: a follow-up switches to 1).


def run_dir(workdir, noise, policy, seed):
  return os.path.join(workdir, f'noise{noise:g}', f'{policy}_s{seed}')


def learner_runs(args) -> list[sweep.Run]:
  """Seeds outermost: an interrupted sequential sweep still has whole seeds."""
  ref_dir = os.path.join(args.workdir, 'reference_holdout')

  def config(noise, policy, seed):
    config = policy_comparison.get_config(
        f'policy={policy},seed={seed},label_noise={noise},steps={args.steps},'
        f'reference_workdir={ref_dir}')
    with config.unlocked():
      config.evals.test.log_steps = args.eval_every
    return config

  return [sweep.Run(f'noise{noise:g}_{policy}_s{seed}', run_dir(args.workdir, noise, policy, seed),
                    lambda n=noise, p=policy, s=seed: config(n, p, s))
          for seed in args.seeds for noise in args.noise for policy in args.policies]


def run_all(args):
  """The reference, then every learner run (`args` as main's, or any namespace with workdir,
  seeds, noise, policies, steps, eval_every: big_vision_style/tools/demo.py)."""
  queue = getattr(args, 'queue', '')
  if not queue:  # Workers start after the parent trained the reference.
    sweep.train_once(reference.get_config(), os.path.join(args.workdir, 'reference_holdout'))
    logging.info('Reference ready.')

  def report(run, final, seconds):
    logging.info('%s: accuracy %.4f (%.0fs)', run.name, final.get(ACC, float('nan')), seconds)

  sweep.run_all(learner_runs(args), parallel=getattr(args, 'parallel', 1), queue=queue,
                worker=lambda q: sweep.worker_command(MODULE, build_parser(), args, q,
                                                      exclude=('out',)),
                queue_root=os.path.join(args.workdir, 'queue'), report=report)


def finished_rows(path, steps) -> list[dict] | None:
  """The evaluation rows of the run at `path` if it finished `steps` steps, else None."""
  if not os.path.exists(os.path.join(path, 'metrics.jsonl')):
    return None
  rows = analysis.read_rows(path, where=ACC)
  return rows if rows and rows[-1]['step'] == steps else None


def policy_curves(args, noise, policy) -> dict | None:
  """The seed-mean curves of a policy's finished runs (they share evaluation steps), with its
  per-seed final accuracies and fractions of flipped labels among the selected examples."""
  runs = {seed: rows for seed in args.seeds
          if (rows := finished_rows(run_dir(args.workdir, noise, policy, seed), args.steps))}
  if not runs:
    return None
  keys = {'acc': ACC, **LEVELS}
  mean = analysis.mean_curve([analysis.columns(rows, {'step': 'step', **keys})
                              for rows in runs.values()], {k: k for k in keys})
  return dict(steps=mean['step'], acc=mean['acc'].tolist(),
              flops={lvl: mean[lvl].tolist() for lvl in LEVELS},
              finals=[rows[-1][ACC] for rows in runs.values()], seeds=list(runs),
              flipped_selected=[np.mean([r.get(FLIPPED, np.nan) for r in rows])
                                for rows in runs.values()])


def _reach(c, target):
  """(step, FLOPs per level) where the mean curve `c` first reaches `target`; (None, None)."""
  i = analysis.first_reach(c['acc'], target, tol=REACH_TOL)
  return (None, None) if i is None else (c['steps'][i], {lvl: f[i] for lvl, f in
                                                         c['flops'].items()})


def policy_entry(c, noise, target, u_step, u_flops) -> dict:
  step, fl = _reach(c, target)
  mean, std = analysis.mean_std(c['finals'], ddof=DDOF)
  return {
      'final_accuracy_mean': mean,
      'final_accuracy_std': std,
      'final_accuracy_per_seed': dict(zip(map(str, c['seeds']), c['finals'])),
      'steps_to_target': step,
      'steps_to_target_ratio': analysis.ratio(step, u_step),
      'flops_to_target_ratio': (fl[HEADLINE_LEVEL] / u_flops[HEADLINE_LEVEL]
                                if fl is not None else None),
      'flops_to_target_ratio_by_level': ({lvl: fl[lvl] / u_flops[lvl] for lvl in LEVELS}
                                         if fl is not None else None),
      'mean_fraction_flipped_selected': (float(np.nanmean(c['flipped_selected']))
                                         if noise else None),
      'num_seeds': len(c['seeds']),
  }


def analyze(args) -> dict:
  summary, curves_out = {}, {}
  for noise in args.noise:
    variant = 'clean' if noise == 0 else f'noise{noise:g}'
    per_policy = {policy: c for policy in args.policies
                  if (c := policy_curves(args, noise, policy)) is not None}
    if 'uniform' not in per_policy:
      continue
    target = float(np.mean(per_policy['uniform']['finals']))
    u_step, u_flops = _reach(per_policy['uniform'], target)
    summary[variant] = {'label_noise': noise, 'target_accuracy': target, 'policies': {
        policy: policy_entry(c, noise, target, u_step, u_flops)
        for policy, c in per_policy.items()}}
    curves_out[variant] = per_policy
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump({'flops_to_target_ratio_level': HEADLINE_LEVEL, 'steps': args.steps,
               'seeds': args.seeds, **summary}, f, indent=1)
  with open(os.path.join(args.out, 'curves.json'), 'w') as f:
    json.dump(curves_out, f)
  _plot(curves_out, summary, args.out)
  print(_table(summary))
  return summary


def _plot(curves, summary, out):
  variants = list(curves)
  if not variants:
    return
  plt = analysis.pyplot()
  fig, axes = plt.subplots(len(variants), 2, figsize=(12, 4.2 * len(variants)), squeeze=False)
  for row, variant in enumerate(variants):
    for policy, c in curves[variant].items():
      acc = 100 * np.asarray(c['acc'])
      axes[row, 0].plot(c['steps'], acc, marker='o', ms=3, label=policy)
      axes[row, 1].plot(c['flops'][HEADLINE_LEVEL], acc, marker='o', ms=3, label=policy)
    for ax in axes[row]:
      ax.axhline(100 * summary[variant]['target_accuracy'], color='k', ls=':', lw=1,
                 label='uniform final (target)')
      ax.set_ylabel(f'test accuracy (%), {variant}')
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8, loc='lower right')
    axes[row, 0].set_xlabel('learner steps')
    axes[row, 1].set_xlabel('total FLOPs, reference training excluded')
    lo = min(min(c['acc']) for c in curves[variant].values())
    for ax in axes[row]:
      ax.set_ylim(100 * max(lo, summary[variant]['target_accuracy'] - 0.15), None)
  fig.suptitle('Bad Students on Fashion-MNIST: mean over seeds')
  analysis.save_figure(fig, os.path.join(out, 'accuracy.png'), dpi=110)

  fig, axes = plt.subplots(len(variants), len(LEVELS), figsize=(18, 4 * len(variants)),
                           squeeze=False)
  for row, variant in enumerate(variants):
    for col, level in enumerate(LEVELS):
      ax = axes[row, col]
      for policy, c in curves[variant].items():
        ax.plot(c['flops'][level], 100 * np.asarray(c['acc']), marker='o', ms=2, label=policy)
      ax.axhline(100 * summary[variant]['target_accuracy'], color='k', ls=':', lw=1)
      ax.set_title(f'{variant}: {level}', fontsize=10)
      ax.set_xlabel('FLOPs')
      ax.grid(alpha=0.3)
      ax.set_ylim(100 * (summary[variant]['target_accuracy'] - 0.15), None)
    axes[row, 0].set_ylabel('test accuracy (%)')
    axes[row, 0].legend(fontsize=8, loc='lower right')
  analysis.save_figure(fig, os.path.join(out, 'amortisation.png'), dpi=100)


def _table(summary) -> str:
  fmt = analysis.fmt
  rows = []
  for variant, s in summary.items():
    for policy, e in s['policies'].items():
      by_level = e['flops_to_target_ratio_by_level'] or {}
      flipped = e['mean_fraction_flipped_selected']
      rows.append([variant, policy, e['num_seeds'],
                   f'{100 * e["final_accuracy_mean"]:.2f} ± {100 * e["final_accuracy_std"]:.2f}',
                   f'{e["steps_to_target"] or "-"} ({fmt(e["steps_to_target_ratio"])})',
                   fmt(e['flops_to_target_ratio']), fmt(by_level.get('all')),
                   fmt(by_level.get('cached_reference_scores')),
                   '-' if flipped is None else f'{100 * flipped:.1f}%'])
  return '\n'.join(analysis.markdown_table(
      ['data', 'policy', 'seeds', 'final accuracy', 'steps to target (ratio)',
       'FLOPs to target ratio (ref. training excluded)', 'all counted', 'cached ref.',
       'flipped among selected'], rows, 'lllllllll'))


def build_parser() -> argparse.ArgumentParser:
  parser = sweep.make_parser(__doc__, workdir='workdirs/bad_students',
                             out='results/bad_students')
  parser.add_argument('--noise', default='0,0.3')
  parser.add_argument('--policies', default=','.join(POLICIES))
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--eval_every', type=int, default=100)
  return parser


def parse_args(argv=None):
  parser = build_parser()
  args = sweep.parse(parser, argv)
  args.noise = [float(n) for n in args.noise.split(',')]
  args.policies = args.policies.split(',')
  if 'uniform' not in args.policies:
    parser.error('--policies must include uniform: it defines the target.')
  return args


def main():
  sweep.drive(parse_args(), run_all, analyze)


if __name__ == '__main__':
  main()
