"""Metrics to `metrics.jsonl` (one JSON object per logged step), TensorBoard (clu) and console."""
from __future__ import annotations

import json
import logging
import math
import time

from etils import epath
import jax


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
    from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TF: slow)
    # TensorBoard only: the console gets our own one-line progress report instead.
    self._tb = (metric_writers.SummaryWriter(workdir) if self.is_main
                else metric_writers.MultiWriter([]))
    self._rate_t, self._rate_step = time.time(), resume_step

  def _drop_rows_after(self, step: int):
    """A resumed run re-does the steps after its checkpoint: drop their stale rows first."""
    if not self.path.exists():
      return
    self._lines = [line + '\n' for line in self.path.read_text().splitlines()
                   if line.strip() and json.loads(line)['step'] <= step]
    tmp = self.path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(self._lines))
    tmp.replace(self.path)

  def write(self, step: int, metrics: dict):
    metrics = {k: float(v) if not isinstance(v, (int, str)) else v for k, v in metrics.items()}
    if self.is_main:
      self._lines.append(json.dumps({'step': step, **metrics}) + '\n')
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


def _fmt_seconds(s: float) -> str:
  if not math.isfinite(s):
    return '?'
  s = int(s)
  return f'{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def read_metrics(workdir: str) -> list[dict]:
  text = (epath.Path(workdir) / 'metrics.jsonl').read_text()
  return [json.loads(line) for line in text.splitlines() if line.strip()]
