"""JEST Fig. 3 analogue (and Fig. 5's uncurated-reference run): the sweep's runs against the
i.i.d. baselines, per seed and over seeds.

Per run: final zero-shot accuracy and retrieval recall@1, the fraction of corrupted pairs it
selected, and the iterations and FLOPs it needed to reach each baseline's final value
(`BASELINES`; zero-shot and retrieval), as fractions of the baseline's whole run (the issue's
goal) and as ratios to the baseline's own first reach. Mean and sample std (ddof=1) over seeds,
with how many seeds reached a target, and the 95% t-interval of each ratio over the seeds that
reached. Paired by seed (95% t-intervals): every run's final zero-shot and retrieval minus the
baselines', and joint minus independent selection at each f. The tables report the ratio basis
only: the fraction basis (of the baseline's whole run) is in summary.json but dropped from the
tables, since `uniform_3x` plateaus at about a third of its run, so any run that reaches its
final value at all passes "<= 1/3 of its iterations" on that basis. Figures: final accuracy vs
filter ratio with every seed's value (fig3_filter_ratio.png) and the learning curves at
f = 0.8, mean ± sample std over seeds (fig3_curves.png).
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
DDOF = analysis.SAMPLE  # The sample std over seeds.
CURVE_KEYS = {'step': 'step', 'zeroshot': METRIC, 'i2t': 'eval/retrieval/i2t_recall_at_1',
              't2i': 'eval/retrieval/t2i_recall_at_1',
              'flops': 'flops/total_pretrained_reference',
              'corrupted_selected': 'selection/corrupted_selected'}
STAT_KEYS = ('final', 'i2t', 't2i', 'retrieval', 'corrupted_selected')
# Paired by seed against each baseline, and joint against independent selection.
PAIRED_KEYS = ('final', 'retrieval')
# The keys the tables report with a 95% interval over the seeds that reached (ratio basis).
INTERVAL_KEYS = tuple(f'{kind}_ratio{metric}{base}' for base in BASELINES
                      for metric in ('', '_retrieval') for kind in ('iterations', 'flops'))


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


def per_seed_rows(curves: dict) -> dict:
  """Run name -> seed -> `run_row`, over the seeds the uniform baseline has."""
  if 'uniform' not in curves:
    raise SystemExit('The uniform baseline has not finished: run without --analyze_only.')
  return {name: {seed: run_row(c, {suffix: curves.get(base_name, {}).get(seed)
                                   for suffix, base_name in BASELINES.items()})
                 for seed, c in per_seed.items() if seed in curves['uniform']}
          for name, per_seed in curves.items()}


def summarize(curves: dict) -> dict:
  """Run name -> key -> seed statistic, over the seeds the uniform baseline has; 'intervals':
  key -> 95% t-interval over the seeds that reached (INTERVAL_KEYS)."""
  keys = STAT_KEYS + tuple(key for metric in ('', '_retrieval') for base in BASELINES
                           for key in ratio_keys(metric + base))
  runs = {}
  for name, by_seed in per_seed_rows(curves).items():
    rows = list(by_seed.values())
    runs[name] = seed_stats(rows, keys)
    runs[name]['intervals'] = {key: analysis.mean_interval(
        [r[key] for r in rows if r[key] is not None]) for key in INTERVAL_KEYS}
  return runs


def joint_independent_pairs(names) -> list[tuple[str, str, str]]:
  """(label, joint run, independent run) of every pair that `names` has both of."""
  return [(f'{policy}, f = {f}', f'{policy}_joint_f{f}', f'{policy}_independent_f{f}')
          for policy in ('learnability', 'easy_reference') for f in (0.5, 0.8, 0.9)
          if f'{policy}_joint_f{f}' in names and f'{policy}_independent_f{f}' in names]


def paired(curves: dict) -> dict:
  """Paired by seed (95% t-intervals): 'vs_<baseline>': run -> key -> the run's value minus the
  baseline's; 'joint_minus_independent': label -> key -> joint minus independent."""
  rows = per_seed_rows(curves)

  def diff(a, b):
    return {key: analysis.paired_by_seed({s: r[key] for s, r in rows[a].items()},
                                         {s: r[key] for s, r in rows[b].items()})
            for key in PAIRED_KEYS}

  out = {f'vs_{base}': {name: diff(name, base) for name in rows if name != base}
         for base in BASELINES.values() if base in rows}
  out['joint_minus_independent'] = {label: {'joint': joint, 'independent': independent,
                                            **diff(joint, independent)}
                                    for label, joint, independent
                                    in joint_independent_pairs(rows)}
  return out


def table_lines(summary: dict) -> list[str]:
  """The final values of every run with its paired difference to each baseline; joint minus
  independent; then per baseline the iterations and FLOPs to its value (ratio basis)."""
  fmt_stat, fmt_interval = analysis.fmt_stat, analysis.fmt_interval
  runs, pairs = summary['runs'], summary.get('paired')
  lines = [f'Seeds: {", ".join(summary["seeds"])}. Mean ± sample std (ddof=1) over seeds; '
           '"(k/n)": reached in k of n seeds (a ratio is averaged over those); "never": in '
           'none. Paired differences: mean over seeds of the per-seed difference, [95% '
           't-interval]. Ratios: iterations (FLOPs) to reach the baseline\'s final value, as '
           'multiples of what the baseline itself needed.', '']
  bases = [b for b in BASELINES.values() if pairs and f'vs_{b}' in pairs]
  rows = []
  for name, r in runs.items():
    corrupted = fmt_stat(r['corrupted_selected'], 100) if r['corrupted_selected']['n'] else '-'
    rows.append([name, fmt_stat(r['final'], 100), fmt_stat(r['i2t'], 100),
                 fmt_stat(r['t2i'], 100), corrupted] +
                ['-' if name == b else fmt_interval(pairs[f'vs_{b}'][name]['final'], 100)
                 for b in bases])
  lines += analysis.markdown_table(
      ['run', 'zero-shot (%)', 'I2T R@1 (%)', 'T2I R@1 (%)', 'corrupted pairs selected (%)'] +
      [f'zero-shot minus `{b}`, paired (points)' for b in bases], rows, 'lrrrr' + 'r' * len(bases))
  if pairs and pairs['joint_minus_independent']:
    lines += ['', 'Joint minus independent selection, paired by seed (points, [95% '
              't-interval]):', '']
    lines += analysis.markdown_table(
        ['scoring, f', 'zero-shot', 'retrieval R@1 (mean of I2T and T2I)', 'seeds'],
        [[label, fmt_interval(d['final'], 100), fmt_interval(d['retrieval'], 100),
          ', '.join(d['final']['seeds'])]
         for label, d in pairs['joint_minus_independent'].items()], 'lrrl')
  for suffix, base in BASELINES.items():
    if base not in runs:
      continue
    lines += ['', f'To reach the final value of `{base}` (per seed: that seed\'s `{base}` run), '
              f'ratio basis: the first evaluation at or above it, divided by `{base}`\'s own '
              'first evaluation at or above it. Mean ± std (reached in k of n seeds) [95% '
              't-interval over the seeds that reached]. (The fraction basis, of the '
              f'baseline\'s whole run, is in summary.json only: see the module docstring.)', '']

    def cell(r, key):
      iv = r.get('intervals', {}).get(key)
      ci = (f' [{iv["low"]:.2f}, {iv["high"]:.2f}]' if iv and iv['low'] is not None else '')
      return fmt_stat(r[key], always_count=True) + ci

    rows = [[name] + [cell(r, f'{kind}_ratio{metric}{suffix}')
                      for metric in ('', '_retrieval') for kind in ('iterations', 'flops')]
            for name, r in runs.items()]
    lines += analysis.markdown_table(
        ['run', 'zero-shot: iterations ratio', 'zero-shot: FLOPs ratio',
         'retrieval: iterations ratio', 'retrieval: FLOPs ratio'], rows, 'lrrrr')
  return lines


def mean_curve(per_seed):
  """Seed-mean zero-shot and retrieval curves (the seeds share their evaluation steps)."""
  return analysis.mean_curve([per_seed[k] for k in sorted(per_seed)],
                             {'flops': 'flops', 'zeroshot': 'zeroshot', 'retrieval': retrieval})


def _finals(curves, name, key, seeds):
  """Every seed's final zero-shot ('final') or retrieval of run `name`."""
  values = {'final': lambda c: c['zeroshot'][-1], 'retrieval': lambda c: retrieval(c)[-1]}[key]
  return [values(c) for s, c in curves.get(name, {}).items() if s in seeds]


def plot(out: str, steps: int, summary: dict, curves: dict):
  """fig3_filter_ratio.png (final values vs f: mean ± std and every seed) and fig3_curves.png
  (curves at f = 0.8: mean ± std over seeds)."""
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
      fs, stats, points = [0.0], [runs['uniform'][key]], [
          _finals(curves, 'uniform', key, summary['seeds'])]
      for f in (0.5, 0.8, 0.9):
        r = runs.get(f'{policy}_{method}_f{f}')
        if r and r[key]['mean'] is not None:
          fs.append(f)
          stats.append(r[key])
          points.append(_finals(curves, f'{policy}_{method}_f{f}', key, summary['seeds']))
      # Offsets keep the error bars of the four series apart.
      x = np.asarray(fs) + 0.008 * (i - 1.5)
      colour = 'C0' if policy == 'learnability' else 'C1'
      analysis.errorbar(ax, x, stats, scale=100, capsize=3,
                        ls='-' if method == 'joint' else '--', color=colour,
                        label=f'{policy}, {method} (mean ± std)')
      analysis.seed_points(ax, x + 0.004, points, scale=100, color=colour,
                           marker='o' if method == 'joint' else 'x', ms=3)
    if 'uniform_3x' in runs:
      ax.axhline(100 * runs['uniform_3x'][key]['mean'], color='k', ls=':',
                 label='i.i.d., 3x the iterations (mean)')
    ax.set_xlabel('filter ratio f (f = 0: i.i.d.)')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f'JEST Fig. 3 analogue: after {steps} iterations (mean ± sample std; points: '
               f'each seed of {seeds})')
  analysis.save_figure(fig, os.path.join(out, 'fig3_filter_ratio.png'), dpi=120)
  # Learning curves of the f = 0.8 runs and the baselines, against iterations and FLOPs.
  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  for name, per_seed in curves.items():
    if not (name.startswith('uniform') or name.endswith('f0.8')):
      continue
    c = mean_curve(per_seed)
    n = len(c['step'])
    style = '-' if 'joint' in name or name.startswith('uniform') else '--'
    for row, values in enumerate((lambda k: per_seed[k]['zeroshot'],
                                  lambda k: retrieval(per_seed[k]))):
      ys = [values(k)[:n] for k in sorted(per_seed)]
      line = analysis.plot_seeds(axes[row, 0], c['step'], ys, scale=100, band='std',
                                 style=style, label=name)
      analysis.plot_seeds(axes[row, 1], c['flops'] / 1e12, ys, scale=100, band='std',
                          style=style, color=line.get_color())
  for row, label in enumerate(('zero-shot accuracy (%), Fashion-MNIST test',
                               'retrieval R@1 (%), mean of I2T and T2I')):
    axes[row, 0].set_xlabel('learner iterations')
    axes[row, 1].set_xlabel('total TFLOPs (reference training excluded, cache pass included)')
    for ax in axes[row]:
      ax.set_ylabel(label)
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f'JEST Fig. 3 analogue: learning curves at f = 0.8 (mean, band: ± sample std '
               f'over seeds {seeds})')
  analysis.save_figure(fig, os.path.join(out, 'fig3_curves.png'), dpi=120)
