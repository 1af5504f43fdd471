"""Reference embedding cache: the frozen reference's image and text embeddings, by example id.

JEST's batches are unknown in advance, so scalar reference scores cannot be cached (a pair's
score depends on the rest of the batch); its *embeddings* can (METHODS.md section 2). Compute
them once for the training pool, store them with the reference's temperature and bias, and at
train time rebuild the reference's score blocks from them (`jest.Embeddings`), with no
reference forward pass. Storage is an id table (id_table.py: one `.npz`, written atomically,
with provenance; clear errors for missing files and ids): each id's value is its image
embedding followed by its text embedding, [2 d].

  cache = embedding_cache.compute(model, params, source, pp, mesh, batch_size=1024)
  embedding_cache.save(path, cache)
  source = embedding_cache.with_cached_embeddings(source, embedding_cache.load(path))
  # ... records now carry `reference_embedding` [2 d]; inside the step:
  reference = cache.embeddings(batch['reference_embedding'])   # jest.Embeddings [B, d] x 2

Embeddings are of the un-augmented image, as with score caches: configs using the cache should
not augment, so that cached and live selection agree.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import id_table
from big_vision_style import score_cache
from big_vision_style.selection import jest

KEY = 'reference_embedding'
_WHAT = 'reference embedding cache'
_HOW = ('compute it with embedding_cache.compute and embedding_cache.save for the training '
        'split, or score with the live reference')


@dataclasses.dataclass(frozen=True)
class EmbeddingCache:
  ids: np.ndarray  # The ids cached, sorted.
  table: id_table.IdTable  # id -> [image embedding | text embedding]
  temperature: float
  bias: float

  @property
  def dim(self) -> int:
    return self.table.value_shape[0] // 2

  def lookup(self, ids) -> np.ndarray:
    """[..., 2 d] for `ids`; KeyError naming an id that is not cached."""
    return self.table.lookup(ids)

  def embeddings(self, values) -> jest.Embeddings:
    """Looked-up values [B, 2 d] (a numpy or jax array, e.g. inside the jitted step) -> the
    reference's `jest.Embeddings`."""
    values = jnp.asarray(values, jnp.float32)
    d = values.shape[-1] // 2
    return jest.Embeddings(values[..., :d], values[..., d:], jnp.float32(self.temperature),
                           jnp.float32(self.bias))


def from_arrays(ids, image, text, temperature, bias, meta: dict | None = None) -> EmbeddingCache:
  image, text = np.asarray(image, np.float32), np.asarray(text, np.float32)
  if image.ndim != 2 or image.shape != text.shape or len(ids) != len(image):
    raise ValueError(f'Expected ids [N] and image / text embeddings [N, d]; got {len(ids)} ids, '
                     f'{image.shape} and {text.shape}.')
  meta = {**(meta or {}), 'temperature': float(temperature), 'bias': float(bias),
          'dim': int(image.shape[1])}
  table = id_table.IdTable(np.asarray(ids), np.concatenate([image, text], axis=1), meta,
                                 what=_WHAT, how=_HOW)
  return EmbeddingCache(np.sort(np.asarray(ids, np.int64)), table, float(temperature),
                        float(bias))


def placeholder() -> EmbeddingCache:
  """An empty cache with neutral temperature and bias, for building a step without data."""
  return from_arrays(np.zeros([0], np.int64), np.zeros([0, 1]), np.zeros([0, 1]), 1.0, 0.0)


def compute(model, params, source, preprocess_fn, mesh, *, batch_size: int,
            meta: dict | None = None) -> EmbeddingCache:
  """Embeds every pair of `source` with the frozen two-tower `model` (records: image, text)."""

  @jax.jit
  def embed(p, batch):
    zimg, ztxt, _ = model.apply({'params': p}, batch['image'], batch['text'])
    return jnp.concatenate([zimg, ztxt], axis=1)

  ids, values = score_cache.compute_outputs(embed, params, source, preprocess_fn, mesh,
                                            batch_size=batch_size)
  _, _, out = model.apply({'params': params}, None, None)
  d = values.shape[1] // 2
  return from_arrays(ids, values[:, :d], values[:, d:], out['t'], out['b'], meta)


def save(path: str, cache: EmbeddingCache):
  cache.table.save(path)


def load(path: str) -> EmbeddingCache:
  table = id_table.load(path, what=_WHAT, how=_HOW)
  for key in ('temperature', 'bias'):
    if key not in table.meta:
      raise ValueError(f'{path} is not a reference embedding cache (its meta has no {key!r}).')
  return EmbeddingCache(table.ids, table, float(table.meta['temperature']),
                        float(table.meta['bias']))


def with_cached_embeddings(source, cache: EmbeddingCache):
  """`source` whose records also carry `reference_embedding` [2 d]; fails now if ids are missing."""
  return id_table.with_columns(source, {KEY: cache.table})
