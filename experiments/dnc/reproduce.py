r"""Local reproduction of Divide and Contrast on Fashion-MNIST pools, and its analysis.

  python -m experiments.dnc.reproduce --parallel 2     # --workdir workdirs/dnc --out results/dnc

The grid, most informative runs first (an interrupted sweep still answers the main questions):
  1. the curation gap: MoCLR on the uncurated and the curated pool, `--steps` steps, seeds
     (these runs are also DnC's equal-compute baselines: the same budget, their own schedule);
  2. DnC K=5 with both expert initialisations on the uncurated pool, then on the curated one;
  3. the rest: K = 3 on both pools, then K = 10.
That is 2 x 3 MoCLR runs + 3 K x 2 inits x 2 pools x 3 seeds = 42 runs. A DnC run is one whole
pipeline (big_vision_style/tools/dnc.py: base, embed, k-means, experts, distillation), whose
total FLOPs, every stage counted, equal the MoCLR budget to within one distillation step.
Finished runs are skipped (`final.json`), unfinished ones resume at their stage and step, so the
command can be rerun after an interruption; `--parallel 2` trains with two single-core workers
sharing one queue (experiments/sweep.py), in the grid's order. Then writes to --out, from
whatever has finished ("n of N done"):
  summary.json  per pool: MoCLR and each DnC setting's linear-probe accuracy per seed, mean,
                sample std (ddof=1), total FLOPs, cluster purity, and the paired difference to
                MoCLR on the same seeds with its 95% t-interval;
  table.md      the same as markdown tables;
  accuracy_vs_flops.png  accuracy vs total FLOPs, every seed a point, means marked.
`--analyze_only` redoes the analysis from existing workdirs.

Timing (experiments/dnc/common.py, TIMING): one K=5 pipeline measured at 336 s on one core of
this loaded machine (1200 steps, cold cache); the grid at the default 1000 steps is projected at
~87 minutes with --parallel 2.
"""
from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np

from experiments import analysis
from experiments import sweep
from experiments.dnc import common
from experiments.dnc import dnc_vs_moclr

MODULE = 'experiments.dnc.reproduce'
METRIC = 'eval/probe/accuracy'
DDOF = 1


def build_parser():
  parser = sweep.make_parser(__doc__, workdir='workdirs/dnc', out='results/dnc')
  parser.add_argument('--steps', type=int, default=common.ARGS['steps'],
                      help='The budget: MoCLR steps (DnC splits the same FLOPs).')
  parser.add_argument('--ks', default='5,3,10')
  parser.add_argument('--inits', default='base,scratch')
  parser.add_argument('--pools', default='uncurated,curated')
  return parser


def _arg(args, method, pool, seed, k=5, init='base'):
  return f'method={method},pool={pool},seed={seed},k={k},init={init},steps={args.steps}'


def moclr_dir(args, pool, seed):
  return os.path.join(args.workdir, 'moclr', f'{pool}_s{seed}')


def dnc_dir(args, pool, k, init, seed):
  return os.path.join(args.workdir, 'dnc', f'{pool}_k{k}_{init}_s{seed}')


def settings(args):
  """(pool, k, init) of every DnC setting, in the grid's order (module doc)."""
  # The first K on every pool (both claims: a gain on uncurated, none on curated), then the
  # other Ks.
  first = [(pool, args.ks[0], init) for pool in args.pools for init in args.inits]
  rest = [(pool, k, init) for k in args.ks for pool in args.pools for init in args.inits]
  return first + [s for s in rest if s not in first]


def runs(args) -> list[sweep.Run]:
  out = [sweep.Run(f'moclr_{pool}_s{seed}', moclr_dir(args, pool, seed),
                   lambda p=pool, s=seed: dnc_vs_moclr.get_config(_arg(args, 'moclr', p, s)))
         for pool in args.pools for seed in args.seeds]
  for pool, k, init in settings(args):
    for seed in args.seeds:
      out.append(sweep.Run(f'dnc_{pool}_k{k}_{init}_s{seed}', dnc_dir(args, pool, k, init, seed),
                           lambda p=pool, k=k, i=init, s=seed: dnc_vs_moclr.get_config(
                               _arg(args, 'dnc', p, s, k, i))))
  return out  # Equal costs: the queue keeps this order.


def train_runs(args):
  from big_vision_style.tools import dnc as dnc_tool  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', os.path.join(args.workdir, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  t0 = time.time()

  def report(run, final, seconds):
    logging.info('%s: linear-probe accuracy %.4f, %.4g FLOPs (%.0fs, total %.0fs)', run.name,
                 final.get(METRIC, float('nan')), final.get('flops/total', float('nan')),
                 seconds, time.time() - t0)

  sweep.run_all(runs(args), parallel=args.parallel, queue=args.queue,
                worker=lambda q: sweep.worker_command(MODULE, build_parser(), args, q,
                                                      exclude=('out',)),
                queue_root=os.path.join(args.workdir, 'queue'), report=report,
                timing=os.path.join(args.workdir, 'timing.jsonl'),
                train_fn=dnc_tool.train_once)


def _finals(paths):
  return {seed: f for seed, path in paths.items() if (f := sweep.final_row(path)) is not None}


def analyze(args) -> dict:
  total = len(runs(args))
  summary = {'metric': METRIC, 'ddof': DDOF, 'steps': args.steps, 'seeds': args.seeds,
             'pools': {}}
  done = 0
  for pool in args.pools:
    base = _finals({s: moclr_dir(args, pool, s) for s in args.seeds})
    done += len(base)
    entry = {'moclr': _stat(base)}
    for p, k, init in settings(args):
      if p != pool:
        continue
      finals = _finals({s: dnc_dir(args, pool, k, init, s) for s in args.seeds})
      done += len(finals)
      if not finals:
        continue
      stat = _stat(finals)
      paired = sorted(set(finals) & set(base))
      stat['vs_moclr'] = analysis.paired_difference(
          [finals[s][METRIC] for s in paired], [base[s][METRIC] for s in paired]) if paired else None
      stat['purity'] = {str(s): f.get('dnc/purity') for s, f in finals.items()}
      stat['base_accuracy'] = {str(s): f.get(f'base/{METRIC}') for s, f in finals.items()}
      stat['stage_flops'] = {n: float(np.mean([f[f'flops/stage/{n}'] for f in finals.values()]))
                             for n in ('base', 'embed', 'cluster', 'experts', 'distill')}
      entry[f'dnc_k{k}_{init}'] = stat
    summary['pools'][pool] = entry
  gap = None
  un, cu = (summary['pools'].get(p, {}).get('moclr') for p in ('uncurated', 'curated'))
  if un and cu and un['per_seed'] and cu['per_seed']:
    seeds = sorted(set(un['per_seed']) & set(cu['per_seed']))
    gap = analysis.paired_difference([cu['per_seed'][s] for s in seeds],
                                     [un['per_seed'][s] for s in seeds])
  summary['curation_gap'] = gap
  summary['done'], summary['total'] = done, total
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  lines = _table(summary, args)
  analysis.write_text(os.path.join(args.out, 'table.md'), lines)
  _plot(summary, os.path.join(args.out, 'accuracy_vs_flops.png'))
  print('\n'.join(lines))
  return summary


def _stat(finals: dict) -> dict:
  values = [f[METRIC] for f in finals.values()]
  return {**analysis.seed_stat(values, ddof=DDOF),
          'per_seed': {str(s): f[METRIC] for s, f in finals.items()},
          'flops_per_seed': {str(s): f.get('flops/total') for s, f in finals.items()},
          'flops_total': float(np.mean([f['flops/total'] for f in finals.values()]))
          if finals else None}


def _fmt(stat, seeds) -> str:
  """Mean ± sample std (%), with the count of seeds done when not all of `seeds` are."""
  if not stat or stat.get('mean') is None:
    return '-'
  return analysis.fmt_stat({**stat, 'of': len(seeds)}, scale=100.0)


def _fmt_diff(d) -> str:
  return analysis.fmt_interval(d, scale=100.0) if d else '-'


def _table(summary, args) -> list[str]:
  lines = [f'# Divide and Contrast on Fashion-MNIST pools ({summary["done"]} of '
           f'{summary["total"]} runs done)', '',
           f'Linear-probe accuracy (%) on the balanced test split, mean ± sample std (ddof=1) '
           f'over seeds {args.seeds}; budget {args.steps} MoCLR steps. Paired differences are '
           'DnC - MoCLR on the same seeds, with 95% t-intervals.', '']
  gap = summary.get('curation_gap')
  lines += [f'Curation gap (curated - uncurated MoCLR): {_fmt_diff(gap)}', '']
  header = ['pool', 'method', 'accuracy', 'vs MoCLR (equal FLOPs)', 'total FLOPs', 'purity']
  rows = []
  for pool, entry in summary['pools'].items():
    for name, stat in entry.items():
      purity = [v for v in (stat.get('purity') or {}).values() if v is not None]
      rows.append([pool, name, _fmt(stat, args.seeds), _fmt_diff(stat.get('vs_moclr')),
                   analysis.fmt(stat['flops_total'] / 1e12 if stat.get('flops_total') else None,
                                3) + ' T',
                   analysis.fmt(float(np.mean(purity)) if purity else None, 3)])
  lines += analysis.markdown_table(header, rows, 'llrrrr')
  lines += ['', f'Produced by `{analysis.command(MODULE, args)}`.']
  return lines


def _plot(summary, path):
  plt = analysis.pyplot()
  pools = list(summary['pools'])
  fig, axes = plt.subplots(1, max(len(pools), 1), figsize=(5 * max(len(pools), 1), 4),
                           squeeze=False)
  for ax, pool in zip(axes[0], pools):
    for name, stat in summary['pools'][pool].items():
      seeds = [s for s in stat['per_seed'] if stat['flops_per_seed'].get(s) is not None]
      if not seeds:
        continue
      x = [stat['flops_per_seed'][s] / 1e12 for s in seeds]
      y = [100 * stat['per_seed'][s] for s in seeds]
      points = ax.plot(x, y, 'o', alpha=0.5, ms=4, label=name)[0]
      ax.plot([np.mean(x)], [np.mean(y)], '_', ms=18, mew=2, color=points.get_color())
    ax.set_title(f'{pool} pool')
    ax.set_xlabel('total training TFLOPs (all stages; DnC within one distillation step of '
                  'MoCLR)', fontsize=8)
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    ax.ticklabel_format(axis='x', useOffset=False)
    ax.set_ylabel('linear-probe accuracy (%)')
    ax.legend(fontsize=7)
  analysis.save_figure(fig, path, dpi=120)


def main(argv=None):
  parser = build_parser()
  args = sweep.parse(parser, argv)
  args.ks = [int(k) for k in str(args.ks).split(',')]
  args.inits = str(args.inits).split(',')
  args.pools = str(args.pools).split(',')
  sweep.drive(args, train_runs, analyze)


if __name__ == '__main__':
  main()
