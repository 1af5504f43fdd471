r"""Reference-score cache: the frozen reference's loss on every training example, by id.

Reference scores never change, so instead of running the reference forward on every
super-batch, score the training split once and look the scores up (the "reference scores
precomputed" amortisation level of Bad Students). Scores are of the un-augmented image; configs
that use the cache should not augment, so that cached and live scores agree exactly.

  python -m big_vision_style.score_cache \
      --config experiments/bad_students/policy_comparison.py:policy=learnability \
      --out workdirs/bad_students/reference_scores.npz
"""
from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import input_pipeline
from big_vision_style import steps


# How to make the file, for error messages; other caches (ReLA's targets) pass their own.
_HOW = ('compute it with `python -m big_vision_style.score_cache --config <the selection config> '
        "--out PATH`, or set config.selection.reference = 'pretrained' to score with the live "
        'reference')


class ScoreCache:
  """Dense id -> value lookup (ids are small non-negative integers in every source).

  Values are scalars (reference losses) or vectors (ReLA's prior targets, `rela.py`).
  """

  def __init__(self, ids: np.ndarray, scores: np.ndarray, meta: dict | None = None, *,
               what: str = 'score cache', how: str = _HOW):
    self.meta = meta or {}
    self.what, self.how = what, how
    scores = np.asarray(scores, np.float32)
    if len(ids) != len(scores):
      raise ValueError(f'The {what} holds {len(ids)} ids but {len(scores)} values.')
    self._table = np.full((int(ids.max()) + 1,) + scores.shape[1:], np.nan, np.float32)
    self._table[ids] = scores

  @property
  def value_shape(self) -> tuple[int, ...]:
    return self._table.shape[1:]

  def lookup(self, ids) -> np.ndarray:
    ids = np.asarray(ids)
    out = self._table[np.clip(ids, 0, len(self._table) - 1)]
    missing = (ids >= len(self._table)) | np.isnan(out).reshape(ids.shape + (-1,)).any(-1)
    if missing.any():
      raise KeyError(f'{int(missing.sum())} example ids (e.g. {int(ids[missing][0])}) are not in '
                     f'the {self.what}: it was computed for another split or dataset; {self.how}.')
    return out


class WithCachedScores:
  """A source whose records also carry `key` (default `reference_loss`) from a ScoreCache."""

  def __init__(self, source, cache: ScoreCache, key: str = 'reference_loss'):
    self.source, self.cache, self.key = source, cache, key
    self.ids, self.num_classes = source.ids, source.num_classes
    cache.lookup(source.ids)  # Fail now, not mid-training, if any id is missing.
    if hasattr(source, 'get_batch'):  # Batched reads (input_pipeline) if the source has them.
      self.get_batch = self._get_batch

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    record = self.source[index]
    return {**record, self.key: self.cache.lookup(record['id'])[()]}

  def _get_batch(self, indices):
    records = self.source.get_batch(indices)
    return {**records, self.key: self.cache.lookup(records['id'])}


def compute_outputs(fn, params, source, preprocess_fn, mesh, *, batch_size: int):
  """(ids, fn(params, batch)) for every example of `source`, in order, padding dropped."""
  all_ids, all_out = [], []
  for local in input_pipeline.make_eval_batches(source, global_batch_size=batch_size,
                                                preprocess_fn=preprocess_fn):
    batch = input_pipeline.to_global(local, mesh)
    out = np.asarray(jax.device_get(fn(params, batch)))
    all_ids.append(local['id'][local['mask']])
    all_out.append(out[local['mask']])  # Single-process: global batch == local batch.
  return np.concatenate(all_ids), np.concatenate(all_out)


def compute(model, params, source, preprocess_fn, mesh, *, batch_size: int, num_classes: int):
  """(ids, losses) of every example of `source` under the frozen model."""
  loss_fn = jax.jit(lambda p, b: steps.per_example_loss(model, p, b, num_classes=num_classes))
  ids, scores = compute_outputs(loss_fn, params, source, preprocess_fn, mesh,
                                batch_size=batch_size)
  return ids, scores.astype(np.float32)


def save(path: str, ids, scores, meta: dict):
  """Atomic: a reader never sees a half-written cache."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, ids=ids, scores=scores, meta=json.dumps(meta))
  os.replace(tmp, path)


def load(path: str, *, what: str = 'reference score cache', how: str = _HOW) -> ScoreCache:
  if not os.path.exists(path):
    raise FileNotFoundError(f'No {what} at {path!r}: {how}.')
  with np.load(path) as f:
    return ScoreCache(f['ids'], f['scores'], json.loads(str(f['meta'])), what=what, how=how)


def main():
  from big_vision_style import train  # pylint: disable=g-import-not-at-top  (avoid a cycle)
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='A selection config, `path.py:arg`.')
  parser.add_argument('--out', default=None, help='Default: config.selection.score_cache.')
  args = parser.parse_args()
  config = train.load_config(args.config)
  out = args.out or config.selection.score_cache
  ids, scores, meta = train.compute_reference_scores(config)
  save(out, ids, scores, meta)
  print(f'Wrote {len(ids)} reference scores to {out} (mean {scores.mean():.4f}); '
        f'{meta["flops"]:.4g} FLOPs.')


if __name__ == '__main__':
  main()
