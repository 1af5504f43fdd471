"""Top-1 accuracy and mean cross-entropy of a classifier over a whole split."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import input_pipeline
from big_vision_style import losses
from big_vision_style.evaluators import batching


class Evaluator:

  def __init__(self, predict_fn, *, source, preprocess_fn, mesh, batch_size: int = 1024,
               cache_batches: bool | None = None):
    """`predict_fn(params, images) -> logits`; `source` is a data source (e.g. the test split).

    `cache_batches` keeps the preprocessed split on device between evaluations; by default only
    for small splits (Fashion-MNIST's test split is 31 MB as float32, ImageNet's would be 30 GB).
    """
    self.source, self.preprocess_fn = source, preprocess_fn
    self.cache = len(source) <= 20_000 if cache_batches is None else cache_batches
    self.mesh, self.batch_size = mesh, batch_size
    num_classes = source.num_classes

    # Replicated sums: every process reads them, also when the batch spans other processes.
    @functools.partial(jax.jit, out_shardings=batching.replicated(mesh))
    def eval_step(params, batch):
      logits = predict_fn(params, batch['image'])
      mask = batch['mask']
      correct = (jnp.argmax(logits, -1) == batch['label']) & mask
      loss = losses.softmax_xent(logits, batch['label'], num_classes=num_classes)
      return {'correct': correct.sum(), 'loss': jnp.where(mask, loss, 0).sum(),
              'count': mask.sum()}

    self._eval_step = eval_step
    self._batches = None

  def _global_batches(self):
    if self._batches is not None:
      return self._batches
    batches = (input_pipeline.to_global(b, self.mesh) for b in input_pipeline.make_eval_batches(
        self.source, global_batch_size=self.batch_size, preprocess_fn=self.preprocess_fn))
    if self.cache:
      # Decoded and preprocessed once; later evaluations only cost the forward passes.
      self._batches = list(batches)
      return self._batches
    return batches

  def run(self, params):
    totals = {'correct': 0, 'loss': 0.0, 'count': 0}
    for batch in self._global_batches():
      for k, v in self._eval_step(params, batch).items():
        totals[k] += np.asarray(jax.device_get(v))
    count = max(int(totals['count']), 1)
    yield 'accuracy', float(totals['correct']) / count
    yield 'loss', float(totals['loss']) / count
