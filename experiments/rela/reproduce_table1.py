r"""Local reproduction of ReLA's Table 1 on Fashion-MNIST, and its analysis.

  python -m experiments.rela.reproduce_table1 --workdir workdirs/rela --out results/rela

1. Trains the priors (experiments/rela/prior.py: digits, half_classes, holdout; `random` needs
   no training) and computes each prior's targets once (rela_targets.py).
2. For each seed, objective (BYOL: linear-probe accuracy on the test split; supervised: test
   accuracy) and budget r in 10/20/50%: a plain run and a ReLA run with every prior; plus the
   plain run at 100%. Every budget trains the same number of epochs (`--epochs`), each over a
   fresh random r of the 50k `train` split. 3 seeds x 2 objectives x 16 runs = 96 runs.
Finished runs are skipped (their `final.json`), unfinished ones resume from their checkpoint,
so the command can be rerun after an interruption. Runs share compiled programs through JAX's
persistent compilation cache (`<workdir>/jax_cache`): the runs of one seed and budget differ
only in their data. Then writes to --out:
  summary.json  objective -> prior -> budget -> {mean, std, per_seed, switch_step (per seed),
                flops (mean total, and with a free prior)}, budgets as '0.1', '0.2', '0.5', '1.0';
  table.md      the same as a markdown table;
  accuracy.png  accuracy vs budget, one curve per prior, one panel per objective.
`--analyze_only` redoes the analysis from existing workdirs; `--parallel 2` trains the runs with
two single-core workers sharing one queue, longest budget first (experiments/sweep.py).

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
DDOF = 0  # The committed table's std over seeds (analysis: a follow-up switches to 1).


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
          f'batch={args.batch},root={args.workdir}')


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
                                                      exclude=('out',)),
                queue_root=os.path.join(args.workdir, 'queue'), report=report)


def analyze(args) -> dict:
  summary = {}
  for objective, prior, budget in grid(args):
    finals = {seed: final for seed in args.seeds if (final := sweep.final_row(
        run_dir(args.workdir, objective, prior, budget, seed))) is not None}
    if not finals:
      continue
    mean, std = analysis.mean_std([f[METRIC[objective]] for f in finals.values()], ddof=DDOF)
    summary.setdefault(objective, {}).setdefault(prior, {})[f'{budget:.1f}'] = {
        'mean': mean, 'std': std,
        'per_seed': {str(s): f[METRIC[objective]] for s, f in finals.items()},
        'switch_step': {str(s): f.get('rela/switch_step') for s, f in finals.items()},
        'steps': int(next(iter(finals.values()))['step']),
        'flops_total': float(np.mean([f['flops/total'] for f in finals.values()])),
        'flops_total_free_prior': float(np.mean([f['flops/total_free_prior']
                                                 for f in finals.values()])),
        'num_seeds': len(finals),
    }
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump({'metric': METRIC, 'epochs': args.epochs, 'seeds': args.seeds, **summary}, f,
              indent=1)
  table = _table(summary, args)
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write(table + '\n')
  _plot(summary, args.out)
  print(table)
  return summary


def _table(summary, args) -> str:
  budgets = [f'{b:.1f}' for b in args.budgets]
  lines = []
  for objective, by_prior in summary.items():
    rows = []
    for prior in args.priors:
      cells = []
      for b in budgets:
        e = by_prior.get(prior, {}).get(b)
        if e is None:
          cells.append('-')
          continue
        steps = [s for s in e['switch_step'].values() if s is not None]
        switch = f' [{int(np.mean(steps))}/{e["steps"]}]' if steps else ''
        cells.append(f'{100 * e["mean"]:.2f} ± {100 * e["std"]:.2f}{switch}')
      rows.append([prior] + cells)
    lines += [f'**{objective}**: {METRIC_NAME[objective]} (%), mean ± std over seeds; '
              '[ReLA switch step]', '']
    lines += analysis.markdown_table(
        ['prior'] + [f'{100 * float(b):.0f}%' for b in budgets], rows, 'l' * (1 + len(budgets)))
    lines.append('')
  return '\n'.join(lines)


def _plot(summary, out):
  if not summary:
    return
  plt = analysis.pyplot()
  fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4.5), squeeze=False)
  for ax, (objective, by_prior) in zip(axes[0], summary.items()):
    for prior, by_budget in by_prior.items():
      budgets = sorted(by_budget, key=float)
      analysis.errorbar(ax, [100 * float(b) for b in budgets], [by_budget[b] for b in budgets],
                        scale=100, marker='o', ms=4, capsize=3,
                        label='no ReLA' if prior == 'none' else f'ReLA, {prior} prior')
    full = by_prior.get('none', {}).get('1.0')
    if full:
      ax.axhline(100 * full['mean'], color='k', ls=':', lw=1, label='no ReLA, 100% data')
    ax.set_xscale('log')
    ax.set_xticks([10, 20, 50, 100], ['10%', '20%', '50%', '100%'])
    ax.set_xlabel('data budget per epoch')
    ax.set_ylabel(f'{METRIC_NAME[objective]} (%)')
    ax.set_title(f'{objective}, Fashion-MNIST')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
  analysis.save_figure(fig, os.path.join(out, 'accuracy.png'), dpi=110)


def build_parser() -> argparse.ArgumentParser:
  parser = sweep.make_parser(__doc__, workdir='workdirs/rela', out='results/rela')
  parser.add_argument('--objectives', default=','.join(OBJECTIVES))
  parser.add_argument('--priors', default=','.join(common.PRIORS))
  parser.add_argument('--budgets', default=','.join(map(str, common.BUDGETS)))
  parser.add_argument('--epochs', type=float, default=common.ARGS['epochs'])
  parser.add_argument('--batch', type=int, default=common.ARGS['batch'])
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
  sweep.drive(parse_args(), run_all, analyze)


if __name__ == '__main__':
  main()
