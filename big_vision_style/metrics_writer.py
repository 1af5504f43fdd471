"""Metrics to `metrics.jsonl` (one JSON object per logged step), TensorBoard (tb_events.py) and
console.

metrics.jsonl is strict JSON: a non-finite value (a skipped bad step's NaN loss) is written as
null. A resumed run first drops the rows after its checkpoint's step, and repairs a torn last
line (a kill mid-write) with a warning, so that the rows always match the state.
"""
from __future__ import annotations

import json
import logging
import math
import time

from etils import epath
import jax

from big_vision_style import tb_events


class MetricsWriter:

  def __init__(self, workdir: str, *, total_steps: int, resume_step: int = 0):
    # epath: the workdir may be a gs:// bucket on Cloud TPU VMs.
    self.path = epath.Path(workdir) / 'metrics.jsonl'
    self.is_main = jax.process_index() == 0
    self.total_steps = total_steps
    # Object stores (gs://) cannot append: there each write rewrites the (small) file.
    self._append = '://' not in str(self.path)
    self._lines = []
    if self.is_main:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self._drop_rows_after(resume_step)
    # TensorBoard too; the console gets our own one-line progress report instead.
    self._tb = tb_events.writer(str(workdir), is_main=self.is_main)
    self._rate_t, self._rate_step = time.time(), resume_step

  def _drop_rows_after(self, step: int):
    """A resumed run re-does the steps after its checkpoint: drop their stale rows first."""
    if not self.path.exists():
      return
    self._lines = [json.dumps(_strict(row), allow_nan=False) + '\n'
                   for row in _parse(self.path) if row['step'] <= step]
    tmp = self.path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(self._lines))
    tmp.replace(self.path)

  def write(self, step: int, metrics: dict):
    metrics = {k: float(v) if not isinstance(v, (int, str)) else v for k, v in metrics.items()}
    if self.is_main:
      self._lines.append(json.dumps({'step': step, **_strict(metrics)}, allow_nan=False) + '\n')
      if self._append:
        with self.path.open('a') as f:
          f.write(self._lines[-1])
      else:
        self.path.write_text(''.join(self._lines))
    self._tb.write_scalars(step, {k: v for k, v in metrics.items()
                                  if isinstance(v, (int, float)) and k != 'step'})

  def progress(self, step: int, metrics: dict):
    now = time.time()
    rate = (step - self._rate_step) / max(now - self._rate_t, 1e-9)
    self._rate_t, self._rate_step = now, step
    eta = (self.total_steps - step) / rate if rate > 0 else math.inf
    shown = ', '.join(f'{k}={v:.4g}' for k, v in metrics.items()
                      if k in ('train/loss', 'eval/test/accuracy', 'train/lr'))
    logging.info('[%d/%d] %.2f steps/s, ETA %s | %s', step, self.total_steps, rate,
                 _fmt_seconds(eta), shown)

  def flush(self):
    self._tb.flush()

  def close(self):
    self._tb.flush()
    self._tb.close()


def _fmt_seconds(s: float) -> str:
  if not math.isfinite(s):
    return '?'
  s = int(s)
  return f'{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def _strict(metrics: dict) -> dict:
  """Non-finite floats as None (JSON null): json.dumps would write bare NaN / Infinity."""
  return {k: None if isinstance(v, float) and not math.isfinite(v) else v
          for k, v in metrics.items()}


def _parse(path) -> list[dict]:
  """The rows of a metrics file. A torn last line (the writer was killed mid-line) is dropped
  with a warning; a bad line anywhere else is an error naming the file and line."""
  lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
  rows = []
  for n, (i, line) in enumerate(lines):
    try:
      row = json.loads(line)
      if not isinstance(row, dict) or 'step' not in row:
        raise ValueError('not a metrics row')
      rows.append(row)
    except ValueError as e:
      if n == len(lines) - 1:
        logging.warning('%s: line %d is torn (%d characters; a run killed mid-write); dropping '
                        'it: its step is re-run after the checkpoint.', path, i, len(line))
      else:
        raise ValueError(f'{path}: line {i} is not a JSON metrics row ({e}): {line[:80]!r}. '
                         'Fix or delete that line.') from e
  return rows


def read_metrics(workdir: str) -> list[dict]:
  return _parse(epath.Path(workdir) / 'metrics.jsonl')
