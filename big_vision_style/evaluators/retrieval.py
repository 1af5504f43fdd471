"""Image-to-text and text-to-image recall@1 of a two-tower model on a captioned split (the COCO
retrieval protocol, one caption per image).

  config.evals.retrieval = dict(type='retrieval', split='test', log_steps=500,
                                max_examples=5000)   # optional: the first N pairs

Every image is matched against every caption of the split and vice versa; recall@1 is the
fraction whose most similar candidate is its own pair. Captions that are exactly identical
(same tokens) cannot be told apart by any model, so retrieving any of them counts as correct.
`predict_fn(params, images, texts)` returns the model's `(zimg, ztxt, ...)`.
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from big_vision_style.datasets import base
from big_vision_style.evaluators import batching


def recall_at_1(image_embeddings, text_embeddings, groups=None, chunk: int = 2048):
  """(image-to-text, text-to-image) recall@1 of pairs (image i, text i).

  `groups[i]` labels pairs whose captions are interchangeable (identical); a retrieval is
  correct if it lands in the query's group. Similarities are computed `chunk` rows at a time,
  so memory stays O(chunk * N).
  """
  img = np.asarray(image_embeddings, np.float32)
  txt = np.asarray(text_embeddings, np.float32)
  if img.ndim != 2 or img.shape != txt.shape:
    raise ValueError(f'Expected image and text embeddings [N, d] of the same shape; got '
                     f'{img.shape} and {txt.shape}.')
  n = len(img)
  groups = np.arange(n) if groups is None else np.asarray(groups)
  i2t = np.empty(n, np.int64)
  t2i = np.empty(n, np.int64)
  for start in range(0, n, chunk):
    i2t[start:start + chunk] = np.argmax(img[start:start + chunk] @ txt.T, axis=1)
    t2i[start:start + chunk] = np.argmax(txt[start:start + chunk] @ img.T, axis=1)
  return float(np.mean(groups[i2t] == groups)), float(np.mean(groups[t2i] == groups))


class Evaluator:

  def __init__(self, predict_fn, *, source, preprocess_fn, mesh, batch_size: int = 1024,
               max_examples: int | None = None, cache_batches: bool | None = None):
    if max_examples:
      if not 0 < max_examples <= len(source):
        raise ValueError(f'max_examples={max_examples} must be in [1, {len(source)}] here.')
      source = base.Subset(source, np.arange(max_examples), name='retrieval split')
    self.batches = batching.EvalBatches(source, preprocess_fn=preprocess_fn, mesh=mesh,
                                        batch_size=batch_size, cache=cache_batches)

    # Gathered onto every device: each process reads the whole batch, in the split's order.
    @functools.partial(jax.jit, out_shardings=batching.replicated(mesh))
    def embed(params, batch):
      zimg, ztxt = predict_fn(params, batch['image'], batch['text'])[:2]
      return zimg, ztxt, batch['text'], batch['mask']

    self._embed = embed

  def run(self, params):
    parts = [jax.device_get(self._embed(params, batch)) for batch in self.batches]
    mask = np.concatenate([p[3] for p in parts])
    img, txt, tokens = (np.concatenate([p[k] for p in parts])[mask] for k in range(3))
    _, groups = np.unique(tokens, axis=0, return_inverse=True)
    i2t, t2i = recall_at_1(img, txt, groups.reshape(-1))
    yield 'i2t_recall_at_1', i2t
    yield 't2i_recall_at_1', t2i
