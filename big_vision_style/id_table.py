"""The one per-example table, keyed by example id, for everything computed once per example.

Three things are cached per training example, and all are stored and read the same way:
- reference scores: the frozen reference's loss (Bad Students' cached reference; score_cache.py);
- reference embeddings: image and text embeddings of a frozen two-tower reference, [2 d]
  (JEST's cached reference; embedding_cache.py);
- ReLA targets: a prior's whitened features, [k] (rela_targets.py).

A table is `ids` [N], `values` [N, ...] float32 and `meta`, a JSON dict that records its
provenance (`provenance()`: what produced it, from which checkpoint, on which data and split,
how many examples) beside its one-off costs (`flops`, ...). It is one `.npz`, written
atomically. The trainer attaches tables to a data source with `with_columns`, the one wrapper:
every record (and every batched read) then carries each table's value under its key, looked up
by the record's id, and a missing id fails at attach time, not mid-training.

Consumers (the methods' `prepare`) check a table's provenance against their run
(`check_provenance`): the data config (dataset, label-noise rate and seed, ...), the split, the
example count, and what produced it (reference or prior workdir and checkpoint step, embedding
dimension). A mismatch is refused with the differing fields; a table without provenance (an
older file) gets a warning.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np


class IdTable:
  """Dense id -> value lookup (ids are small non-negative integers in every source)."""

  def __init__(self, ids, values, meta: dict | None = None, *, what: str = 'per-example table',
               how: str = 'recompute it'):
    ids = np.asarray(ids, np.int64)
    values = np.asarray(values, np.float32)
    self.meta = dict(meta or {})
    self.what, self.how = what, how
    self.path = None  # Set by `load`.
    if ids.ndim != 1 or len(ids) != len(values):
      raise ValueError(f'The {what} holds {len(ids)} ids but {len(values)} values.')
    if len(ids) and ids.min() < 0:
      raise ValueError(f'The {what} has negative example ids (e.g. {int(ids.min())}).')
    self.ids = np.sort(ids)
    self._table = np.full((int(ids.max(initial=-1)) + 1,) + values.shape[1:], np.nan, np.float32)
    self._table[ids] = values

  @property
  def value_shape(self) -> tuple[int, ...]:
    return self._table.shape[1:]

  def lookup(self, ids) -> np.ndarray:
    """Values [..., *value_shape] of `ids`; KeyError naming an id that is not in the table."""
    ids = np.asarray(ids)
    out = self._table[np.clip(ids, 0, max(len(self._table) - 1, 0))]
    missing = (ids >= len(self._table)) | np.isnan(out).reshape(ids.shape + (-1,)).any(-1)
    if missing.any():
      raise KeyError(f'{int(missing.sum())} example ids (e.g. {int(ids[missing][0])}) are not in '
                     f'the {self.what}: it was computed for another split or dataset; {self.how}.')
    return out

  def values(self) -> np.ndarray:
    """The values of `self.ids`, in that order."""
    return self._table[self.ids]

  def save(self, path: str):
    save(path, self.ids, self.values(), self.meta)


def _data_config(config) -> dict:
  data = config.get('data')
  return json.loads(json.dumps(data.to_dict() if hasattr(data, 'to_dict') else dict(data or {})))


def provenance(config, *, producer: str, split: str | None = None, **extra) -> dict:
  """What a table records about where it came from: the producing tool and model (e.g.
  `reference_workdir` and `reference_step`), and the data (dataset config, with its label-noise
  rate and seed, and split) whose examples it covers; producers add `num_examples`."""
  return {'producer': producer, 'data': _data_config(config),
          'split': split or config.input.get('split', 'train'), **extra}


def latest_checkpoint_step(workdir: str | None) -> int | None:
  """The newest checkpoint step of a run's workdir (local), or None: what a table records of
  the model that produced it, and what consumers compare it with."""
  directory = os.path.join(workdir or '', 'checkpoints')
  if not workdir or '://' in workdir or not os.path.isdir(directory):
    return None
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()]
  return max(steps) if steps else None


IGNORED_DATA_KEYS = ('data_dir',)  # Where the files are, not which examples.


def check_provenance(table: IdTable, config, *, source=None, expect: dict | None = None):
  """Refuses a table made for another run: its data config (but `data_dir`), split, example
  count (`len(source)`) and each `expect` key it records must match. Keys the table does not
  record are not checked; a table with no provenance at all gets a warning."""
  meta, where = table.meta, table.path or 'the given table'
  if 'data' not in meta:
    logging.warning('The %s %s records no provenance (an older file): cannot check that it was '
                    'computed for this run\'s data; if unsure, %s.', table.what, where, table.how)
    return
  diffs = []
  recorded, current = dict(meta['data']), _data_config(config)
  for key in sorted(set(recorded) | set(current)):
    if key not in IGNORED_DATA_KEYS and recorded.get(key) != current.get(key):
      diffs.append(f'data.{key}: {recorded.get(key)!r} in the table, {current.get(key)!r} here')
  split = config.input.get('split', 'train')
  if meta.get('split') is not None and meta['split'] != split:
    diffs.append(f'split: {meta["split"]!r} in the table, {split!r} here')
  if source is not None and meta.get('num_examples') is not None and (
      int(meta['num_examples']) != len(source)):
    diffs.append(f'examples: {meta["num_examples"]} in the table, {len(source)} here')
  for key, value in (expect or {}).items():
    if value is not None and meta.get(key) is not None and meta[key] != value:
      diffs.append(f'{key}: {meta[key]!r} in the table, {value!r} here')
  if diffs:
    raise ValueError(f'The {table.what} {where} was computed for another run ('
                     f'{"; ".join(diffs)}); {table.how}.')


def save(path: str, ids, values, meta: dict):
  """Atomic: a reader never sees a half-written table."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, ids=np.asarray(ids), scores=np.asarray(values), meta=json.dumps(meta))
  os.replace(tmp, path)


def load(path: str, *, what: str, how: str) -> IdTable:
  if not path:
    raise ValueError(f'No path given for the {what}: {how}.')
  if not os.path.exists(path):
    raise FileNotFoundError(f'No {what} at {path!r}: {how}.')
  try:
    with np.load(path, allow_pickle=False) as f:
      if not hasattr(f, 'files'):  # A plain .npy array, not an archive.
        raise ValueError('it is a single .npy array')
      table = IdTable(f['ids'], f['scores'], json.loads(str(f['meta'])), what=what, how=how)
  except (ValueError, KeyError, OSError, EOFError) as e:  # Not an npz, or not one of ours.
    reason = ('not an .npz file' if 'pickle' in str(e) or isinstance(e, (OSError, EOFError))
              else str(e))
    raise ValueError(f'{path!r} is not a {what} (an .npz with ids, scores and meta): '
                     f'{reason}; {how}.') from e
  table.path = path
  return table


class WithColumns:
  """`source` whose records also carry `{key: table.lookup(record['id'])}` for each table."""

  def __init__(self, source, tables: dict[str, IdTable]):
    self.source, self.tables = source, dict(tables)
    self.ids, self.num_classes = source.ids, source.num_classes
    for table in self.tables.values():
      table.lookup(source.ids)  # Fail now, not mid-training, if any id is missing.
    if hasattr(source, 'get_batch'):  # Batched reads (input_pipeline) if the source has them.
      self.get_batch = self._get_batch

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    record = self.source[index]
    return {**record, **{k: t.lookup(record['id'])[()] for k, t in self.tables.items()}}

  def _get_batch(self, indices):
    records = self.source.get_batch(indices)
    return {**records, **{k: t.lookup(records['id']) for k, t in self.tables.items()}}


def with_columns(source, tables: dict[str, IdTable]):
  """The one way tables are attached to a source (nested attachments flatten into one)."""
  if isinstance(source, WithColumns):
    return WithColumns(source.source, {**source.tables, **tables})
  return WithColumns(source, tables)
