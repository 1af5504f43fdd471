r"""Local reproduction of the JEST paper's Figs. 2-5 on captioned Fashion-MNIST, and its analysis.

  # Everything, 3 seeds, two single-core workers sharing the runs (96.9 min on 2 idle cores):
  python -m experiments.jest.reproduce --workdir workdirs/jest --out results/jest --parallel 2
  python -m experiments.jest.reproduce --runs core --seeds 0        # the reduced set
  python -m experiments.jest.reproduce --analyze_only               # tables and plots only
  # The committed tables and figures again from results/jest's curves.json (no workdirs):
  python -m experiments.jest.reproduce --regenerate_from results/jest --out results/jest

The driver of the pieces, one module per part:
  grid.py               the references and the learner runs (Figs. 3 and 5), their configs;
                        trained by experiments/sweep.py: finished runs are skipped
                        (final.json), others resume; --parallel n workers share one queue;
  fig2_sampler.py       Fig. 2: the chunked sampler against brute-force Gibbs, on one super-batch;
  fig3_filter_ratio.py  Fig. 3 (and Fig. 5's uncurated reference): every run against the i.i.d.
                        baselines, the summary's runs and the main tables, two figures;
  fig4_flops.py         Fig. 4: FLOPs per iteration of i.i.d., JEST (live and cached reference,
                        with and without the scoring forward reused) and Flexi-JEST.
Writes to --out: summary.json (per run, mean and sample std over seeds: final zero-shot accuracy
and retrieval; iterations and FLOPs to reach each uniform baseline's final value, as ratios to
its own first reach (the tables' basis) and as fractions of that baseline's run; paired by seed
with 95% t-intervals, every run minus each baseline and joint minus independent; the wall time
of the sweep),
table.md, fig2_sampler.png, fig3_filter_ratio.png (final accuracy vs f), fig3_curves.png
(learning curves at f = 0.8), fig4_flops.png and curves.json (the raw curves); and the
per-iteration FLOP benchmark to --bench_out.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os

from experiments import analysis
from experiments import sweep
from experiments.jest import common
from experiments.jest import fig2_sampler
from experiments.jest import fig3_filter_ratio
from experiments.jest import fig4_flops
from experiments.jest import grid

MODULE = 'experiments.jest.reproduce'
# Options that say where results go, not what a run is: not passed to --parallel workers.
NOT_RUN_SHAPING = ('out', 'bench_out', 'regenerate_from')


def timing_path(args):
  return os.path.join(args.workdir, 'timing.jsonl')


def worker_command(args, queue) -> list[str]:
  """The command line of one --parallel worker: every option that shapes a run is passed on."""
  return sweep.worker_command(MODULE, build_parser(), args, queue, exclude=NOT_RUN_SHAPING)


def run_all(args):
  if not args.queue:  # Workers start after the parent prepared the references.
    with sweep.timed(timing_path(args), 'references'):
      grid.prepare_references(args)

  def report(run, final, seconds):
    logging.info('%s: zero-shot %.4f (%.0fs).', run.name, final[grid.METRIC], seconds)

  sweep.run_all(grid.learner_runs(args), parallel=args.parallel, queue=args.queue,
                worker=lambda queue: worker_command(args, queue),
                queue_root=os.path.join(args.workdir, 'queue'), timing=timing_path(args),
                report=report)


def analyze(args, fig2=None, fig4=None) -> dict:
  curves = fig3_filter_ratio.finished_curves(args.workdir, args.seeds)
  wall = (sweep.wall_seconds(timing_path(args)) if os.path.exists(timing_path(args))
          else None)  # Wall time of this machine's sweep, per part.
  return analyze_curves(curves, args.out, args.steps, fig2=fig2, fig4=fig4, wall_seconds=wall)


def analyze_curves(curves: dict, out: str, steps: int, *, fig2=None, fig4=None,
                   wall_seconds=None) -> dict:
  """summary.json, curves.json, table.md and the figures from every run's per-seed curves."""
  summary = {'metric': grid.METRIC, 'seeds': sorted({s for c in curves.values() for s in c}),
             'std_ddof': fig3_filter_ratio.DDOF,
             'runs': fig3_filter_ratio.summarize(curves),
             'paired': fig3_filter_ratio.paired(curves)}
  if wall_seconds:
    summary['wall_seconds'] = wall_seconds
  if fig2:
    summary['fig2_sampler'] = fig2
  if fig4:
    summary['fig4_flops_per_iteration'] = fig4
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out, 'curves.json'), 'w') as f:
    json.dump(curves, f)
  write_table(out, summary)
  plot(out, steps, summary, curves)
  return summary


def sample_stds(summary: dict) -> dict:
  """A summary without per-seed values (no curves.json: results/jest/reuse_sweep) with every
  seed statistic's population std (ddof=0, the first committed tables') turned into the sample
  std (ddof=1), which is exact given n (`analysis.sample_std_from_population`), and the ratios'
  t-intervals from mean, sample std and n. Paired intervals need the per-seed values and are
  not made. A summary that has 'std_ddof' is
  returned unchanged."""
  if 'std_ddof' in summary:
    return summary

  def convert(node):
    if isinstance(node, dict) and {'mean', 'std', 'n', 'of'} <= set(node):
      return {**node, 'std': analysis.sample_std_from_population(node['std'], node['n'])}
    if isinstance(node, dict):
      return {k: convert(v) for k, v in node.items()}
    return node

  def interval(s):  # The t-interval from mean, sample std and n, as analysis.mean_interval.
    out = {'mean': s['mean'], 'std': s['std'], 'n': s['n'], 'confidence': 0.95, 'low': None,
           'high': None}
    if s['n'] >= 2:
      half = analysis.t_quantile(0.95, s['n'] - 1) * s['std'] / math.sqrt(s['n'])
      out.update(low=s['mean'] - half, high=s['mean'] + half)
    return out

  runs = convert(summary['runs'])
  for r in runs.values():
    r['intervals'] = {key: interval(r[key]) for key in fig3_filter_ratio.INTERVAL_KEYS if key in r}
  return {**{k: v for k, v in summary.items() if k != 'runs'},
          'runs': runs, 'std_ddof': fig3_filter_ratio.DDOF,
          'paired': None, 'note': 'sample stds from the committed population stds and n; no '
          'per-seed values were committed, so no paired intervals'}


def regenerate_stats_only(results: str, out: str) -> dict:
  """summary.json (sample stds: `sample_stds`) and table.md of a results folder that has no
  curves.json."""
  with open(os.path.join(results, 'summary.json')) as f:
    summary = sample_stds(json.load(f))
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  write_table(out, summary)
  return summary


def regenerate(results: str, out: str) -> dict:
  """The summary, table and figures again from the committed raw numbers in `results`
  (curves.json: every run's per-seed curves; summary.json: Figs. 2 and 4's measurements and the
  sweep's wall time), without the run workdirs."""
  if not os.path.exists(os.path.join(results, 'curves.json')):
    return regenerate_stats_only(results, out)
  with open(os.path.join(results, 'curves.json')) as f:
    curves = json.load(f)
  with open(os.path.join(results, 'summary.json')) as f:
    committed = json.load(f)
  steps = curves['uniform'][sorted(curves['uniform'])[0]]['step'][-1]
  return analyze_curves(curves, out, steps, fig2=committed.get('fig2_sampler'),
                        fig4=committed.get('fig4_flops_per_iteration'),
                        wall_seconds=committed.get('wall_seconds'))


def write_table(out, summary):
  lines = fig3_filter_ratio.table_lines(summary)
  if 'wall_seconds' in summary:
    lines += ['', f'Wall time of the sweep on this machine: '
              f'{summary["wall_seconds"]["total"] / 60:.1f} min.']
  if 'fig4_flops_per_iteration' in summary:
    lines += [''] + fig4_flops.table_lines(summary['fig4_flops_per_iteration'])
  analysis.write_text(os.path.join(out, 'table.md'), lines)


def plot(out, steps, summary, curves):
  fig3_filter_ratio.plot(out, steps, summary, curves)
  if 'fig2_sampler' in summary:
    fig2_sampler.plot(out, summary['fig2_sampler'])
  if 'fig4_flops_per_iteration' in summary:
    fig4_flops.plot(out, summary['fig4_flops_per_iteration'])


def build_parser() -> argparse.ArgumentParser:
  parser = sweep.make_parser(__doc__, workdir='workdirs/jest', out='results/jest')
  parser.add_argument('--bench_out', default='results/bench')
  parser.add_argument('--runs', default='all', help="'all', 'core' or comma-separated names.")
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--eval_every', type=int, default=100)
  parser.add_argument('--ref_epochs', type=float, default=30.0)
  parser.add_argument('--benchmark', default=common.ARGS['benchmark'],
                      choices=tuple(common.BENCHMARKS),
                      help="The local benchmark's version (experiments/jest/common.py); "
                      "results/jest's top-level files are v1's.")
  parser.add_argument('--gain', type=float, default=None,
                      help='Score multiplier of every selecting run (default: the configs\' 1).')
  parser.add_argument('--regenerate_from', default='',
                      help='A results folder: redo its summary, table and figures from its '
                      'committed curves.json and summary.json (no workdirs, no training).')
  parser.add_argument('--reuse', action='store_true',
                      help="Selecting runs reuse the learner's scoring forward (Fig. 4).")
  return parser


def parse_args(argv=None):
  parser = build_parser()
  args = sweep.parse(parser, argv)
  args.runs = (list(grid.all_runs()) if args.runs == 'all' else list(grid.CORE)
               if args.runs == 'core' else args.runs.split(','))
  unknown = sorted(set(args.runs) - set(grid.known_runs()))
  if unknown:
    parser.error(f'--runs: unknown run names {unknown}; known: all, core, '
                 f'{", ".join(grid.known_runs())}.')
  return args


def analyze_all(args):
  """Figs. 2 and 4 (each measured from the sweep's runs), then the analysis of every run."""
  with (contextlib.nullcontext() if args.analyze_only
        else sweep.timed(timing_path(args), 'fig2_and_fig4')):
    fig2 = fig2_sampler.sampler_quality(args)
    logging.info('Fig. 2 done; measuring FLOPs per iteration (Fig. 4).')
    fig4 = fig4_flops.flops_per_iteration(args)
  summary = analyze(args, fig2, fig4)
  os.makedirs(args.bench_out, exist_ok=True)  # The per-iteration FLOP benchmark, on its own.
  with open(os.path.join(args.bench_out, 'jest_flops_per_iteration.json'), 'w') as f:
    json.dump({'command': 'python -m experiments.jest.reproduce', 'flops_per_iteration': fig4,
               'batch_size': 128, 'super_batch_size_f0.8': 640}, f, indent=1)
  logging.info('Wrote %s: %s', args.out, json.dumps(summary['runs'], indent=1)[:2000])


def main():
  args = parse_args()
  if args.regenerate_from:
    regenerate(args.regenerate_from, args.out)
    return
  sweep.drive(args, run_all, analyze_all)


if __name__ == '__main__':
  main()
