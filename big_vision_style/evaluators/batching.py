"""Global eval batches of a split, kept on device between evaluations when the split is small.

With several processes the batches span devices of other processes, and so do the outputs of
a jitted function of them: evaluators compile their per-batch functions with
`out_shardings=replicated(mesh)`, so that the results (sums, or whole embedding batches,
gathered in the split's order) are on every device and every process can read them.
"""
from __future__ import annotations

from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from big_vision_style import input_pipeline


def replicated(mesh) -> NamedSharding:
  """Fully replicated over `mesh`: readable (`jax.device_get`) by every process."""
  return NamedSharding(mesh, P())


class EvalBatches:
  """Iterates a split once per evaluation as global, sharded, padded batches (with `mask`).

  `cache` keeps the preprocessed batches on device (by default only for splits of at most
  20k examples): later evaluations then only cost the forward passes.
  """

  def __init__(self, source, *, preprocess_fn, mesh, batch_size: int, cache: bool | None = None):
    self.source, self.preprocess_fn = source, preprocess_fn
    self.mesh, self.batch_size = mesh, batch_size
    self.cache = len(source) <= 20_000 if cache is None else cache
    self._batches = None

  def __iter__(self):
    if self._batches is not None:
      return iter(self._batches)
    batches = (input_pipeline.to_global(b, self.mesh) for b in input_pipeline.make_eval_batches(
        self.source, global_batch_size=self.batch_size, preprocess_fn=self.preprocess_fn))
    if self.cache:
      self._batches = list(batches)
      return iter(self._batches)
    return batches

