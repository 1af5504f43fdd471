r"""The analysis every reproducer shares: curves from runs' metrics, first reach of a target,
step and FLOP ratios, per-seed statistics, markdown tables and plots.

Raw metrics are read only here, through `big_vision_style.metrics_writer.read_metrics`
(`read_rows`, `curve`); a finished run's final row is `sweep.final_row`.

Statistics: `seed_stat` and `mean_std` take the standard deviation's `ddof` explicitly; every
committed table reports the sample std over seeds (ddof=1, `SAMPLE`). Two settings compared seed
by seed get `paired_difference` / `paired_by_seed`: the mean difference with a two-sided
t-interval (`mean_interval`; the t quantile from scipy, else from `T_975` for 95%). A ratio
averaged over the seeds that reached a target is shown with how many did (`fmt_stat`'s
`always_count`: "(k/n)", reached in k of n seeds).
"""
from __future__ import annotations

import math
import os
import shlex
from typing import Callable, Mapping, Sequence

import numpy as np

from big_vision_style import metrics_writer


# ----- Curves -----

def read_rows(workdir: str, where: str | None = None) -> list[dict]:
  """A run's logged rows that have the key `where` (None: all), one per step in step order:
  a run trained twice at once (two sweeps) may have logged a step twice; the last row wins.
  (A resumed run drops its rows after the checkpoint it resumes from: metrics_writer.)"""
  rows = metrics_writer.read_metrics(workdir)
  if where is None:
    return rows
  return sorted({r['step']: r for r in rows if where in r}.values(), key=lambda r: r['step'])


def columns(rows: Sequence[Mapping], keys: Mapping[str, str]) -> dict[str, list]:
  """{name: [row[key] for row in rows]} for each name -> key that every row has."""
  return {name: [r[key] for r in rows] for name, key in keys.items()
          if all(key in r for r in rows)}


def curve(workdir: str, keys: Mapping[str, str], where: str) -> dict[str, list]:
  """`columns` of the rows of `workdir` that have `where` (e.g. an evaluation's metric)."""
  return columns(read_rows(workdir, where), keys)


def mean_curve(curves: Sequence[Mapping], keys: Mapping[str, str | Callable],
               step: str = 'step') -> dict:
  """The mean over `curves` (seeds sharing their evaluation steps, truncated to the shortest):
  `step` from the first, then for each name the mean of a column (key) or of a function of a
  curve."""
  n = min(len(c[step]) for c in curves)

  def column(c, key):
    return key(c) if callable(key) else c[key]

  return {step: list(curves[0][step][:n]),
          **{name: np.mean([np.asarray(column(c, key)[:n]) for c in curves], axis=0)
             for name, key in keys.items()}}


# ----- Reaching a target, ratios -----

def first_reach(values: Sequence[float], target: float, tol: float) -> int | None:
  """Index of the first value at or above `target - tol`; None if none is."""
  for i, value in enumerate(values):
    if value >= target - tol:
      return i
  return None


def reach(values: Sequence[float], target: float, *at: Sequence, tol: float) -> tuple | None:
  """Each of `at` (e.g. steps, FLOPs) where `values` first reaches `target`; None if never."""
  i = first_reach(values, target, tol)
  return None if i is None else tuple(a[i] for a in at)


def ratio(num: float | None, den: float | None) -> float | None:
  """num / den, None when either is (a target never reached)."""
  return None if num is None or den is None else num / den


# ----- Statistics over seeds -----

SAMPLE = 1  # ddof of the sample standard deviation, the one every committed table reports.
# Two-sided 95% quantiles of Student's t (scipy.stats.t.ppf(0.975, df), 6 decimals), used when
# scipy is not installed.
T_975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 6: 2.446912,
         7: 2.364624, 8: 2.306004, 9: 2.262157, 10: 2.228139, 11: 2.200985, 12: 2.178813,
         13: 2.160369, 14: 2.144787, 15: 2.13145, 16: 2.119905, 17: 2.109816, 18: 2.100922,
         19: 2.093024, 20: 2.085963, 21: 2.079614, 22: 2.073873, 23: 2.068658, 24: 2.063899,
         25: 2.059539, 26: 2.055529, 27: 2.051831, 28: 2.048407, 29: 2.04523, 30: 2.042272}


def t_quantile(confidence: float, df: int) -> float:
  """The two-sided `confidence` quantile of Student's t with `df` degrees of freedom
  (scipy.stats.t.ppf(0.5 + confidence / 2, df)); without scipy, from `T_975` (95% only)."""
  try:
    from scipy import stats  # pylint: disable=g-import-not-at-top
  except ImportError:
    if confidence != 0.95 or df not in T_975:
      raise ValueError(f'Without scipy only the 95% quantile for df <= 30 is known '
                       f'(asked: {confidence}, df={df}).') from None
    return T_975[df]
  return float(stats.t.ppf(0.5 + confidence / 2, df))


def sample_std_from_population(std: float | None, n: int) -> float | None:
  """The sample std (ddof=1) of n values whose population std (ddof=0) is `std`: exact,
  std * sqrt(n / (n - 1)); None for n < 2 (a sample std needs two values) or no std."""
  return None if std is None or n < 2 else std * math.sqrt(n / (n - 1))


def mean_std(values: Sequence[float], *, ddof: int) -> tuple[float, float]:
  """Mean and standard deviation (with `ddof`: 0 population, 1 sample) of `values`."""
  return float(np.mean(values)), float(np.std(values, ddof=ddof))


def seed_stat(values: Sequence[float | None], *, ddof: int) -> dict:
  """Mean and std over seeds of the values that are not None (None: a run that never reached
  a target), with how many seeds had one (n) of how many (of). The std is None when there are
  no more values than `ddof` (a sample std of one seed)."""
  present = [v for v in values if v is not None]
  mean, std = mean_std(present, ddof=ddof) if len(present) > ddof else (
      (float(np.mean(present)), None) if present else (None, None))
  return {'mean': mean, 'std': std, 'n': len(present), 'of': len(values)}


def mean_interval(values: Sequence[float], *, confidence: float = 0.95) -> dict:
  """Mean, sample std (ddof=1), n and the two-sided t-interval of the mean at `confidence`
  (low, high; None for fewer than 2 values)."""
  v = np.asarray(values, dtype=float)
  out = {'mean': float(v.mean()) if len(v) else None, 'std': None, 'n': len(v),
         'confidence': confidence, 'low': None, 'high': None}
  if len(v) >= 2:
    std = float(v.std(ddof=1))
    half = t_quantile(confidence, len(v) - 1) * std / math.sqrt(len(v))
    out.update(std=std, low=out['mean'] - half, high=out['mean'] + half)
  return out


def paired_difference(a: Sequence[float], b: Sequence[float], *,
                      confidence: float = 0.95) -> dict:
  """a - b paired by seed: mean, sample std (ddof=1), n, and the two-sided t-interval of the
  mean at `confidence` (None for fewer than 2 pairs)."""
  if len(a) != len(b):
    raise ValueError(f'Paired values need the same seeds: {len(a)} vs {len(b)} values.')
  return mean_interval(np.asarray(a, dtype=float) - np.asarray(b, dtype=float),
                       confidence=confidence)


def paired_by_seed(a: Mapping[str, float | None], b: Mapping[str, float | None], *,
                   confidence: float = 0.95) -> dict:
  """`paired_difference` of a - b over the seeds (keys) both have a value for (not None), in
  sorted order, with those seeds listed ('seeds')."""
  seeds = sorted((s for s in a if s in b and a[s] is not None and b[s] is not None),
                 key=lambda s: (len(str(s)), str(s)))
  return {**paired_difference([a[s] for s in seeds], [b[s] for s in seeds],
                              confidence=confidence), 'seeds': [str(s) for s in seeds]}


# ----- Tables -----

def fmt(x: float | None, digits: int = 2) -> str:
  return '-' if x is None else f'{x:.{digits}f}'


def fmt_stat(s: Mapping, scale: float = 1.0, digits: int = 2, *,
             always_count: bool = False) -> str:
  """A `seed_stat` as 'mean ± std', times `scale`, with the seeds that had it, '(n/of)', if
  not all (`always_count`: always, e.g. for a ratio over the seeds that reached a target).
  A std of one seed is '-' (a sample std needs two)."""
  if s['mean'] is None:
    return f'never ({s["of"]} seeds)'
  std = '-' if s['std'] is None else f'{scale * s["std"]:.{digits}f}'
  return f'{scale * s["mean"]:.{digits}f} ± {std}' + (
      f' ({s["n"]}/{s["of"]})' if always_count or s['n'] != s['of'] else '')


def fmt_interval(d: Mapping, scale: float = 1.0, digits: int = 2) -> str:
  """A `mean_interval` / `paired_difference` as '+mean [low, high]', times `scale` (signed),
  with its number of seeds when the interval is missing (fewer than 2)."""
  if d['mean'] is None:
    return '-'
  if d['low'] is None:
    return f'{scale * d["mean"]:+.{digits}f} (n={d["n"]}, no interval)'
  return (f'{scale * d["mean"]:+.{digits}f} [{scale * d["low"]:+.{digits}f}, '
          f'{scale * d["high"]:+.{digits}f}]')


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str) -> list[str]:
  """A markdown table's lines; `align` has one letter per column, 'l' (left) or 'r' (right)."""
  if len(align) != len(header):
    raise ValueError(f'align {align!r} does not match the {len(header)} columns.')
  rule = {'l': '---', 'r': '---:'}
  return (['| ' + ' | '.join(header) + ' |', '|' + ''.join(f'{rule[a]}|' for a in align)] +
          ['| ' + ' | '.join(map(str, row)) + ' |' for row in rows])


# Options of how a sweep runs (experiments/sweep.py's), not of what it computes.
_NOT_PROVENANCE = ('analyze_only', 'parallel', 'queue', 'runs_only', 'help')


def command(module: str, args) -> str:
  """The command line that made a result, for its provenance, runnable as printed:
  `python -m module` with every parsed argument of `args` as its option, a True flag bare, a
  False one, None and '' left out (their defaults), a list joined with commas (as the reproducers
  split them); the sweep's own options (how it ran, not what) are left out."""
  parts = ['python', '-m', module]
  for key, value in vars(args).items():
    if key in _NOT_PROVENANCE or value is None or value is False or value == '':
      continue
    flag = f'--{key}'
    if value is True:
      parts.append(flag)
    elif isinstance(value, (list, tuple)):
      parts += [flag, ','.join(map(str, value))]
    else:
      parts += [flag, str(value)]
  return ' '.join(shlex.quote(p) for p in parts)


def write_text(path: str, lines: Sequence[str]):
  """`lines` to `path`, one per line, making its folder."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


# ----- Plots (matplotlib, Agg) -----

def pyplot():
  """matplotlib.pyplot on the Agg backend (files only; no display)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def errorbar(ax, x: Sequence[float], stats: Sequence[Mapping], *, scale: float = 1.0, **kw):
  """Means ± stds of `seed_stat`s (or any {'mean', 'std'}) against `x`, times `scale`; a
  missing std (one seed) draws no bar."""
  ax.errorbar(np.asarray(x), scale * np.asarray([s['mean'] for s in stats]),
              scale * np.asarray([s['std'] or 0.0 for s in stats]), **kw)


def plot_seeds(ax, x: Sequence[float], per_seed: Sequence[Sequence[float]], *,
               scale: float = 1.0, band: str | None = None, ddof: int = 1, style: str = '-',
               **kw):
  """The mean over seeds of `per_seed` (one sequence per seed, the same x) against `x`, times
  `scale`; band='std' shades mean ± std (with `ddof`), band='points' marks every seed's value."""
  y = scale * np.asarray(per_seed, dtype=float)
  line, = ax.plot(x, y.mean(axis=0), style, **kw)
  if band == 'std':
    std = y.std(axis=0, ddof=ddof) if len(y) > ddof else np.zeros(y.shape[1])
    ax.fill_between(x, y.mean(axis=0) - std, y.mean(axis=0) + std, color=line.get_color(),
                    alpha=0.2, lw=0)
  elif band == 'points':
    for seed_y in y:
      ax.plot(x, seed_y, '.', color=line.get_color(), ms=3, alpha=0.6)
  elif band is not None:
    raise ValueError(f'band={band!r}: expected None, std or points.')
  return line


def seed_points(ax, x: Sequence[float], per_x: Sequence[Sequence[float | None]], *,
                scale: float = 1.0, color=None, marker: str = '.', ms: float = 4, **kw):
  """Every seed's value (per_x[i]: the seeds' values at x[i], None skipped) as a point, times
  `scale`: the spread that a mean ± std hides."""
  xs = [xi for xi, values in zip(x, per_x) for v in values if v is not None]
  ys = [scale * v for values in per_x for v in values if v is not None]
  ax.plot(xs, ys, marker, color=color, ms=ms, alpha=kw.pop('alpha', 0.6), ls='none', **kw)


def save_figure(fig, path: str, dpi: int):
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  pyplot().close(fig)
