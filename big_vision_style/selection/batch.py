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
- `gather` is per-device inside `shard_map` (see its docstring for the bytes): since the
  indices are ascending, selected rank r goes to device r // m (m = b/n) and lives on device
  indices[r] // (B/n); for an i.i.d.-ordered super-batch the two differ by a few devices at
  most, so each device sends, for every static shift k in [-W, W] \ {0}, one bucket of m rows
  to device i + k (`ppermute`), and keeps the rows of shift 0. Per chip that moves 2 W m rows,
  O(b/n), whatever n. W is static (`gather_window`, about 4 standard deviations of the
  selection's count imbalance along the super-batch); when a selection needs a longer shift,
  which forces O(b) traffic on some device for any scheme (all b rows on one device, say),
  every device sees it in the replicated indices and a `lax.cond` takes the exact fallback,
  `psum_scatter`s of the [b, ...] selected batch (in chunks, to bound its memory). Those are
  all-reduces of the whole selected batch on TPU v4 / v5e / v5p (libtpu 0.0.42.1) and
  reduce-scatters on XLA CPU (as measured, see hlo_stats.py): on TPU 2 b (n-1)/n rows per chip,
  47.8 GiB at the JEST paper's b = 32768 f32 256 px images over 256 chips (an all-reduce of the
  24 GiB selected batch), which every step cost before; the common path there moves 0.56 GiB
  per chip (W = 3; results/bench/gather.md). `gather_fallback` says whether a step took
  it (log it as selection/gather_fallback). The super-batch is never all-gathered, and the
  result is the same, bit for bit, as `x[indices]` on one device. (A plain `x[indices]` under
  jit is partitioned by XLA into a masked local gather plus an all-reduce of the whole
  [b, ...] selected batch.)
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


# ----------------------------------------------------------------------------- gather

# `gather` sends shifts of up to this many standard deviations of the selection's count
# imbalance directly, and takes the exact fallback for longer ones (see gather_window).
WINDOW_SIGMAS = 4.0


def gather_window(super_batch: int, batch_size: int, num_devices: int) -> int:
  """W, the longest shift (in devices) that `gather` sends directly, from B, b and n (static).

  For a uniformly random b-subset of B (which is what any selection whose scores do not depend
  on position gives, the super-batch being i.i.d.-ordered), the number of selected examples
  among the first t exceeds its mean b t / B by a hypergeometric bridge of standard deviation
  at most sigma = sqrt(b (1 - b/B) B / (B - 1)) / 2 (at t = B/2). Selected rank r travels
  |r // m - indices[r] // (B/n)| devices (m = b/n), fewer than W as long as that excess stays
  under W m rows. W = ceil(4 sigma / m) leaves a fallback probability per step of at most about
  2 exp(-2 (W m / 2 sigma)^2) <= 7e-4 (a Brownian-bridge maximum; 3e-5 at the JEST paper's
  b = 32768, B = 163840, n = 256, where W = 3). Capped at n - 1, which covers every shift.
  """
  n = num_devices
  if n <= 1:
    return 0
  p = batch_size / super_batch
  sigma = 0.5 * math.sqrt(batch_size * (1.0 - p) * super_batch / max(super_batch - 1, 1))
  return int(min(n - 1, max(0, math.ceil(WINDOW_SIGMAS * sigma / (batch_size / n) - 1e-9))))


def _window(window, super_batch, batch_size, n) -> int:
  if window is None:
    return gather_window(super_batch, batch_size, n)
  if not (isinstance(window, numbers.Integral) and window >= 0):
    raise ValueError(f'gather: window must be a non-negative integer (devices); got {window!r}.')
  return int(min(window, max(n - 1, 0)))


def _max_shift(indices, super_batch: int, n: int):
  """max over ranks r of |r // m - indices[r] // (B/n)|: the farthest any selected row goes."""
  num_selected = jnp.shape(indices)[0]
  source = jnp.asarray(indices).astype(jnp.int32) // (super_batch // n)
  destination = jnp.arange(num_selected, dtype=jnp.int32) // (num_selected // n)
  return jnp.max(jnp.abs(destination - source))


def _check(batch, indices, mesh):
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError('gather: the batch has no arrays.')
  total = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else None
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if sizes != {total}:
    raise ValueError(f'gather: every batch array needs the same leading super-batch axis; got '
                     f'leading sizes {sorted(sizes, key=str)}.')
  if jnp.ndim(indices) != 1:
    raise ValueError(f'gather: indices must be a vector [b]; got shape {jnp.shape(indices)}.')
  num_selected = jnp.shape(indices)[0]
  n = mesh.shape['data']
  check_divisible(total, num_selected, n)
  return total, num_selected, n


def gather_fallback(indices, super_batch: int, mesh, *, window: int | None = None):
  """Whether `gather(batch, indices, mesh, window=window)` takes its fallback: a bool scalar
  (jax), the same predicate the gather evaluates. Log it as selection/gather_fallback; it is
  always False when the window covers the mesh (W >= n - 1, e.g. on one device)."""
  n = mesh.shape['data']
  num_selected = jnp.shape(indices)[0]
  check_divisible(super_batch, num_selected, n)
  w = _window(window, super_batch, num_selected, n)
  if w >= n - 1:
    return jnp.zeros((), jnp.bool_)
  return _max_shift(indices, super_batch, n) > w


def gather(batch, indices, mesh, *, window: int | None = None, return_fallback: bool = False):
  """`{k: batch[k][indices]}`, the selected examples, sharded over 'data' ([b, ...] leaves).

  `batch` is a dict (any pytree) of global arrays whose leading axis is the super-batch B,
  sharded over 'data' (n devices, B/n consecutive rows each); `indices` int [b] in [0, B),
  replicated, ascending for speed (as `select_indices` returns them; any order is exact). The
  result is sharded over 'data': device j holds rows [j m, (j+1) m) of the selected list,
  m = b/n. Values are those of `x[indices]` bit for bit (-0.0 and NaN payloads too), dtypes
  kept (bool too), on any n. Works eagerly or inside jit.

  What moves, per chip, with W = `window` (default `gather_window(B, b, n)`, at most n - 1):
  - Common path (every selected row within W devices of its destination, which `gather_fallback`
    tells): device i takes, for each k in [-W, W], the rows of device i+k's block that it holds
    into a bucket of m rows (a local gather, garbage in the rows it does not hold) and sends
    it to device i + k with one `ppermute` per k != 0 (the leaves of one dtype packed into one
    bucket); the receiver picks each row from the bucket of its source (a gather, so no
    arithmetic touches the values). Per chip: 2 W m rows
    sent and received (the k = 0 bucket stays) of every leaf, e.g. 6 x 128 rows at the JEST
    paper's b = 32768 over 256 chips (W = 3), against 2 b (n-1)/n rows for an all-reduce.
  - Fallback (some row farther than W; taken by `lax.cond` on a predicate of the replicated
    indices, so every device takes the same branch): the gather as it was, a buffer per leaf
    holding the local selected rows (zeros elsewhere; floats as same-width unsigned ints, bools
    as uint8, so the sum of one value and zeros is that value's bits), `psum_scatter`ed; done in
    a fori_loop over chunks of each destination's block, so that the buffer, [n chunk, ...],
    is no larger than the common path's 2W+1 buckets (384 MiB per chip at paper scale rather
    than 24 GiB for the whole [b, ...] buffer: the compiled gather needs 1.6 GiB per chip,
    against 25 GiB before). All chunks together move what one psum_scatter of [b, ...] would:
    an all-reduce, 2 b (n-1)/n rows per chip, on TPU v4 / v5e / v5p (libtpu 0.0.42.1; measured,
    see hlo_stats.py), a reduce-scatter, b (n-1)/n rows, on XLA CPU. No scheme can beat O(b)
    on a selection that puts all b rows on one device; for i.i.d. selections the fallback is
    rare (0 in 1000 at paper scale; see gather_window).
  With W >= n - 1 (small meshes, one device) the window covers every shift: no cond, no
  fallback. The super-batch itself is never all-gathered.

  With `return_fallback=True` returns `(batch, fallback)`, fallback a replicated bool scalar.
  """
  out, fallback = _gather(batch, indices, mesh, window=window, path='auto')
  return (out, fallback) if return_fallback else out


def _gather(batch, indices, mesh, *, window=None, path='auto'):
  """gather's body. path: 'auto' (what `gather` does), 'windowed' (the common path alone,
  exact only when the fallback is not needed), 'fallback' (the fallback alone) or 'old' (the
  gather as it was: one psum_scatter of the whole [b, ...] buffer); the last three are for
  tests and benchmarks of each path's HLO."""
  total, num_selected, n = _check(batch, indices, mesh)
  w = _window(window, total, num_selected, n)
  local_total = total // n
  chunk = _fallback_chunk(num_selected // n, n, w)

  def per_device(local_batch, idx):
    idx = idx.astype(jnp.int32)
    if path in ('fallback', 'old'):
      rows = num_selected // n if path == 'old' else chunk
      return _psum_scatter_rows(local_batch, idx, local_total, n, rows), jnp.ones((), jnp.bool_)
    if path == 'windowed' or w >= n - 1:
      return _windowed_rows(local_batch, idx, local_total, n, w), jnp.zeros((), jnp.bool_)
    fallback = _max_shift(idx, total, n) > w
    out = jax.lax.cond(fallback,
                       lambda lb: _psum_scatter_rows(lb, idx, local_total, n, chunk),
                       lambda lb: _windowed_rows(lb, idx, local_total, n, w),
                       local_batch)
    return out, fallback

  if path not in ('auto', 'windowed', 'fallback', 'old'):
    raise ValueError(f'Unknown gather path {path!r}.')
  fn = shard_map(per_device, mesh=mesh, in_specs=(P('data'), P()),
                 out_specs=(P('data'), P()))
  return fn(batch, jnp.asarray(indices))


def _windowed_rows(local_batch, idx, local_total: int, n: int, window: int):
  """The common path, per device: one bucket of m rows per shift k in [-W, W] (module doc).

  The leaves of one dtype travel together, as one [m, F] bucket per shift (their rows
  flattened and concatenated): one take per leaf, then per dtype one ppermute per shift and one
  gather that picks each row's bucket, rather than a take, a ppermute and a select per leaf and
  shift. The forward-reuse residuals are about a hundred leaves: gathered one by one on 8
  devices they made a step of some 5,500 take, permute, compare and select ops whose
  optimisation alone took XLA 14 s (tests/test_image_text_train.py's ActiveCLIP actor). The
  bytes moved are the same."""
  with jax.named_scope('gather_windowed'):
    m = jnp.shape(idx)[0] // n
    me = jax.lax.axis_index('data')
    leaves, treedef = jax.tree.flatten(local_batch)
    shifts = tuple(range(-window, window + 1))

    def block(j):  # The super-batch positions of destination j's m rows.
      return jax.lax.dynamic_slice_in_dim(idx, jnp.clip(j, 0, n - 1) * m, m)

    # Rows of destination me + k, for every k at once ([2W+1 m] positions in this device's
    # block); those another device holds are garbage (the receiver does not read them), which
    # spares a mask here.
    local = jnp.concatenate([jnp.clip(block(me + k) - me * local_total, 0, local_total - 1)
                             for k in shifts])
    # Row t of this device comes from device source[t], in the bucket of shift me - source[t].
    shift = me - block(me) // local_total
    groups = {}
    for i, x in enumerate(leaves):
      groups.setdefault(jnp.dtype(x.dtype), []).append(i)
    out = [None] * len(leaves)
    for dtype, members in groups.items():
      widths = [math.prod(jnp.shape(leaves[i])[1:]) for i in members]
      buckets = jnp.concatenate(
          [jnp.take(leaves[i], local, axis=0, mode='clip').reshape(len(shifts), m, width)
           for i, width in zip(members, widths)], axis=2)  # [2W+1, m, F]
      received = []
      for j, k in enumerate(shifts):
        bucket = buckets[j]
        if k:
          bucket = jax.lax.ppermute(bucket, 'data', [(s, s + k) for s in range(n)
                                                     if 0 <= s + k < n])
        received.append(bucket)
      # Row t from the bucket of its shift: a gather, so no arithmetic touches the values (and
      # no select either: XLA fuses a select over [m, F] into every leaf's slice below, and its
      # cost analysis then counts the whole select in each, inflating the reported FLOPs).
      pick = jnp.clip(shift + window, 0, len(shifts) - 1)
      rows = jnp.stack(received)[pick, jnp.arange(m)]  # [m, F]
      start = 0
      for i, width in zip(members, widths):
        out[i] = rows[:, start:start + width].reshape((m,) + jnp.shape(leaves[i])[1:])
        start += width
    return jax.tree.unflatten(treedef, out)


_UINT = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


def _as_summable(x):
  """x as an array whose sum with zeros is x bit for bit, and the way back: floats as unsigned
  ints of their width (0.0 + -0.0 would be 0.0), bools as uint8 (collectives do not sum bools)."""
  dtype = x.dtype
  if dtype == jnp.bool_:
    return x.astype(jnp.uint8), lambda y: y != 0
  if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits in _UINT:
    uint = _UINT[jnp.finfo(dtype).bits]
    return (jax.lax.bitcast_convert_type(x, uint),
            lambda y: jax.lax.bitcast_convert_type(y, dtype))
  return x, lambda y: y  # Integers sum exactly; complex and sub-byte floats are summed as is.


def _fallback_chunk(m: int, n: int, window: int) -> int:
  """Rows per destination in each psum_scatter of the fallback: the largest divisor of m whose
  buffer, n of them, is no larger than the common path's 2W+1 buckets of m rows."""
  target = max((2 * window + 1) * m // n, 1)
  return max(d for d in range(1, m + 1) if m % d == 0 and d <= target)


def _psum_scatter_rows(local_batch, idx, local_total: int, n: int, chunk: int):
  """The fallback, per device: in m / chunk steps (a fori_loop when more than one), rows
  [c, c + chunk) of every destination's block: the local selected ones in an [n chunk, ...]
  buffer (zeros elsewhere), reduce-scattered. Each row has exactly one device contributing
  non-zero bits."""
  with jax.named_scope('gather_fallback'):
    m = jnp.shape(idx)[0] // n
    me = jax.lax.axis_index('data')
    by_destination = idx.reshape(n, m)
    leaves, treedef = jax.tree.flatten(local_batch)
    summable = [_as_summable(x) for x in leaves]

    def step(c, outs):
      # Destination-major: psum_scatter hands device j the chunk of its own block.
      rows = jax.lax.dynamic_slice_in_dim(by_destination, c * chunk, chunk, axis=1).reshape(-1)
      local = rows - me * local_total
      mine = (local >= 0) & (local < local_total)
      local = jnp.clip(local, 0, local_total - 1)
      new = []
      for (x, back), out in zip(summable, outs):
        part = jnp.take(x, local, axis=0, mode='clip')
        part = jnp.where(mine.reshape((-1,) + (1,) * (x.ndim - 1)), part,
                         jnp.zeros((), x.dtype))
        part = back(jax.lax.psum_scatter(part, 'data', scatter_dimension=0, tiled=True))
        new.append(part if out is None else
                   jax.lax.dynamic_update_slice_in_dim(out, part, c * chunk, axis=0))
      return new

    if chunk == m:
      outs = step(0, [None] * len(leaves))
    else:
      init = [jnp.zeros((m,) + jnp.shape(x)[1:], x.dtype) for x in leaves]
      # Typed as varying over 'data', as the loop's outputs are (psum_scatter results).
      init = [jax.lax.pcast(x, 'data', to='varying') for x in init]
      outs = jax.lax.fori_loop(0, m // chunk, step, init)
    return jax.tree.unflatten(treedef, outs)
