"""JEST Fig. 3 analogue (and Fig. 5's uncurated-reference run): the sweep's runs against the
i.i.d. baselines, per seed and over seeds.

Per run: final zero-shot accuracy and retrieval recall@1, the fraction of corrupted pairs it
selected, and the iterations and FLOPs it needed to reach each baseline's final value
(`BASELINES`; zero-shot and retrieval), as fractions of the baseline's whole run (the issue's
goal) and as ratios to the baseline's own first reach. Mean and std (ddof=0) over seeds, with
how many seeds reached a target. Figures: final accuracy vs filter ratio
(fig3_filter_ratio.png) and the learning curves at f = 0.8 (fig3_curves.png).
"""
from __future__ import annotations

import os

import numpy as np

from experiments import analysis
from experiments import sweep
from experiments.jest import grid

METRIC = grid.METRIC
# The i.i.d. baselines every run is compared with: summary key suffix -> run name.
BASELINES = {'': 'uniform', '_vs_3x': 'uniform_3x'}
REACH_TOL = 1e-9  # An evaluation at `target - REACH_TOL` has reached the target.
DDOF = 0  # The committed tables' std over seeds (analysis: a follow-up switches to 1).
CURVE_KEYS = {'step': 'step', 'zeroshot': METRIC, 'i2t': 'eval/retrieval/i2t_recall_at_1',
              't2i': 'eval/retrieval/t2i_recall_at_1',
              'flops': 'flops/total_pretrained_reference',
              'corrupted_selected': 'selection/corrupted_selected'}
STAT_KEYS = ('final', 'i2t', 't2i', 'retrieval', 'corrupted_selected')


def curve(workdir) -> dict:
  """A run's evaluations: step, zeroshot, i2t, t2i, flops (reference training excluded) and,
  for selecting runs, corrupted_selected."""
  return analysis.curve(workdir, CURVE_KEYS, where=METRIC)


def retrieval(c):
  """Mean of image-to-text and text-to-image recall@1, per evaluation."""
  return [(a + b) / 2 for a, b in zip(c['i2t'], c['t2i'])]


TARGETS = {'zeroshot': lambda c: c['zeroshot'], 'retrieval': retrieval}


def reach(c, target, metric='zeroshot'):
  """(step, FLOPs) of the first evaluation at or above `target`; None if never."""
  return analysis.reach(TARGETS[metric](c), target, c['step'], c['flops'], tol=REACH_TOL)


def ratio_keys(suffix: str) -> list[str]:
  """Summary keys of the iterations / FLOPs needed to reach a target (`suffix`: metric, then
  baseline): 'ratio' to the baseline's own first reach, 'fraction' of the baseline's run."""
  return [f'{kind}_{to}{suffix}' for kind in ('iterations', 'flops')
          for to in ('ratio', 'fraction')]


def run_row(c, baselines: dict) -> dict:
  """One run's final values, and the iterations / FLOPs it needed to reach each baseline's
  final value (`baselines`: summary key suffix -> the baseline's curve, None if missing)."""
  row = {'final': c['zeroshot'][-1], 'i2t': c['i2t'][-1], 't2i': c['t2i'][-1],
         'retrieval': retrieval(c)[-1],
         'corrupted_selected': (float(np.mean(c['corrupted_selected']))
                                if 'corrupted_selected' in c else None)}
  for base_suffix, base in baselines.items():
    for metric, values in TARGETS.items():  # The baseline's final value, as the target.
      suffix = ('' if metric == 'zeroshot' else '_retrieval') + base_suffix
      if base is None:
        row.update(dict.fromkeys(ratio_keys(suffix)))
        continue
      target = values(base)[-1]
      mine, theirs = reach(c, target, metric), reach(base, target, metric)
      # ratio: to the baseline's own first evaluation at its final value (it may have got
      # there long before its end); fraction: to the baseline's whole run (the paper's
      # "a JEST run matches an i.i.d. run of N iterations with n", and the goal).
      step, flops = mine or (None, None)
      row[f'iterations_ratio{suffix}'] = analysis.ratio(step, theirs[0])
      row[f'flops_ratio{suffix}'] = analysis.ratio(flops, theirs[1])
      row[f'iterations_fraction{suffix}'] = analysis.ratio(step, base['step'][-1])
      row[f'flops_fraction{suffix}'] = analysis.ratio(flops, base['flops'][-1])
  return row


def seed_stats(rows: list[dict], keys) -> dict:
  """{key: analysis.seed_stat of `key` over `rows`} (the committed std: DDOF)."""
  return {key: analysis.seed_stat([r[key] for r in rows], ddof=DDOF) for key in keys}


def finished_curves(workdir: str, seeds) -> dict:
  """Run name -> seed (str) -> curve, for the main sweep's runs that finished."""
  curves = {}
  for name in grid.all_runs():
    per_seed = {str(seed): curve(grid.run_dir(workdir, name, seed)) for seed in seeds
                if sweep.is_finished(grid.run_dir(workdir, name, seed))}
    if per_seed:
      curves[name] = per_seed
  return curves


def summarize(curves: dict) -> dict:
  """Run name -> key -> seed statistic, over the seeds the uniform baseline has."""
  if 'uniform' not in curves:
    raise SystemExit('The uniform baseline has not finished: run without --analyze_only.')
  keys = STAT_KEYS + tuple(key for metric in ('', '_retrieval') for base in BASELINES
                           for key in ratio_keys(metric + base))
  runs = {}
  for name, per_seed in curves.items():
    rows = [run_row(c, {suffix: curves.get(base_name, {}).get(seed)
                        for suffix, base_name in BASELINES.items()})
            for seed, c in per_seed.items() if seed in curves['uniform']]
    runs[name] = seed_stats(rows, keys)
  return runs


def table_lines(summary: dict) -> list[str]:
  """The final values of every run, then per baseline the iterations and FLOPs to its value."""
  fmt_stat = analysis.fmt_stat
  runs = summary['runs']
  lines = [f'Seeds: {", ".join(summary["seeds"])} (mean ± std; "(n/m)": reached in n of m seeds; '
           '"never": in none). Ratios: iterations (FLOPs) to reach the baseline\'s final value, '
           'as multiples of what the baseline itself needed.', '']
  rows = []
  for name, r in runs.items():
    corrupted = fmt_stat(r['corrupted_selected'], 100) if r['corrupted_selected']['n'] else '-'
    rows.append([name, fmt_stat(r['final'], 100), fmt_stat(r['i2t'], 100),
                 fmt_stat(r['t2i'], 100), corrupted])
  lines += analysis.markdown_table(
      ['run', 'zero-shot (%)', 'I2T R@1 (%)', 'T2I R@1 (%)', 'corrupted pairs selected (%)'],
      rows, 'lrrrr')
  for suffix, base in BASELINES.items():
    if base not in runs:
      continue
    lines += ['', f'To reach the final value of `{base}`: iterations and FLOPs as fractions of '
              f'`{base}`\'s whole run (its length: the issue\'s goal), and as ratios to what '
              f'`{base}` itself needed to first get there (stricter when it plateaus early).',
              '']
    rows = [[name] + [f'{fmt_stat(r[f"{kind}_fraction{metric}{suffix}"])} / '
                      f'{fmt_stat(r[f"{kind}_ratio{metric}{suffix}"])}'
                      for metric in ('', '_retrieval') for kind in ('iterations', 'flops')]
            for name, r in runs.items()]
    lines += analysis.markdown_table(
        ['run', 'zero-shot: iterations, of run / ratio', 'zero-shot: FLOPs, of run / ratio',
         'retrieval: iterations, of run / ratio', 'retrieval: FLOPs, of run / ratio'],
        rows, 'lrrrr')
  return lines


def mean_curve(per_seed):
  """Seed-mean zero-shot and retrieval curves (the seeds share their evaluation steps)."""
  return analysis.mean_curve([per_seed[k] for k in sorted(per_seed)],
                             {'flops': 'flops', 'zeroshot': 'zeroshot', 'retrieval': retrieval})


def plot(out: str, steps: int, summary: dict, curves: dict):
  """fig3_filter_ratio.png (final values vs f) and fig3_curves.png (curves at f = 0.8)."""
  plt = analysis.pyplot()
  runs = summary['runs']
  seeds = ', '.join(summary['seeds'])
  # Fig. 3 analogue: final accuracy vs filter ratio (f = 0 is the i.i.d. baseline).
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for ax, key, label in ((axes[0], 'final', 'zero-shot accuracy (%)'),
                         (axes[1], 'retrieval', 'retrieval R@1 (%), mean of I2T and T2I')):
    for i, (policy, method) in enumerate((('learnability', 'joint'),
                                          ('learnability', 'independent'),
                                          ('easy_reference', 'joint'),
                                          ('easy_reference', 'independent'))):
      fs, stats = [0.0], [runs['uniform'][key]]
      for f in (0.5, 0.8, 0.9):
        r = runs.get(f'{policy}_{method}_f{f}')
        if r and r[key]['mean'] is not None:
          fs.append(f)
          stats.append(r[key])
      # Offsets keep the error bars of the four series apart.
      analysis.errorbar(ax, np.asarray(fs) + 0.006 * (i - 1.5), stats, scale=100, capsize=3,
                        ls='-' if method == 'joint' else '--',
                        color='C0' if policy == 'learnability' else 'C1',
                        label=f'{policy}, {method}')
    if 'uniform_3x' in runs:
      ax.axhline(100 * runs['uniform_3x'][key]['mean'], color='k', ls=':',
                 label='i.i.d., 3x the iterations')
    ax.set_xlabel('filter ratio f (f = 0: i.i.d.)')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f'JEST Fig. 3 analogue: after {steps} iterations (mean ± std, seeds {seeds})')
  analysis.save_figure(fig, os.path.join(out, 'fig3_filter_ratio.png'), dpi=120)
  # Learning curves of the f = 0.8 runs and the baselines, against iterations and FLOPs.
  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  for name, per_seed in curves.items():
    if not (name.startswith('uniform') or name.endswith('f0.8')):
      continue
    c = mean_curve(per_seed)
    style = '-' if 'joint' in name or name.startswith('uniform') else '--'
    for row, values in enumerate((c['zeroshot'], c['retrieval'])):
      axes[row, 0].plot(c['step'], 100 * values, style, label=name)
      axes[row, 1].plot(c['flops'] / 1e12, 100 * values, style, label=name)
  for row, label in enumerate(('zero-shot accuracy (%), Fashion-MNIST test',
                               'retrieval R@1 (%), mean of I2T and T2I')):
    axes[row, 0].set_xlabel('learner iterations')
    axes[row, 1].set_xlabel('total TFLOPs (reference training excluded, cache pass included)')
    for ax in axes[row]:
      ax.set_ylabel(label)
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f'JEST Fig. 3 analogue: learning curves at f = 0.8 (mean of seeds {seeds})')
  analysis.save_figure(fig, os.path.join(out, 'fig3_curves.png'), dpi=120)
