"""The mechanics every selecting method shares: super-batch sizes, choosing b of B, gathering.

Each step draws a super-batch of B examples, scores every example, keeps b of them and trains on
those. Everything here is a pure jax function meant to run inside the trainer's jitted update:

  B = super_batch_size(b, config.selection.filter_ratio)    # Python, once, at config time.
  scores = policies.score(policy, actor_loss=..., reference_loss=...)  # [B]
  indices = select_indices(scores, b, rng, method='sample')          # [b] int32, ascending
  batch = gather(super_batch, indices, mesh)                         # [b, ...] over 'data'

What is global and what is per-device (mesh: one axis, 'data'; see sharding.py):
- The super-batch and the per-example losses are *global* jax Arrays of leading size B, sharded
  over 'data' (each device holds B/n consecutive examples). `score` is elementwise, so every
  device scores its own examples and nothing moves.
- `select_indices` works on the *global* [B] score vector: the Gumbel noise is a function of
  (rng, global position) only (threefry is partitionable, so no device sees different noise),
  and `top_k` of a sharded operand inside jit is partitioned by GSPMD into a global top-k (XLA
  moves the B scores, a few KB, not the examples). There is no per-device selection: the b
  examples are the best / sampled b of the whole super-batch, wherever they live, and the result
  is bit-identical on 1 and on n devices (tests/test_selection.py checks both).
- The [b] indices are tiny and treated as replicated.
- `gather` is per-device inside `shard_map`: a device reads only its local B/n examples, writes
  those that were selected into a [b, ...] buffer (zeros elsewhere), and one reduce-scatter
  (`psum_scatter`) hands device i rows [i*b/n, (i+1)*b/n) of the selected batch. Each row has
  exactly one non-zero contributor, so the sum is exact. The whole super-batch is never
  all-gathered: the collective's volume is that of the learner batch b, not of B. (A plain
  `x[indices]` under jit is partitioned by this XLA into a masked local gather plus an
  all-reduce of the whole [b, ...] selected batch, so every device holds all b examples before
  slicing; the reduce-scatter leaves each device only its b/n.)
"""
from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

if hasattr(jax, 'shard_map'):  # jax >= 0.6.
  shard_map = jax.shard_map
else:  # Older jax; takes the same keyword arguments.
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental.shard_map import shard_map as shard_map

METHODS = ('sample', 'topk')


def super_batch_size(batch_size: int, filter_ratio: float) -> int:
  """B = b / (1 - f): the super-batch that keeps b examples after discarding a fraction f."""
  if not (isinstance(batch_size, numbers.Integral) and batch_size > 0):
    raise ValueError(f'The learner batch size must be a positive integer; got {batch_size!r}.')
  if not 0.0 <= filter_ratio < 1.0:
    raise ValueError(f'config.selection.filter_ratio={filter_ratio} must be in [0, 1): it is the '
                     'fraction of every super-batch that is discarded (0.5 keeps half).')
  exact = batch_size / (1.0 - filter_ratio)
  size = round(exact)
  if abs(size - exact) > 1e-6 * exact:
    lo, hi = math.floor(exact), math.ceil(exact)
    raise ValueError(
        f'config.selection.filter_ratio={filter_ratio} with batch size {batch_size} gives a '
        f'super-batch of {exact:.6g} examples, which is not an integer. Use f = 1 - b/B for an '
        f'integer B, e.g. f={1 - batch_size / lo:.6g} (B={lo}) or f={1 - batch_size / hi:.6g} '
        f'(B={hi}).')
  return int(size)


def check_divisible(super_batch: int, batch_size: int, num_devices: int):
  """`gather` needs both the super-batch B and the selected batch b split evenly over devices."""
  if super_batch % num_devices:
    raise ValueError(f'The super-batch of {super_batch} is not divisible by the {num_devices} '
                     'devices of the data axis; choose config.input.batch_size and '
                     'config.selection.filter_ratio so that both b and B = b / (1 - f) are '
                     f'multiples of {num_devices}.')
  if batch_size % num_devices:
    raise ValueError(f'The selected batch of {batch_size} is not divisible by the {num_devices} '
                     f'devices of the data axis; use a multiple of {num_devices}.')


def select_indices(scores, num_selected: int, rng, *, method: str = 'sample',
                   temperature: float = 1.0):
  """The `num_selected` chosen positions of the global super-batch: int32 [b], ascending.

  'sample': b draws without replacement with probabilities softmax(scores / temperature),
    exactly, by Gumbel-top-k: the top b of scores / temperature + Gumbel noise (the first
    draw is the Gumbel-max trick; the rest follow because the remaining Gumbels stay Gumbel).
  'topk': the b highest scores, deterministic (`rng` and `temperature` unused). Ties go to the
    lower position; with the 'uniform' policy that is the first b of an i.i.d. super-batch,
    itself a uniform subset.

  `scores` may be a global Array sharded over 'data': inside jit, `top_k` over it is a global
  top-k under GSPMD, so the selection is the same whatever the number of devices. The set is
  returned sorted: the order inside the learner batch does not matter, and ascending positions
  send each selected example to (or near) the device already holding it.
  """
  if method not in METHODS:
    raise ValueError(f'Unknown selection method {method!r} (config.selection.method); expected '
                     f'one of {METHODS}.')
  if isinstance(temperature, numbers.Real) and not temperature > 0:
    raise ValueError(f'config.selection.temperature={temperature} must be > 0.')
  if jnp.ndim(scores) != 1:
    raise ValueError(f'scores must be a vector [B]; got shape {jnp.shape(scores)}.')
  total = jnp.shape(scores)[0]
  if not (isinstance(num_selected, numbers.Integral) and 0 < num_selected <= total):
    raise ValueError(f'Cannot select num_selected={num_selected!r} of a super-batch of {total}: '
                     f'it must be an integer in [1, {total}].')
  # float32: bf16 scores would tie often, and ties would bias the top-k toward low positions.
  logits = jax.lax.stop_gradient(jnp.asarray(scores, jnp.float32))
  if method == 'sample':
    logits = logits / temperature + jax.random.gumbel(rng, logits.shape, jnp.float32)
  _, indices = jax.lax.top_k(logits, num_selected)
  return jnp.sort(indices.astype(jnp.int32))


def gather(batch, indices, mesh):
  """`{k: batch[k][indices]}`, the selected examples, sharded over 'data' ([b, ...] leaves).

  `batch` is a dict (any pytree) of global arrays whose leading axis is the super-batch B,
  sharded over 'data'; `indices` int [b], replicated (e.g. from `select_indices`). Only the
  selected examples cross devices (one reduce-scatter of a [b, ...] buffer per leaf); the
  super-batch is never all-gathered. Works eagerly or inside jit; dtypes are kept (bool too).
  """
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError('gather: the batch has no arrays.')
  total = jnp.shape(leaves[0])[0]
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if sizes != {total}:
    raise ValueError(f'gather: every batch array needs the same leading super-batch axis; got '
                     f'leading sizes {sorted(sizes, key=str)}.')
  if jnp.ndim(indices) != 1:
    raise ValueError(f'gather: indices must be a vector [b]; got shape {jnp.shape(indices)}.')
  num_selected = jnp.shape(indices)[0]
  n = mesh.shape['data']
  check_divisible(total, num_selected, n)
  local_total = total // n

  def local_gather(local_batch, idx):
    # Global positions [start, start + B/n) live on this device.
    start = jax.lax.axis_index('data') * local_total
    local = idx.astype(jnp.int32) - start
    mine = (local >= 0) & (local < local_total)
    local = jnp.clip(local, 0, local_total - 1)

    def one(x):
      dtype = x.dtype
      if dtype == jnp.bool_:  # Collectives do not sum bools; one contributor per row, so exact.
        x = x.astype(jnp.int32)
      rows = jnp.take(x, local, axis=0)
      rows = jnp.where(mine.reshape((-1,) + (1,) * (x.ndim - 1)), rows, jnp.zeros((), x.dtype))
      # Every row has exactly one device contributing a non-zero; summing zeros is exact (up to
      # the sign of -0.0). Device i receives rows [i*b/n, (i+1)*b/n).
      out = jax.lax.psum_scatter(rows, 'data', scatter_dimension=0, tiled=True)
      return out.astype(dtype)

    return jax.tree.map(one, local_batch)

  fn = shard_map(local_gather, mesh=mesh, in_specs=(P('data'), P()), out_specs=P('data'))
  return fn(batch, jnp.asarray(indices))
