r"""Local reproduction of ReLA's Table 1 on Fashion-MNIST, and its analysis.

  python -m experiments.rela.reproduce_table1 --workdir workdirs/rela --out results/rela

1. Trains the priors (experiments/rela/prior.py: digits, half_classes, holdout, and the label-
   free byol_holdout; `random` needs no training) and computes each prior's targets once
   (rela_targets.py).
2. For each seed, objective (BYOL: linear-probe accuracy on the test split; supervised: test
   accuracy) and budget r in 10/20/50%: a plain run and a ReLA run with every prior; plus the
   plain run at 100%. Every budget trains the same number of epochs (`--epochs`), each over a
   fresh random r of the 50k `train` split. 3 seeds x 2 objectives x 19 runs = 114 runs.
   `--epochs` and `--lr` set every student's schedule (the committed results/rela table: 6 and
   2e-3; results/rela/strong_baseline's tuned BYOL: 12 and 4e-3).
Finished runs are skipped (their `final.json`), unfinished ones resume from their checkpoint,
so the command can be rerun after an interruption. Runs share compiled programs through JAX's
persistent compilation cache (`<workdir>/jax_cache`): the runs of one seed and budget differ
only in their data. Then writes to --out:
  summary.json  objective -> prior -> budget -> {mean, std (sample, ddof=1), per_seed,
                switch_step (per seed), flops (mean total, and with a free prior), paired
                differences by seed with 95% t-intervals: minus no ReLA at the same budget and
                minus no ReLA at 100%}, budgets as '0.1', '0.2', '0.5', '1.0';
  table.md      the same as markdown tables;
  curves.json   every run's evaluations (step, metric) per seed, from its metrics.jsonl;
  accuracy.png  accuracy vs budget, one curve per prior (mean ± sample std) with every seed's
                value as a point, one panel per objective.
`--analyze_only` redoes the analysis from existing workdirs; `--regenerate_from results/rela`
redoes it from the committed summary.json's per-seed finals (no workdirs); `--parallel 2` trains
the runs with two single-core workers sharing one queue, longest budget first
(experiments/sweep.py).

On 2 CPU cores the whole grid takes about an hour (see results/rela/README.md for timings).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import jax
import numpy as np

from big_vision_style import rela_targets
from big_vision_style import score_cache
from experiments import analysis
from experiments import sweep
from experiments.rela import common
from experiments.rela import prior as prior_config
from experiments.rela import table1

MODULE = 'experiments.rela.reproduce_table1'
OBJECTIVES = ('byol', 'supervised')
METRIC = {'byol': 'eval/probe/accuracy', 'supervised': 'eval/test/accuracy'}
METRIC_NAME = {'byol': 'linear-probe accuracy', 'supervised': 'test accuracy'}
DDOF = analysis.SAMPLE  # The sample std over seeds.


def run_dir(workdir, objective, prior, budget, seed):
  return os.path.join(workdir, objective, prior, f'r{budget:g}_s{seed}')


def grid(args):
  """(objective, prior, budget) of every student run: priors at r < 1, plain runs at all r."""
  for objective in args.objectives:
    for prior in args.priors:
      for budget in args.budgets:
        if prior == 'none' or budget < 1.0:
          yield objective, prior, budget


def prepare_priors(args):
  """Trains the local priors and computes every prior's targets (each once)."""
  for name in common.TRAINED_PRIORS:
    if name in args.priors:
      t = time.time()
      final = sweep.train_once(prior_config.get_config(f'prior={name}'),
                               common.prior_workdir(args.workdir, name))
      logging.info('Prior %s: test accuracy %.4f (%.0fs).', name,
                   final.get('eval/test/accuracy', float('nan')), time.time() - t)
  for name in args.priors:
    if name == 'none':
      continue
    config = table1.get_config(_arg(args, 'byol', name, 0.1, 0))
    if os.path.exists(config.rela.targets):
      continue
    t = time.time()
    ids, targets, meta = rela_targets.compute_targets(config)
    score_cache.save(config.rela.targets, ids, targets, meta)
    logging.info('Targets of prior %s: %d x %d, explained variance %.3f (%.0fs).', name,
                 len(ids), meta['dim'], meta['explained_variance'], time.time() - t)


def _arg(args, objective, prior, budget, seed):
  return (f'objective={objective},prior={prior},ratio={budget},seed={seed},epochs={args.epochs},'
          f'lr={args.lr},batch={args.batch},root={args.workdir}')


def student_runs(args) -> list[sweep.Run]:
  """Seeds outermost: an interrupted sequential sweep still has whole seeds. A run's cost is
  its budget (every budget trains the same epochs of r of the data)."""
  return [sweep.Run(f'{objective}_{prior}_r{budget:g}_s{seed}',
                    run_dir(args.workdir, objective, prior, budget, seed),
                    lambda o=objective, p=prior, b=budget, s=seed: table1.get_config(
                        _arg(args, o, p, b, s)), cost=budget)
          for seed in args.seeds for objective, prior, budget in grid(args)]


def run_all(args):
  # The runs of one seed and budget compile the same programs: compile each once.
  jax.config.update('jax_compilation_cache_dir', os.path.join(args.workdir, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  t0 = time.time()
  if not args.queue:  # Workers start after the parent prepared the priors and targets.
    prepare_priors(args)
    logging.info('Priors and targets ready (%.0fs).', time.time() - t0)

  def report(run, final, seconds):
    objective = run.name.split('_')[0]
    logging.info('%s: %s %.4f, switch step %s (%.0fs, total %.0fs)', run.name,
                 METRIC_NAME[objective], final.get(METRIC[objective], float('nan')),
                 final.get('rela/switch_step'), seconds, time.time() - t0)

  sweep.run_all(student_runs(args), parallel=args.parallel, queue=args.queue,
                worker=lambda q: sweep.worker_command(MODULE, build_parser(), args, q,
                                                      exclude=('out', 'regenerate_from')),
                queue_root=os.path.join(args.workdir, 'queue'), report=report)


def collect(args) -> tuple[dict, dict]:
  """(finals, curves): objective -> prior -> budget ('0.1') -> seed (str) -> the run's final
  row, and -> its evaluations {'step', 'accuracy'} (runs with a metrics.jsonl)."""
  finals, curves = {}, {}
  for objective, prior, budget in grid(args):
    for seed in args.seeds:
      workdir = run_dir(args.workdir, objective, prior, budget, seed)
      final = sweep.final_row(workdir)
      if final is None:
        continue
      finals.setdefault(objective, {}).setdefault(prior, {}).setdefault(
          f'{budget:.1f}', {})[str(seed)] = final
      if os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
        c = analysis.curve(workdir, {'step': 'step', 'accuracy': METRIC[objective]},
                           where=METRIC[objective])
        curves.setdefault(objective, {}).setdefault(prior, {}).setdefault(
            f'{budget:.1f}', {})[str(seed)] = c
  return finals, curves


def analyze(args) -> dict:
  finals, curves = collect(args)
  return analyze_finals(finals, args, curves=curves)


def _cell(objective, finals: dict) -> dict:
  accuracy = [f[METRIC[objective]] for f in finals.values()]
  s = analysis.seed_stat(accuracy, ddof=DDOF)
  return {
      'mean': s['mean'], 'std': s['std'],
      'per_seed': {seed: f[METRIC[objective]] for seed, f in finals.items()},
      'switch_step': {seed: f.get('rela/switch_step') for seed, f in finals.items()},
      'steps': int(next(iter(finals.values()))['step']),
      'flops_total': float(np.mean([f['flops/total'] for f in finals.values()])),
      'flops_total_free_prior': float(np.mean([f['flops/total_free_prior']
                                               for f in finals.values()])),
      'num_seeds': len(finals),
  }


def analyze_finals(finals: dict, args, curves: dict | None = None) -> dict:
  """summary.json, table.md, curves.json (when `curves`) and accuracy.png from every run's final
  row (`collect`); `args`: out, epochs, lr, seeds, priors, budgets."""
  summary = {}
  for objective, prior, budget in grid(args):
    cell = finals.get(objective, {}).get(prior, {}).get(f'{budget:.1f}')
    if cell:
      summary.setdefault(objective, {}).setdefault(prior, {})[f'{budget:.1f}'] = _cell(
          objective, cell)
  for objective, by_prior in summary.items():  # Paired by seed, against no ReLA.
    none = by_prior.get('none', {})
    for prior, by_budget in by_prior.items():
      for budget, e in by_budget.items():
        if prior != 'none' and budget in none:
          e['minus_none_same_budget'] = analysis.paired_by_seed(e['per_seed'],
                                                                none[budget]['per_seed'])
        if budget != '1.0' and '1.0' in none:
          e['minus_none_full_data'] = analysis.paired_by_seed(e['per_seed'],
                                                              none['1.0']['per_seed'])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump({'metric': METRIC, 'epochs': args.epochs, 'lr': args.lr, 'seeds': args.seeds,
               'std_ddof': DDOF,
               **summary}, f, indent=1)
  if curves:
    with open(os.path.join(args.out, 'curves.json'), 'w') as f:
      json.dump(curves, f)
  table = _table(summary, args)
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write(table + '\n')
  _plot(summary, args.out)
  print(table)
  return summary


def regenerate(results: str, out: str) -> dict:
  """summary.json, table.md and accuracy.png again from a results folder's committed
  summary.json: every run's final accuracy and switch step per seed, the cells' steps and mean
  FLOPs (the runs' workdirs, and their curves, were not committed)."""
  with open(os.path.join(results, 'summary.json')) as f:
    committed = json.load(f)
  finals, priors, budgets = {}, [], set()
  for objective in OBJECTIVES:
    for prior, by_budget in committed.get(objective, {}).items():
      priors += [prior] if prior not in priors else []
      for budget, e in by_budget.items():
        budgets.add(float(budget))
        finals.setdefault(objective, {}).setdefault(prior, {})[budget] = {
            seed: {'step': e['steps'], METRIC[objective]: accuracy,
                   'rela/switch_step': e['switch_step'][seed], 'flops/total': e['flops_total'],
                   'flops/total_free_prior': e['flops_total_free_prior']}
            for seed, accuracy in e['per_seed'].items()}
  args = argparse.Namespace(out=out, epochs=committed['epochs'], seeds=committed['seeds'],
                            lr=committed.get('lr', common.ARGS['lr']),
                            objectives=[o for o in OBJECTIVES if o in committed],
                            priors=priors, budgets=sorted(budgets))
  return analyze_finals(finals, args)


def _table(summary, args) -> str:
  budgets = [f'{b:.1f}' for b in args.budgets]
  fmt_interval = analysis.fmt_interval
  lines = []
  for objective, by_prior in summary.items():
    rows, diffs = [], []
    for prior in (p for p in args.priors if p in by_prior):  # Rows of the priors that ran.
      cells, same, full = [], [], []
      for b in budgets:
        e = by_prior.get(prior, {}).get(b)
        if e is None:
          cells.append('-')
          same.append('-')
          full.append('-')
          continue
        steps = [s for s in e['switch_step'].values() if s is not None]
        switch = f' [{int(np.mean(steps))}/{e["steps"]}]' if steps else ''
        std = '-' if e['std'] is None else f'{100 * e["std"]:.2f}'
        cells.append(f'{100 * e["mean"]:.2f} ± {std}{switch}')
        same.append(fmt_interval(e['minus_none_same_budget'], 100)
                    if 'minus_none_same_budget' in e else '-')
        full.append(fmt_interval(e['minus_none_full_data'], 100)
                    if 'minus_none_full_data' in e else '-')
      rows.append([prior] + cells)
      diffs.append([prior] + [f'{a} / {c}' for a, c in zip(same, full)])
    header = ['prior'] + [f'{100 * float(b):.0f}%' for b in budgets]
    lines += [f'**{objective}**: {METRIC_NAME[objective]} (%), mean ± sample std over seeds; '
              '[ReLA switch step]', '']
    lines += analysis.markdown_table(header, rows, 'l' * (1 + len(budgets)))
    lines += ['', f'**{objective}**, paired by seed (points, [95% t-interval]): minus no ReLA '
              'at the same budget / minus no ReLA at 100%', '']
    lines += analysis.markdown_table(header, diffs, 'l' * (1 + len(budgets)))
    lines.append('')
  return '\n'.join(lines)


def _plot(summary, out):
  if not summary:
    return
  plt = analysis.pyplot()
  fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4.5), squeeze=False)
  for ax, (objective, by_prior) in zip(axes[0], summary.items()):
    for k, (prior, by_budget) in enumerate(by_prior.items()):
      budgets = sorted(by_budget, key=float)
      # Priors side by side at each budget (log x: a relative offset), every seed a dot.
      x = [100 * float(b) * (1 + 0.025 * (k - (len(by_prior) - 1) / 2)) for b in budgets]
      stats = [{**by_budget[b], 'std': by_budget[b]['std'] or 0.0} for b in budgets]
      line = ax.errorbar(x, [100 * s['mean'] for s in stats], [100 * s['std'] for s in stats],
                         marker='o', ms=4, capsize=3,
                         label='no ReLA' if prior == 'none' else f'ReLA, {prior} prior')
      analysis.seed_points(ax, x, [list(by_budget[b]['per_seed'].values()) for b in budgets],
                           scale=100, color=line.lines[0].get_color(), marker='.', ms=5)
    full = by_prior.get('none', {}).get('1.0')
    if full:
      ax.axhline(100 * full['mean'], color='k', ls=':', lw=1, label='no ReLA, 100% data')
    ax.set_xscale('log')
    ax.set_xticks([10, 20, 50, 100], ['10%', '20%', '50%', '100%'])
    ax.set_xlabel('data budget per epoch')
    ax.set_ylabel(f'{METRIC_NAME[objective]} (%)')
    ax.set_title(f'{objective}, Fashion-MNIST (mean ± sample std; dots: each seed)',
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
  analysis.save_figure(fig, os.path.join(out, 'accuracy.png'), dpi=110)


def build_parser() -> argparse.ArgumentParser:
  parser = sweep.make_parser(__doc__, workdir='workdirs/rela', out='results/rela')
  parser.add_argument('--objectives', default=','.join(OBJECTIVES))
  parser.add_argument('--priors', default=','.join(common.PRIORS))
  parser.add_argument('--budgets', default=','.join(map(str, common.BUDGETS)))
  parser.add_argument('--epochs', type=float, default=common.ARGS['epochs'])
  parser.add_argument('--lr', type=float, default=common.ARGS['lr'])
  parser.add_argument('--batch', type=int, default=common.ARGS['batch'])
  parser.add_argument('--regenerate_from', default='',
                      help='A results folder: redo its summary, table and plot from its '
                      'committed summary.json (no workdirs, no training).')
  return parser


def parse_args(argv=None):
  parser = build_parser()
  args = sweep.parse(parser, argv)
  args.objectives = args.objectives.split(',')
  args.priors = args.priors.split(',')
  args.budgets = [float(b) for b in args.budgets.split(',')]
  unknown = set(args.priors) - set(common.PRIORS)
  if unknown or set(args.objectives) - set(OBJECTIVES):
    parser.error(f'unknown prior(s) or objective(s): {sorted(unknown)} {args.objectives}')
  return args


def main():
  args = parse_args()
  if args.regenerate_from:
    regenerate(args.regenerate_from, args.out)
    return
  sweep.drive(args, run_all, analyze)


if __name__ == '__main__':
  main()
