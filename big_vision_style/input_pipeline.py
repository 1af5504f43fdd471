"""Grain input pipelines that turn a data source into global, sharded jax batches.

Train: source -> seeded global shuffle (reshuffled every epoch) -> repeat -> this process's
slice -> per-example preprocess/augment -> batch -> threaded prefetch. The slice is taken
*after* the global shuffle, so global batch k holds the same examples whatever the number of
processes. The batch may be a super-batch (larger than what the learner trains on); selection
then happens on device.
"""
from __future__ import annotations

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def local_batch_size(global_batch_size: int) -> int:
  n = jax.process_count()
  if global_batch_size % n:
    raise ValueError(f'Global batch size {global_batch_size} is not divisible by the number of '
                     f'processes ({n}); choose a multiple of {n}.')
  return global_batch_size // n


def make_train_iterator(source, *, global_batch_size: int, seed: int, preprocess_fn,
                        num_threads: int = 2, prefetch: int = 4):
  """A checkpointable grain iterator (`get_state` / `set_state`) of host-local numpy batches."""
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  ds = ds[jax.process_index()::jax.process_count()]
  ds = ds.random_map(preprocess_fn)
  ds = ds.batch(local_batch_size(global_batch_size), drop_remainder=True)
  return iter(ds.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))


def make_eval_batches(source, *, global_batch_size: int, preprocess_fn):
  """Yields each host's share of the split once, padded to full batches with a `mask`."""
  ds = grain.MapDataset.source(source)[jax.process_index()::jax.process_count()]
  ds = ds.map(preprocess_fn)
  local_bs = local_batch_size(global_batch_size)
  # Every host must run the same number of steps, so all pad to the longest host's count.
  steps = -(-len(source) // global_batch_size)
  for i in range(steps):
    rows = [ds[j] for j in range(i * local_bs, min((i + 1) * local_bs, len(ds)))]
    yield pad_batch(rows, local_bs, template=ds[0])


def pad_batch(rows, size, template):
  mask = np.zeros([size], bool)
  mask[:len(rows)] = True
  out = {}
  for key, value in template.items():
    value = np.asarray(value)
    arr = np.zeros((size,) + value.shape, value.dtype)
    for i, row in enumerate(rows):
      arr[i] = row[key]
    out[key] = arr
  out['mask'] = mask
  return out


def data_sharding(mesh):
  return NamedSharding(mesh, P('data'))


def to_global(batch, mesh):
  """Host-local numpy batch -> global jax Arrays sharded over the mesh's `data` axis."""
  n = mesh.shape['data']
  first = next(iter(batch.values()))
  if (len(first) * jax.process_count()) % n:
    raise ValueError(f'Global batch of {len(first) * jax.process_count()} examples is not '
                     f'divisible by the {n} devices of the data axis; choose a batch size that '
                     f'is a multiple of {n}.')
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
