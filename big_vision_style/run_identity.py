"""Run identity: a workdir holds one run, so a resume cannot silently mix two.

At first start the trainer records `<workdir>/run.json`: the resolved config and the versions
(this package, jax, jaxlib, orbax, python). A resume (the workdir has checkpoints) compares
the config with the recorded one before anything is loaded or compiled, and refuses a change
that changes the run, listing every changed field. Fields in `SAFE` may change: how often to
log, evaluate and checkpoint, how many checkpoints to keep, the input pipeline's threads and
prefetch, the evaluations themselves (`evals.*`: they only read the parameters), and extending
`total_steps` / `total_epochs` (the run goes on; with a decaying schedule, its remaining steps
follow the longer schedule). `config.allow_config_change = True` accepts any change; the
record then gains the accepted config and a `changes` entry. A version change is logged.
"""
from __future__ import annotations

import json
import logging
import platform
import time

from etils import epath

FILE = 'run.json'
SAFE_EXACT = ('log_training_steps', 'ckpt_steps', 'ckpt_keep', 'input.num_threads',
              'input.prefetch', 'allow_config_change', 'score_cache_batch_size')
SAFE_PREFIXES = ('evals.',)
EXTENDABLE = ('total_steps', 'total_epochs')


def versions() -> dict:
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  out = {'python': platform.python_version()}
  for pkg in ('big_vision_style', 'jax', 'jaxlib', 'orbax-checkpoint'):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      out[pkg] = None
  return out


def resolved(config) -> dict:
  """The config as plain JSON (tuples as lists), as it is recorded and compared."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _flatten(tree, prefix=''):
  if isinstance(tree, dict) and tree:
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def _safe(key, old, new) -> bool:
  if key in SAFE_EXACT or key.startswith(SAFE_PREFIXES):
    return True
  if key in EXTENDABLE:
    return old is not None and new is not None and new >= old
  return False


def changes(recorded: dict, current: dict) -> list[tuple[str, object, object]]:
  """(field, recorded value, current value) of every field that differs and is not safe."""
  old, new = _flatten(recorded), _flatten(current)
  missing = object()
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, missing), new.get(key, missing)
    if a != b and not _safe(key, None if a is missing else a, None if b is missing else b):
      out.append((key, '<unset>' if a is missing else a, '<unset>' if b is missing else b))
  return out


def check_or_record(config, workdir: str, *, resuming: bool, is_writer: bool = True):
  """Records the run at first start; on resume refuses a config that changes it (module doc).
  Every host checks (and reaches the same answer); only the writer writes."""
  path = epath.Path(workdir) / FILE
  current = resolved(config)
  record = None
  if resuming and path.exists():
    record = json.loads(path.read_text())
    diff = changes(record['config'], current)
    if diff and not config.get('allow_config_change', False):
      listing = '\n'.join(f'  {k}: {a!r} -> {b!r}' for k, a, b in diff)
      raise ValueError(
          f'{workdir} holds another run: resuming it with this config would change\n{listing}\n'
          f'Use a new --workdir for a new run, rerun with the recorded config ({path}), or set '
          'config.allow_config_change=True to continue this run with the change.')
    if record.get('versions') != versions():
      logging.warning('%s was started with %s; resuming with %s.', workdir,
                      record.get('versions'), versions())
    if diff:
      logging.warning('Continuing %s with changed fields (allow_config_change): %s', workdir,
                      ', '.join(k for k, _, _ in diff))
    if record['config'] == current:
      return record
  if not is_writer:
    return record
  out = {'config': current, 'versions': versions(),
         'created': record.get('created') if record else time.time(),
         'changes': (record or {}).get('changes', [])}
  if record is not None:
    out['changes'].append({'time': time.time(), 'fields': [
        [k, a, b] for k, a, b in _all_changes(record['config'], current)]})
  tmp = path.parent / (FILE + '.tmp')
  tmp.write_text(json.dumps(out, indent=1, sort_keys=True))
  tmp.replace(path)
  return out


def _all_changes(recorded, current):
  old, new = _flatten(recorded), _flatten(current)
  return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k)]
