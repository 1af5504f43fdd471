r"""The analysis every reproducer shares: curves from runs' metrics, first reach of a target,
step and FLOP ratios, per-seed statistics, markdown tables and plots.

Raw metrics are read only here, through `big_vision_style.metrics_writer.read_metrics`
(`read_rows`, `curve`); a finished run's final row is `sweep.final_row`.

Statistics: `seed_stat` and `mean_std` take the standard deviation's `ddof` explicitly. The
committed tables use ddof=0 (the population std over seeds), kept so that they regenerate with
the same numbers. A follow-up issue switches every table to ddof=1 (the sample std) and adds
paired intervals (`paired_difference`: the mean difference over seeds with a 95% t-interval)
where two settings are compared seed by seed.
"""
from __future__ import annotations

import math
import os
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

def mean_std(values: Sequence[float], *, ddof: int) -> tuple[float, float]:
  """Mean and standard deviation (with `ddof`: 0 population, 1 sample) of `values`."""
  return float(np.mean(values)), float(np.std(values, ddof=ddof))


def seed_stat(values: Sequence[float | None], *, ddof: int) -> dict:
  """Mean and std over seeds of the values that are not None (None: a run that never reached
  a target), with how many seeds had one (n) of how many (of)."""
  present = [v for v in values if v is not None]
  mean, std = mean_std(present, ddof=ddof) if present else (None, None)
  return {'mean': mean, 'std': std, 'n': len(present), 'of': len(values)}


def paired_difference(a: Sequence[float], b: Sequence[float], *,
                      confidence: float = 0.95) -> dict:
  """a - b paired by seed: mean, sample std (ddof=1), n, and the two-sided t-interval of the
  mean at `confidence` (None for fewer than 2 pairs)."""
  if len(a) != len(b):
    raise ValueError(f'Paired values need the same seeds: {len(a)} vs {len(b)} values.')
  d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
  out = {'mean': float(d.mean()) if len(d) else None, 'std': None, 'n': len(d),
         'confidence': confidence, 'low': None, 'high': None}
  if len(d) >= 2:
    from scipy import stats  # pylint: disable=g-import-not-at-top
    std = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1)) * std / math.sqrt(len(d))
    out.update(std=std, low=out['mean'] - half, high=out['mean'] + half)
  return out


# ----- Tables -----

def fmt(x: float | None, digits: int = 2) -> str:
  return '-' if x is None else f'{x:.{digits}f}'


def fmt_stat(s: Mapping, scale: float = 1.0, digits: int = 2) -> str:
  """A `seed_stat` as 'mean ± std', times `scale`, with the seeds that had it if not all."""
  if s['mean'] is None:
    return f'never ({s["of"]} seeds)'
  return f'{scale * s["mean"]:.{digits}f} ± {scale * s["std"]:.{digits}f}' + (
      f' ({s["n"]}/{s["of"]})' if s['n'] != s['of'] else '')


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str) -> list[str]:
  """A markdown table's lines; `align` has one letter per column, 'l' (left) or 'r' (right)."""
  if len(align) != len(header):
    raise ValueError(f'align {align!r} does not match the {len(header)} columns.')
  rule = {'l': '---', 'r': '---:'}
  return (['| ' + ' | '.join(header) + ' |', '|' + ''.join(f'{rule[a]}|' for a in align)] +
          ['| ' + ' | '.join(map(str, row)) + ' |' for row in rows])


def command(module: str, args) -> str:
  """The command line that made a result, for its provenance: `python -m module --key value`
  for every parsed argument of `args`."""
  return f'python -m {module} ' + ' '.join(f'--{k} {v}' for k, v in vars(args).items())


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
  """Means ± stds of `seed_stat`s (or any {'mean', 'std'}) against `x`, times `scale`."""
  ax.errorbar(np.asarray(x), scale * np.asarray([s['mean'] for s in stats]),
              scale * np.asarray([s['std'] for s in stats]), **kw)


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


def save_figure(fig, path: str, dpi: int):
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  pyplot().close(fig)
