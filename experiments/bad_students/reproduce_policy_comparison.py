r"""Local reproduction of the Bad Students policy comparison, and its analysis.

  python -m experiments.bad_students.reproduce_policy_comparison \
      --workdir workdirs/bad_students --out results/bad_students

Trains the held-out reference once, then uniform, hard-learner, easy-reference, learnability
and RHO with the same learner budget, for each seed and each label-noise rate; finished runs
are skipped, unfinished ones resume, so the command can be rerun after an interruption. Then
writes to --out:
  summary.json    per dataset variant and policy: final accuracy (mean, sample std, per seed),
                  its paired difference to uniform by seed (95% t-interval),
                  steps_to_target_ratio and flops_to_target_ratio (target: the uniform
                  baseline's final mean accuracy, reached by the seed-mean curves), at every
                  amortisation level; and, when the per-seed curves are there, the same ratios
                  per seed (target: that seed's uniform final accuracy), with "reached in k
                  of n seeds" and 95% t-intervals;
  curves.json     the mean curves the figures show, every seed's final accuracy and fraction
                  of flipped labels selected, and every seed's curves ('per_seed');
  table.md        the table of summary.json;
  accuracy.png    test accuracy vs learner steps and vs total FLOPs (reference training
                  excluded), one row per dataset variant: mean, ± sample std band over seeds
                  (or, without per-seed curves, every seed's final accuracy as a point);
  amortisation.png  test accuracy vs FLOPs at the paper's four amortisation levels.
`--analyze_only` redoes the analysis from existing workdirs; `--regenerate_from results/...`
redoes it from a results folder's committed curves.json (no workdirs); `--parallel 2` trains
the runs with two single-core workers sharing one queue (experiments/sweep.py).

The first committed results (results/bad_students) kept only the seed-mean curves with every
seed's final accuracy: their per-seed ratios cannot be recomputed, and the table says so.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np

from experiments import analysis
from experiments import sweep
from experiments.bad_students import actor_size_sweep
from experiments.bad_students import common
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
DDOF = analysis.SAMPLE  # The sample std over seeds.
NO_PER_SEED_CURVES = ('per-seed curves not committed (only the seed-mean curves and every '
                      "seed's final accuracy): per-seed ratios cannot be recomputed")


def strong_reference_config():
  """The ablation's strong reference: B-size (2x smaller than the learner, 16x larger than the
  Ti actor), 30 epochs of the 10k held-out split."""
  config = actor_size_sweep.get_config('reference_only,actor=B')
  with config.unlocked():
    config.total_epochs = 30
  return config


# The frozen references a comparison can score with (--reference): its workdir under
# --workdir, how to train it, and the model the learner's config must name to load it.
REFERENCES = {
    'holdout': ('reference_holdout', reference.get_config, None),
    'B_30ep': ('reference_B_30ep', strong_reference_config,
               dict(common.LOCAL_ACTORS['B'], pool_type='gap')),
}


def run_dir(workdir, noise, policy, seed):
  return os.path.join(workdir, f'noise{noise:g}', f'{policy}_s{seed}')


def learner_runs(args) -> list[sweep.Run]:
  """Seeds outermost: an interrupted sequential sweep still has whole seeds."""
  ref_name, _, ref_model = REFERENCES[getattr(args, 'reference', 'holdout')]
  ref_dir = os.path.join(args.workdir, ref_name)

  def config(noise, policy, seed):
    config = policy_comparison.get_config(
        f'policy={policy},seed={seed},label_noise={noise},steps={args.steps},'
        f'reference_workdir={ref_dir}')
    with config.unlocked():
      config.evals.test.log_steps = args.eval_every
      if ref_model is not None:  # The model must match the checkpoint.
        config.reference_model = ref_model
    return config

  return [sweep.Run(f'noise{noise:g}_{policy}_s{seed}', run_dir(args.workdir, noise, policy, seed),
                    lambda n=noise, p=policy, s=seed: config(n, p, s))
          for seed in args.seeds for noise in args.noise for policy in args.policies]


def run_all(args):
  """The reference, then every learner run (`args` as main's, or any namespace with workdir,
  seeds, noise, policies, steps, eval_every: big_vision_style/tools/demo.py)."""
  queue = getattr(args, 'queue', '')
  if not queue:  # Workers start after the parent trained the reference.
    ref_name, ref_config, _ = REFERENCES[getattr(args, 'reference', 'holdout')]
    sweep.train_once(ref_config(), os.path.join(args.workdir, ref_name))
    logging.info('Reference ready.')

  def report(run, final, seconds):
    logging.info('%s: accuracy %.4f (%.0fs)', run.name, final.get(ACC, float('nan')), seconds)

  sweep.run_all(learner_runs(args), parallel=getattr(args, 'parallel', 1), queue=queue,
                worker=lambda q: sweep.worker_command(MODULE, build_parser(), args, q,
                                                      exclude=('out', 'regenerate_from')),
                queue_root=os.path.join(args.workdir, 'queue'), report=report)


def finished_rows(path, steps) -> list[dict] | None:
  """The evaluation rows of the run at `path` if it finished `steps` steps, else None."""
  if not os.path.exists(os.path.join(path, 'metrics.jsonl')):
    return None
  rows = analysis.read_rows(path, where=ACC)
  return rows if rows and rows[-1]['step'] == steps else None


def policy_curves(args, noise, policy) -> dict | None:
  """The seed-mean curves of a policy's finished runs (`curves_of`)."""
  return curves_of({seed: run_dir(args.workdir, noise, policy, seed) for seed in args.seeds},
                   args.steps)


def curves_of(paths: dict, steps: int) -> dict | None:
  """The seed-mean curves of the finished runs among `paths` (seed -> workdir; they share
  evaluation steps), with their per-seed final accuracies, fractions of flipped labels among
  the selected examples and curves ('per_seed': seed -> acc and flops per level, truncated as
  the mean is)."""
  runs = {seed: rows for seed, path in paths.items() if (rows := finished_rows(path, steps))}
  if not runs:
    return None
  keys = {'acc': ACC, **LEVELS}
  columns = {seed: analysis.columns(rows, {'step': 'step', **keys}) for seed, rows in runs.items()}
  mean = analysis.mean_curve(list(columns.values()), {k: k for k in keys})
  n = len(mean['step'])
  return dict(steps=mean['step'], acc=mean['acc'].tolist(),
              flops={lvl: mean[lvl].tolist() for lvl in LEVELS},
              finals=[rows[-1][ACC] for rows in runs.values()], seeds=list(runs),
              flipped_selected=[np.mean([r.get(FLIPPED, np.nan) for r in rows])
                                for rows in runs.values()],
              per_seed={str(seed): {'acc': c['acc'][:n],
                                    'flops': {lvl: c[lvl][:n] for lvl in LEVELS}}
                        for seed, c in columns.items()})


def _reach(c, target):
  """(step, FLOPs per level) where the mean curve `c` first reaches `target`; (None, None)."""
  i = analysis.first_reach(c['acc'], target, tol=REACH_TOL)
  return (None, None) if i is None else (c['steps'][i], {lvl: f[i] for lvl, f in
                                                         c['flops'].items()})


def _finals(c) -> dict:
  return dict(zip(map(str, c['seeds']), c['finals']))


def per_seed_ratios(c, u) -> dict | None:
  """Per seed s: the first evaluation of the policy's seed-s curve at or above uniform seed s's
  final accuracy, over uniform seed s's own first evaluation at or above it (steps, and FLOPs
  at the headline level); over seeds, with how many reached and 95% t-intervals. None without
  per-seed curves (`c` or `u` lacks 'per_seed')."""
  if 'per_seed' not in c or 'per_seed' not in u:
    return None
  rows = {}
  for seed, mine in c['per_seed'].items():
    theirs = u['per_seed'].get(seed)
    if theirs is None:
      continue
    target = _finals(u)[seed]
    a, b = (analysis.first_reach(x['acc'], target, tol=REACH_TOL) for x in (mine, theirs))
    rows[seed] = {
        'steps_to_target_ratio': None if a is None else c['steps'][a] / u['steps'][b],
        'flops_to_target_ratio': None if a is None else (
            mine['flops'][HEADLINE_LEVEL][a] / theirs['flops'][HEADLINE_LEVEL][b])}
  out = {'target': "each seed's uniform final accuracy", 'per_seed': rows}
  for key in ('steps_to_target_ratio', 'flops_to_target_ratio'):
    values = [r[key] for r in rows.values()]
    out[key] = {**analysis.seed_stat(values, ddof=DDOF),
                'interval': analysis.mean_interval([v for v in values if v is not None])}
  return out


def policy_entry(c, noise, target, u_step, u_flops, u) -> dict:
  step, fl = _reach(c, target)
  mean, std = analysis.mean_std(c['finals'], ddof=DDOF) if len(c['finals']) > DDOF else (
      float(np.mean(c['finals'])), None)
  flipped = [v for v in c['flipped_selected'] if not np.isnan(v)]
  return {
      'final_accuracy_mean': mean,
      'final_accuracy_std': std,
      'final_accuracy_per_seed': _finals(c),
      'final_accuracy_minus_uniform': analysis.paired_by_seed(_finals(c), _finals(u)),
      'steps_to_target': step,
      'steps_to_target_ratio': analysis.ratio(step, u_step),
      'flops_to_target_ratio': (fl[HEADLINE_LEVEL] / u_flops[HEADLINE_LEVEL]
                                if fl is not None else None),
      'flops_to_target_ratio_by_level': ({lvl: fl[lvl] / u_flops[lvl] for lvl in LEVELS}
                                         if fl is not None else None),
      'per_seed_ratios': per_seed_ratios(c, u),
      'mean_fraction_flipped_selected': (float(np.nanmean(c['flipped_selected']))
                                         if noise else None),
      'fraction_flipped_selected_std': (analysis.seed_stat(flipped, ddof=DDOF)['std']
                                        if noise and flipped else None),
      'num_seeds': len(c['seeds']),
  }


def against_uniform(per_policy: dict, noise: float) -> tuple[float, dict]:
  """(target: uniform's final mean accuracy, policy -> `policy_entry` against it), for the
  `curves_of` of each policy on one data variant (uniform among them)."""
  u = per_policy['uniform']
  target = float(np.mean(u['finals']))
  u_step, u_flops = _reach(u, target)
  return target, {policy: policy_entry(c, noise, target, u_step, u_flops, u)
                  for policy, c in per_policy.items()}


def collect_curves(args) -> dict:
  """Variant ('clean', 'noise0.3') -> policy -> `policy_curves`, for variants with uniform."""
  curves = {}
  for noise in args.noise:
    per_policy = {policy: c for policy in args.policies
                  if (c := policy_curves(args, noise, policy)) is not None}
    if 'uniform' in per_policy:
      curves['clean' if noise == 0 else f'noise{noise:g}'] = per_policy
  return curves


def noise_of(variant: str) -> float:
  return 0.0 if variant == 'clean' else float(variant[len('noise'):])


def analyze(args) -> dict:
  return analyze_curves(collect_curves(args), args.out, args.steps, args.seeds)


def analyze_curves(curves: dict, out: str, steps: int, seeds) -> dict:
  """summary.json, curves.json, table.md and the figures from `collect_curves`'s curves."""
  summary = {}
  for variant, per_policy in curves.items():
    noise = noise_of(variant)
    target, entries = against_uniform(per_policy, noise)
    summary[variant] = {'label_noise': noise, 'target_accuracy': target, 'policies': entries}
  os.makedirs(out, exist_ok=True)
  has_per_seed = all('per_seed' in c for v in curves.values() for c in v.values())
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump({'flops_to_target_ratio_level': HEADLINE_LEVEL, 'steps': steps, 'seeds': seeds,
               'std_ddof': DDOF,
               **({} if has_per_seed else {'per_seed_ratios_note': NO_PER_SEED_CURVES}),
               **summary}, f, indent=1)
  with open(os.path.join(out, 'curves.json'), 'w') as f:
    json.dump(curves, f)
  _plot(curves, summary, out)
  table = _table(summary)
  analysis.write_text(os.path.join(out, 'table.md'), [table])
  print(table)
  return summary


def regenerate(results: str, out: str) -> dict:
  """summary.json, table.md and the figures again from a results folder's committed
  curves.json and summary.json (steps, seeds), without the run workdirs."""
  with open(os.path.join(results, 'curves.json')) as f:
    curves = json.load(f)
  with open(os.path.join(results, 'summary.json')) as f:
    committed = json.load(f)
  return analyze_curves(curves, out, committed['steps'], committed['seeds'])


def _plot(curves, summary, out):
  variants = list(curves)
  if not variants:
    return
  plt = analysis.pyplot()

  def draw(ax, c, x_of, **kw):
    """The mean curve against x_of(curve); its ± std band over seeds when there are per-seed
    curves, else every seed's final accuracy as a point at the final x (mean ± std bar)."""
    x = x_of(c)
    if 'per_seed' in c:
      line = analysis.plot_seeds(ax, x, [p['acc'] for p in c['per_seed'].values()], scale=100,
                                 band='std', style='-', marker='o', ms=2, **kw)
    else:
      line, = ax.plot(x, 100 * np.asarray(c['acc']), marker='o', ms=2, **kw)
      analysis.seed_points(ax, [x[-1]], [c['finals']], scale=100, color=line.get_color(),
                           marker='o', ms=4)
      if len(c['finals']) > 1:
        ax.errorbar([x[-1]], [100 * np.mean(c['finals'])],
                    [100 * np.std(c['finals'], ddof=DDOF)], color=line.get_color(), capsize=3)
    return line

  how = ('band: ± sample std over seeds' if all('per_seed' in c for v in curves.values()
                                                 for c in v.values())
         else "points: each seed's final accuracy, bar: ± sample std (per-seed curves not "
         'committed)')
  fig, axes = plt.subplots(len(variants), 3, figsize=(17, 4.2 * len(variants)), squeeze=False,
                           gridspec_kw={'width_ratios': [1, 1, 0.6]})
  for row, variant in enumerate(variants):
    strip = axes[row, 2]  # Every seed's final accuracy, per policy: the spread at a glance.
    for k, (policy, c) in enumerate(curves[variant].items()):
      line = draw(axes[row, 0], c, lambda c: c['steps'], label=policy)
      draw(axes[row, 1], c, lambda c: c['flops'][HEADLINE_LEVEL], label=policy)
      analysis.seed_points(strip, [k], [c['finals']], scale=100, color=line.get_color(),
                           marker='o', ms=5)
      if len(c['finals']) > 1:
        strip.errorbar([k + 0.15], [100 * np.mean(c['finals'])],
                       [100 * np.std(c['finals'], ddof=DDOF)], color=line.get_color(),
                       marker='_', ms=10, capsize=3)
    strip.axhline(100 * summary[variant]['target_accuracy'], color='k', ls=':', lw=1)
    strip.set_xticks(range(len(curves[variant])), list(curves[variant]), rotation=30,
                     fontsize=8)
    strip.set_ylabel('final test accuracy (%)')
    strip.set_title(f'{variant}: each seed (dots), mean ± sample std', fontsize=9)
    strip.grid(alpha=0.3)
    for ax in axes[row, :2]:
      ax.axhline(100 * summary[variant]['target_accuracy'], color='k', ls=':', lw=1,
                 label='uniform final (target)')
      ax.set_ylabel(f'test accuracy (%), {variant}')
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8, loc='lower right')
    axes[row, 0].set_xlabel('learner steps')
    axes[row, 1].set_xlabel('total FLOPs, reference training excluded')
    lo = min(min(c['acc']) for c in curves[variant].values())
    for ax in axes[row, :2]:
      ax.set_ylim(100 * max(lo, summary[variant]['target_accuracy'] - 0.15), None)
  fig.suptitle(f'Bad Students on Fashion-MNIST: mean over seeds ({how})')
  analysis.save_figure(fig, os.path.join(out, 'accuracy.png'), dpi=110)

  fig, axes = plt.subplots(len(variants), len(LEVELS), figsize=(18, 4 * len(variants)),
                           squeeze=False)
  for row, variant in enumerate(variants):
    for col, level in enumerate(LEVELS):
      ax = axes[row, col]
      for policy, c in curves[variant].items():
        draw(ax, c, lambda c, level=level: c['flops'][level], label=policy)
      ax.axhline(100 * summary[variant]['target_accuracy'], color='k', ls=':', lw=1)
      ax.set_title(f'{variant}: {level}', fontsize=10)
      ax.set_xlabel('FLOPs')
      ax.grid(alpha=0.3)
      ax.set_ylim(100 * (summary[variant]['target_accuracy'] - 0.15), None)
    axes[row, 0].set_ylabel('test accuracy (%)')
    axes[row, 0].legend(fontsize=8, loc='lower right')
  fig.suptitle(f'Bad Students: accuracy vs FLOPs at the four amortisation levels ({how})')
  analysis.save_figure(fig, os.path.join(out, 'amortisation.png'), dpi=100)


def _table(summary) -> str:
  fmt, fmt_interval = analysis.fmt, analysis.fmt_interval
  rows = []
  for variant, s in summary.items():
    for policy, e in s['policies'].items():
      by_level = e['flops_to_target_ratio_by_level'] or {}
      flipped = e['mean_fraction_flipped_selected']
      std = '-' if e['final_accuracy_std'] is None else f'{100 * e["final_accuracy_std"]:.2f}'
      per_seed = e['per_seed_ratios']
      rows.append([variant, policy, e['num_seeds'],
                   f'{100 * e["final_accuracy_mean"]:.2f} ± {std}',
                   '-' if policy == 'uniform' else fmt_interval(
                       e['final_accuracy_minus_uniform'], 100),
                   'never' if e['steps_to_target'] is None else
                   f'{e["steps_to_target"]} ({fmt(e["steps_to_target_ratio"])})',
                   fmt(e['flops_to_target_ratio']), fmt(by_level.get('all')),
                   fmt(by_level.get('cached_reference_scores')),
                   'not committed' if per_seed is None else analysis.fmt_stat(
                       per_seed['steps_to_target_ratio'], always_count=True),
                   'not committed' if per_seed is None else analysis.fmt_stat(
                       per_seed['flops_to_target_ratio'], always_count=True),
                   '-' if flipped is None else f'{100 * flipped:.1f}%'])
  return '\n'.join(analysis.markdown_table(
      ['data', 'policy', 'seeds', 'final accuracy (mean ± sample std)',
       'final minus uniform, paired by seed [95% t-interval]',
       'steps to target (ratio), seed-mean curves',
       'FLOPs to target ratio (ref. training excluded)', 'all counted', 'cached ref.',
       "per-seed steps ratio (to each seed's uniform final; k/n reached)",
       'per-seed FLOPs ratio (k/n reached)', 'flipped among selected'], rows, 'llllllllllll'))


def build_parser() -> argparse.ArgumentParser:
  parser = sweep.make_parser(__doc__, workdir='workdirs/bad_students',
                             out='results/bad_students')
  parser.add_argument('--noise', default='0,0.3')
  parser.add_argument('--policies', default=','.join(POLICIES))
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--eval_every', type=int, default=100)
  parser.add_argument('--reference', default='holdout', choices=sorted(REFERENCES),
                      help='The frozen reference: holdout (Ti, 10 epochs of the held-out '
                      'split) or B_30ep (the ablation\'s strong one, B-size, 30 epochs).')
  parser.add_argument('--regenerate_from', default='',
                      help='A results folder: redo its summary, table and figures from its '
                      'committed curves.json (no workdirs, no training).')
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
  args = parse_args()
  if args.regenerate_from:
    regenerate(args.regenerate_from, args.out)
    return
  sweep.drive(args, run_all, analyze)


if __name__ == '__main__':
  main()
