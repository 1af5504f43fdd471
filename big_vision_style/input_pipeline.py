"""Grain input pipelines that turn a data source into global, sharded jax batches.

Train: source -> seeded global shuffle (reshuffled every epoch) -> repeat -> per-example
preprocess/augment -> this process's rows -> batch -> threaded prefetch. The stream is defined
over *global* positions: global batch k is positions [k*G, (k+1)*G) of the shuffled stream,
whatever the number of processes, and augmentation draws its randomness from the example's
global position. Process p of P reads the contiguous rows [p*L, (p+1)*L) of every global batch
(L = G / P), which are exactly the rows `jax.make_array_from_process_local_data` places on its
devices (`to_global` checks that), so P processes assemble, bit for bit, the global batches of
one process. The batch may be a super-batch (larger than what the learner trains on);
selection then happens on device.

Eval: global batch i is the split's rows [i*G, (i+1)*G) (the last one padded, with a `mask`);
process p feeds its contiguous share of each, so gathered outputs come in the split's order.

Data budget (ReLA): with `data_ratio` r < 1 each epoch is a fresh seeded random subset of
round(r * n) examples instead of the whole split (`EpochSubsets`).
"""
from __future__ import annotations

import functools
import sys

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """(process_index, process_count), defaulting to jax's; tests pass them to simulate pods."""
  count = jax.process_count() if process_count is None else int(process_count)
  index = jax.process_index() if process_index is None else int(process_index)
  if not 0 <= index < count:
    raise ValueError(f'process_index={index} must be in [0, {count}).')
  return index, count


def local_batch_size(global_batch_size: int, process_count: int | None = None) -> int:
  n = jax.process_count() if process_count is None else process_count
  if global_batch_size % n:
    raise ValueError(f'Global batch size {global_batch_size} is not divisible by the number of '
                     f'processes ({n}); choose a multiple of {n}.')
  return global_batch_size // n


def epoch_size(num_examples: int, data_ratio: float = 1.0) -> int:
  """Examples per epoch when every epoch trains on a random `data_ratio` of the split."""
  if not 0.0 < data_ratio <= 1.0:
    raise ValueError(f'config.input.data_ratio={data_ratio} must be in (0, 1]: the fraction of '
                     'the training split each epoch draws (1 trains on all of it).')
  return max(int(round(data_ratio * num_examples)), 1)


class EpochSubsets:
  """The infinite training stream of a data budget r < 1, as a random-access source.

  Position i belongs to epoch e = i // m (m = round(r * n)) and reads the (i % m)-th entry of a
  permutation of the whole split seeded by (seed, e): no repeats within an epoch, a fresh
  subset every epoch, and a pure function of (seed, i), so a restored grain iterator state
  continues exactly where it stopped.
  """

  def __init__(self, source, data_ratio: float, seed: int):
    self.source, self.seed = source, seed
    self.num_examples = len(source)
    self.epoch_size = epoch_size(self.num_examples, data_ratio)

  def __len__(self):
    return sys.maxsize  # Infinite, like `repeat(None)`.

  @functools.lru_cache(maxsize=2)  # Threads read the same epoch: permute once.
  def indices(self, epoch: int) -> np.ndarray:
    """Source indices of epoch `epoch`, in the order they are read."""
    order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
    return order[:self.epoch_size]

  def __getitem__(self, position: int):
    epoch, offset = divmod(int(position), self.epoch_size)
    return self.source[int(self.indices(epoch)[offset])]


class ProcessRows(grain.MapDataset):
  """This process's rows of each global batch of a stream indexed by global position.

  Local position j is row r = j % L of global batch k = j // L and reads global position
  k*G + p*L + r of `parent` (G the global batch, L = G / P the local one). Batching the result
  by L gives process p the contiguous rows [p*L, (p+1)*L) of every global batch; with one
  process it is the identity. Transformations applied to `parent` (the random map) see global
  positions, so their results do not depend on the number of processes.
  """

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.MapDataset, *, global_batch_size: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    self._global = global_batch_size
    self._local = local_batch_size(global_batch_size, process_count)
    self._offset = process_index * self._local
    self._length = len(parent) // global_batch_size * self._local  # Whole global batches.

  def __len__(self) -> int:
    return self._length

  def global_position(self, index: int) -> int:
    batch, row = divmod(int(index), self._local)
    return batch * self._global + self._offset + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.global_position(index)]

  def _getitems(self, indices):
    positions = [self.global_position(i) for i in indices]
    return self._parent._getitems(positions)  # pylint: disable=protected-access

  def __str__(self) -> str:
    return (f'ProcessRows(global_batch_size={self._global}, offset={self._offset}, '
            f'local_batch_size={self._local})')


def make_train_iterator(source, *, global_batch_size: int, seed: int, preprocess_fn,
                        num_threads: int = 2, prefetch: int = 4, data_ratio: float = 1.0,
                        process_index: int | None = None, process_count: int | None = None):
  """A checkpointable grain iterator (`get_state` / `set_state`) of host-local numpy batches:
  this process's rows of each global batch (see the module docstring).

  `process_index` / `process_count` default to jax's; tests pass them to build the stream of
  process p of P in one process.
  """
  p, n = _process(process_index, process_count)
  local_batch_size(global_batch_size, n)  # Raises if G is not a multiple of P.
  if data_ratio == 1.0 and reads_batches(source, preprocess_fn):
    return _batched_train_iterator(source, global_batch_size=global_batch_size, seed=seed,
                                   preprocess_fn=preprocess_fn, num_threads=num_threads,
                                   prefetch=prefetch, process_index=p, process_count=n)
  if data_ratio == 1.0:
    ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  else:
    ds = grain.MapDataset.source(EpochSubsets(source, data_ratio, seed)).seed(seed)
  # An identity slice, kept where this process's slice used to be: grain derives the random
  # map's default seed from its depth below `seed()`, so removing it would change every
  # augmentation of committed runs (tests pin the single-process stream).
  ds = ds[0::1]
  ds = ds.random_map(preprocess_fn)  # Seeded per element by its *global* position.
  ds = ProcessRows(ds, global_batch_size=global_batch_size, process_index=p, process_count=n)
  ds = ds.batch(local_batch_size(global_batch_size, n), drop_remainder=True)
  return iter(ds.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))


def reads_batches(source, preprocess_fn) -> bool:
  """Whether the train stream can read whole batches: the source stacks records itself
  (`get_batch`) and preprocessing is deterministic (`preprocess_fn.batched`)."""
  return (callable(getattr(source, 'get_batch', None))
          and callable(getattr(preprocess_fn, 'batched', None)))


def _batched_train_iterator(source, *, global_batch_size, seed, preprocess_fn, num_threads,
                            prefetch, process_index, process_count):
  """The stream of `make_train_iterator`, batch for batch the same numbers, read a batch at a
  time: per-record Python costs about 90 us, 0.1 s for a JEST super-batch of 1280 on a core
  the model needs too. grain shuffles the positions exactly as it would shuffle the records
  (same seed, same tree), so the order does not depend on which path reads them."""
  ds = grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat(None)
  ds = ProcessRows(ds, global_batch_size=global_batch_size, process_index=process_index,
                   process_count=process_count)
  ds = ds.batch(local_batch_size(global_batch_size, process_count), drop_remainder=True)
  read, batched = source.get_batch, preprocess_fn.batched
  ds = ds.map(lambda indices: batched(read(indices)))
  return iter(ds.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))


def make_eval_batches(source, *, global_batch_size: int, preprocess_fn,
                      process_index: int | None = None, process_count: int | None = None):
  """Yields this process's share of each global batch of the split, padded with a `mask`.

  Global batch i is the split's rows [i*G, (i+1)*G); process p holds its contiguous rows
  [i*G + p*L, i*G + (p+1)*L) (L = G / P), padded to L. Every process runs the same number of
  batches, and the valid rows of the gathered global batches are the split in order.
  """
  p, n = _process(process_index, process_count)
  ds = grain.MapDataset.source(source).map(preprocess_fn)
  local_bs = local_batch_size(global_batch_size, n)
  template = ds[0]
  for i in range(-(-len(source) // global_batch_size)):
    start = i * global_batch_size + p * local_bs
    rows = [ds[j] for j in range(start, min(start + local_bs, len(source)))]
    yield pad_batch(rows, local_bs, template=template)


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


@functools.lru_cache(maxsize=32)
def _check_process_rows(sharding, global_rows: int):
  """That this process's devices hold rows [p*L, (p+1)*L) of the global batch, the rows the
  pipelines feed (true of `sharding.make_mesh` on CPU and GPU; a mesh whose data axis
  interleaves processes' devices would need the pipelines to read other rows)."""
  if jax.process_count() == 1:
    return
  local = global_rows // jax.process_count()
  held = set()
  for index in sharding.addressable_devices_indices_map((global_rows,)).values():
    held.update(range(*index[0].indices(global_rows)))
  want = set(range(jax.process_index() * local, (jax.process_index() + 1) * local))
  if held != want:
    rows = sorted(held)
    rows = str(rows) if len(rows) <= 8 else f'{str(rows[:8])[:-1]}, ...]'
    raise ValueError(
        f'Process {jax.process_index()} feeds rows [{min(want)}, {max(want) + 1}) of each '
        f'global batch of {global_rows}, but its devices hold rows {rows}: the mesh\'s data '
        "axis must list each process's devices contiguously, in process order.")


def to_global(batch, mesh):
  """Host-local numpy batch -> global jax Arrays sharded over the mesh's `data` axis."""
  n = mesh.shape['data']
  first = next(iter(batch.values()))
  if (len(first) * jax.process_count()) % n:
    raise ValueError(f'Global batch of {len(first) * jax.process_count()} examples is not '
                     f'divisible by the {n} devices of the data axis; choose a batch size that '
                     f'is a multiple of {n}.')
  sharding = data_sharding(mesh)
  _check_process_rows(sharding, len(first) * jax.process_count())
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
