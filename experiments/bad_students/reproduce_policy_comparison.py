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
`--analyze_only` redoes the analysis from existing workdirs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from big_vision_style import metrics_writer  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.bad_students import policy_comparison  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.bad_students import reference  # pylint: disable=g-import-not-at-top,wrong-import-position

POLICIES = ('uniform', 'hard_learner', 'easy_reference', 'learnability', 'rho')
ACC = 'eval/test/accuracy'
# The paper's amortisation levels: which FLOP counter each uses.
LEVELS = {
    'all': 'flops/total',
    'pretrained_reference': 'flops/total_pretrained_reference',
    'cached_reference_scores': 'flops/total_cached_reference',
    'learner_only': 'flops/total_learner_only',
}
HEADLINE_LEVEL = 'pretrained_reference'  # "Everything counted except reference training".


def run_dir(workdir, noise, policy, seed):
  return os.path.join(workdir, f'noise{noise:g}', f'{policy}_s{seed}')


def run_all(args):
  ref_dir = os.path.join(args.workdir, 'reference_holdout')
  t0 = time.time()
  train.train(reference.get_config(), ref_dir)
  logging.info('Reference ready (%.0fs).', time.time() - t0)
  for seed in args.seeds:  # Seeds outermost: an interrupted sweep still has whole seeds.
    for noise in args.noise:
      for policy in args.policies:
        arg = (f'policy={policy},seed={seed},label_noise={noise},steps={args.steps},'
               f'reference_workdir={ref_dir}')
        config = policy_comparison.get_config(arg)
        with config.unlocked():
          config.evals.test.log_steps = args.eval_every
        t = time.time()
        final, _ = train.train(config, run_dir(args.workdir, noise, policy, seed))
        logging.info('%s noise=%g seed=%d: accuracy %.4f (%.0fs, total %.0fs)', policy, noise,
                     seed, final.get(ACC, float('nan')), time.time() - t, time.time() - t0)


def _curves(workdir, noise, policy, seeds, steps):
  """Per-seed evaluation rows of finished runs."""
  out = {}
  for seed in seeds:
    path = run_dir(workdir, noise, policy, seed)
    if not os.path.exists(os.path.join(path, 'metrics.jsonl')):
      continue
    rows = [r for r in metrics_writer.read_metrics(path) if ACC in r]
    if rows and rows[-1]['step'] == steps:  # Finished runs only.
      out[seed] = rows
  return out


def _first_reach(steps, accs, flops_by_level, target):
  for i, acc in enumerate(accs):
    if acc >= target - 1e-12:
      return steps[i], {lvl: f[i] for lvl, f in flops_by_level.items()}
  return None, None


def analyze(args) -> dict:
  summary, curves_out = {}, {}
  for noise in args.noise:
    variant = 'clean' if noise == 0 else f'noise{noise:g}'
    per_policy = {}
    for policy in args.policies:
      runs = _curves(args.workdir, noise, policy, args.seeds, args.steps)
      if not runs:
        continue
      # Mean curve over the seeds that finished (they share evaluation steps).
      n = min(len(r) for r in runs.values())
      steps = [r['step'] for r in next(iter(runs.values()))[:n]]
      accs = np.mean([[r[ACC] for r in rows[:n]] for rows in runs.values()], axis=0)
      flops = {lvl: np.mean([[r[key] for r in rows[:n]] for rows in runs.values()], axis=0)
               for lvl, key in LEVELS.items()}
      finals = [rows[-1][ACC] for rows in runs.values()]
      per_policy[policy] = dict(steps=steps, acc=accs.tolist(),
                                flops={k: v.tolist() for k, v in flops.items()},
                                finals=finals, seeds=sorted(runs),
                                flipped_selected=[np.mean([r.get('selection/flipped_selected',
                                                                 np.nan) for r in rows])
                                                  for rows in runs.values()])
    if 'uniform' not in per_policy:
      continue
    target = float(np.mean(per_policy['uniform']['finals']))
    u_step, u_flops = _first_reach(per_policy['uniform']['steps'], per_policy['uniform']['acc'],
                                   per_policy['uniform']['flops'], target)
    summary[variant] = {'label_noise': noise, 'target_accuracy': target, 'policies': {}}
    for policy, c in per_policy.items():
      step, fl = _first_reach(c['steps'], c['acc'], c['flops'], target)
      entry = {
          'final_accuracy_mean': float(np.mean(c['finals'])),
          'final_accuracy_std': float(np.std(c['finals'])),
          'final_accuracy_per_seed': dict(zip(map(str, c['seeds']), c['finals'])),
          'steps_to_target': step,
          'steps_to_target_ratio': (step / u_step) if step is not None else None,
          'flops_to_target_ratio': (fl[HEADLINE_LEVEL] / u_flops[HEADLINE_LEVEL]
                                    if fl is not None else None),
          'flops_to_target_ratio_by_level': ({lvl: fl[lvl] / u_flops[lvl] for lvl in LEVELS}
                                             if fl is not None else None),
          'mean_fraction_flipped_selected': (float(np.nanmean(c['flipped_selected']))
                                             if noise else None),
          'num_seeds': len(c['seeds']),
      }
      summary[variant]['policies'][policy] = entry
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
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'accuracy.png'), dpi=110)
  plt.close(fig)

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
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'amortisation.png'), dpi=100)
  plt.close(fig)


def _table(summary) -> str:
  lines = ['| data | policy | seeds | final accuracy | steps to target (ratio) | '
           'FLOPs to target ratio (ref. training excluded) | all counted | cached ref. | '
           'flipped among selected |', '|---|---|---|---|---|---|---|---|---|']
  fmt = lambda x: '-' if x is None else f'{x:.2f}'
  for variant, s in summary.items():
    if not isinstance(s, dict) or 'policies' not in s:
      continue
    for policy, e in s['policies'].items():
      by_level = e['flops_to_target_ratio_by_level'] or {}
      flipped = e['mean_fraction_flipped_selected']
      lines.append(
          f'| {variant} | {policy} | {e["num_seeds"]} | {100 * e["final_accuracy_mean"]:.2f} '
          f'± {100 * e["final_accuracy_std"]:.2f} | {e["steps_to_target"] or "-"} '
          f'({fmt(e["steps_to_target_ratio"])}) | {fmt(e["flops_to_target_ratio"])} | '
          f'{fmt(by_level.get("all"))} | {fmt(by_level.get("cached_reference_scores"))} | '
          f'{"-" if flipped is None else f"{100 * flipped:.1f}%"} |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='workdirs/bad_students')
  parser.add_argument('--out', default='results/bad_students')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--noise', default='0,0.3')
  parser.add_argument('--policies', default=','.join(POLICIES))
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--eval_every', type=int, default=100)
  parser.add_argument('--analyze_only', action='store_true')
  args = parser.parse_args()
  args.seeds = [int(s) for s in args.seeds.split(',')]
  args.noise = [float(n) for n in args.noise.split(',')]
  args.policies = args.policies.split(',')
  if 'uniform' not in args.policies:
    parser.error('--policies must include uniform: it defines the target.')
  train.setup_script_logging()
  if not args.analyze_only:
    run_all(args)
  analyze(args)


if __name__ == '__main__':
  main()
