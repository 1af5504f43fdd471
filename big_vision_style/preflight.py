"""Checks that run before any data is loaded or anything compiled: config values in range and
a writable workdir. Each error names the setting and what to set it to."""
from __future__ import annotations

import math
import os
import uuid

from etils import epath


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(key: str, value):
  if not _number(value) or not math.isfinite(value) or value != int(value) or value <= 0:
    raise ValueError(f'config.{key}={value!r} must be a positive whole number of steps.')


def _in_range(key, value, lo, hi, *, lo_open=False, hi_open=False):
  ok = _number(value) and math.isfinite(value) and (value > lo if lo_open else value >= lo) and (
      value < hi if hi_open else value <= hi)
  if not ok:
    raise ValueError(f'config.{key}={value!r} must be in {"(" if lo_open else "["}{lo}, {hi}'
                     f'{")" if hi_open else "]"}.')


def check_config(config):
  """Step counts, frequencies and rates (clear errors instead of late or obscure ones)."""
  if config.get('total_steps') is not None:
    _positive_int('total_steps', config.total_steps)
  elif config.get('total_epochs') is not None:
    if not _number(config.total_epochs) or not config.total_epochs > 0:
      raise ValueError(f'config.total_epochs={config.total_epochs!r} must be positive.')
  else:
    raise ValueError('Set config.total_steps (or config.total_epochs): how long to train.')
  for key in ('log_training_steps', 'ckpt_steps', 'ckpt_keep'):
    if config.get(key) is not None:
      _positive_int(key, config.get(key))
  for name, ev in (config.get('evals') or {}).items():
    _positive_int(f'evals.{name}.log_steps', ev.get('log_steps'))
    if ev.get('batch_size') is not None:
      _positive_int(f'evals.{name}.batch_size', ev.get('batch_size'))
  _positive_int('input.batch_size', config.input.get('batch_size'))
  for key in ('num_threads', 'prefetch'):
    value = config.input.get(key, 1)
    if not _number(value) or value != int(value) or value < 0:
      raise ValueError(f'config.input.{key}={value!r} must be a whole number >= 0.')
  optax_cfg = config.get('optax') or {}
  if _number(optax_cfg.get('lr')):
    _in_range('optax.lr', optax_cfg['lr'], 0, math.inf, lo_open=True, hi_open=True)
  if _number(optax_cfg.get('warmup_frac')):
    _in_range('optax.warmup_frac', optax_cfg['warmup_frac'], 0, 1)
  data = config.get('data') or {}
  if _number(data.get('label_noise')):
    _in_range('data.label_noise', data['label_noise'], 0, 1)
  sel = config.get('selection') or {}
  if _number(sel.get('filter_ratio')):
    _in_range('selection.filter_ratio', sel['filter_ratio'], 0, 1, hi_open=True)
  if not isinstance(config.get('skip_nonfinite_steps', False), bool):
    raise ValueError('config.skip_nonfinite_steps must be True or False.')


def check_total_steps(config, total_steps: int):
  if total_steps <= 0:
    raise ValueError(f'config.total_epochs={config.get("total_epochs")} gives {total_steps} '
                     'steps of config.input.batch_size: train for at least one step.')


def check_workdir(workdir: str):
  """The workdir exists (created if need be) and takes a file; raises naming it if not."""
  if not workdir:
    raise ValueError('Give a --workdir: where checkpoints and metrics go.')
  path = epath.Path(workdir)
  probe = path / f'.write_test_{uuid.uuid4().hex}'
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise PermissionError(f'The workdir {workdir} is not writable ({e}); choose another '
                          f'--workdir or fix its permissions{"" if "://" in workdir else f" (ls -ld {os.path.abspath(workdir)})"}.') from e
