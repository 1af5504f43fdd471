"""k-means (Lloyd) with examples sharded over the mesh's `data` axis: Divide and Contrast's
clustering of the base model's embeddings, written to run on a pod over millions of them.

  result = kmeans.kmeans(embeddings, k=10, mesh=mesh, seed=0)   # distance='cosine' (default)
  result.centres [K, D], result.assignments [N], result.inertia, result.iterations, result.flops

Distances. 'cosine' is spherical k-means: rows are L2-normalised, a point goes to the centre of
highest cosine, a centre is the normalised mean of its points, and the inertia is the sum of
1 - cos(point, its centre). 'euclidean' is the textbook algorithm (squared distances, centres
are means), the one scikit-learn's KMeans runs; the tests compare the two on it.

Initialisation: k-means++ (Arthur and Vassilvitskii, 2007), seeded, on the host: the first
centre uniformly at random, each next one with probability proportional to the point's distance
to its nearest chosen centre (1 - cos for 'cosine', i.e. half the squared distance on the
sphere; the squared distance for 'euclidean'). `init_sample` caps the points it looks at
(a seeded random subset), as scalable implementations do: it is O(N K D) host work.

One Lloyd iteration is one jitted program over the sharded points: each device assigns its
points to the (replicated) centres, and forms its partial sums (per-centre sum of points,
counts, inertia, and how many of its points changed cluster), packed into one vector that a
single `psum` over `data` reduces: one collective of K (D + 1) + 2 floats per iteration,
whatever N is. Assignments stay sharded on device between iterations; only the packed vector's
few numbers (for the convergence test) come to the host. Stopping follows scikit-learn: stop
when no assignment changed (strict convergence), or when the squared centre shift sums to at
most `tol` times the mean per-dimension variance of the points; then one more assignment pass
gives assignments and inertia for the final centres.

An empty cluster (no point nearest to its centre) is re-seeded with the point farthest from its
own centre (one per empty cluster, as scikit-learn relocates them), with a warning. K larger
than the number of points is an error.

Several processes: every process passes the same full `x` (as `score_cache.compute_outputs`
returns it on every host); each device reads only its own rows
(`jax.make_array_from_callback`), and everything that comes back to the host leaves its program
replicated, which every process can read.

FLOPs: XLA's cost analysis of the compiled iteration times the iterations run, plus the final
assignment pass (flops.compile_and_measure, as for every step of the trainer). k-means++ runs on
the host and is not counted (about N K D multiply-adds once, under one iteration's cost).
"""
from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from big_vision_style import flops
from big_vision_style.selection import batch as selection

DISTANCES = ('cosine', 'euclidean')


@dataclasses.dataclass
class KMeansResult:
  centres: np.ndarray  # [K, D] float32 (unit norm for 'cosine').
  assignments: np.ndarray  # [N] int32, in the order of the input rows.
  inertia: float  # Sum over points of the distance to their centre (see the module doc).
  iterations: int  # Lloyd iterations run (the final assignment pass not included).
  flops: float  # iteration FLOPs x iterations + the final assignment pass.
  reseeded: list[int] = dataclasses.field(default_factory=list)  # Clusters re-seeded, in order.
  counts: np.ndarray | None = None  # [K] points per cluster.


def _prepare(x, distance: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim != 2:
    raise ValueError(f'k-means needs points [N, D]; got shape {x.shape}.')
  if not np.all(np.isfinite(x)):
    raise ValueError('k-means got non-finite points (NaN or inf): the embeddings are broken; '
                     'check the model that produced them.')
  if distance == 'cosine':
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
      raise ValueError(f'{int((norms == 0).sum())} points are all zeros: their cosine to any '
                       "centre is undefined; use distance='euclidean' or drop them.")
    x = x / norms
  return x


def _distances(x, centres, distance: str) -> np.ndarray:
  """[N, K] on the host (k-means++): 1 - cos, or squared euclidean."""
  if distance == 'cosine':
    return np.maximum(1.0 - x @ centres.T, 0.0)
  return np.maximum((x ** 2).sum(1, keepdims=True) - 2 * x @ centres.T +
                    (centres ** 2).sum(1)[None], 0.0)


def kmeans_plus_plus(x, k: int, *, seed: int, distance: str = 'cosine',
                     init_sample: int | None = None) -> np.ndarray:
  """k-means++ initial centres [k, D] of the (already prepared) points `x`."""
  rng = np.random.default_rng(seed)
  if init_sample and len(x) > init_sample:
    x = x[np.sort(rng.choice(len(x), init_sample, replace=False))]
  centres = [x[rng.integers(len(x))]]
  nearest = _distances(x, centres[0][None], distance)[:, 0]
  for _ in range(1, k):
    total = nearest.sum()
    if total <= 0:  # Every point coincides with a centre: duplicates; any point will do.
      i = rng.integers(len(x))
    else:
      i = rng.choice(len(x), p=nearest / total)
    centres.append(x[i])
    nearest = np.minimum(nearest, _distances(x, x[i][None], distance)[:, 0])
  return np.stack(centres).astype(np.float32)


def _scores(x, centres, distance: str):
  """What a point maximises over centres: cos, or x.c - |c|^2 / 2 (= argmin |x - c|^2)."""
  s = x @ centres.T
  if distance == 'euclidean':
    s = s - 0.5 * jnp.sum(centres ** 2, axis=1)[None]
  return s


def _point_distance(x, best, distance: str):
  return 1.0 - best if distance == 'cosine' else jnp.sum(x ** 2, axis=1) - 2.0 * best


class _Programs:
  """The jitted iteration, final assignment and farthest-points programs on one mesh."""

  def __init__(self, mesh, k: int, distance: str):
    self.mesh, self.k, self.distance = mesh, k, distance
    self.replicated = NamedSharding(mesh, P())
    self.rows = NamedSharding(mesh, P('data'))
    shard_map = selection.shard_map

    def local_stats(x, mask, centres, previous):
      """Per device: assignments of its points, and its partial sums in one packed vector."""
      scores = _scores(x, centres, distance)
      labels = jnp.argmax(scores, axis=1).astype(jnp.int32)
      best = jnp.max(scores, axis=1)
      w = mask.astype(x.dtype)
      onehot = jax.nn.one_hot(labels, k, dtype=x.dtype) * w[:, None]
      packed = jnp.concatenate([
          (onehot.T @ x).reshape(-1), onehot.sum(0),
          jnp.sum(w * jnp.maximum(_point_distance(x, best, distance), 0.0))[None],
          jnp.sum(w * (labels != previous))[None]])
      return labels, jax.lax.psum(packed, 'data')  # The one reduction of the iteration.

    self._local = shard_map(local_stats, mesh=mesh,
                            in_specs=(P('data'), P('data'), P(), P('data')),
                            out_specs=(P('data'), P()))

    def unpack(packed, dim):
      sums = packed[:k * dim].reshape(k, dim)
      counts = packed[k * dim:k * dim + k]
      return sums, counts, packed[-2], packed[-1]

    def iteration(x, mask, centres, previous):
      labels, packed = self._local(x, mask, centres, previous)
      sums, counts, inertia, changed = unpack(packed, x.shape[1])
      means = sums / jnp.maximum(counts, 1.0)[:, None]
      if distance == 'cosine':
        means = means / jnp.maximum(jnp.linalg.norm(means, axis=1, keepdims=True), 1e-12)
      new = jnp.where((counts > 0)[:, None], means, centres)  # Empty: re-seeded on the host.
      shift = jnp.sum((new - centres) ** 2)
      return new, labels, {'counts': counts, 'inertia': inertia, 'changed': changed,
                           'shift': shift}

    self.iteration = jax.jit(iteration, out_shardings=(self.replicated, self.rows,
                                                       self.replicated))

    def assign(x, mask, centres):
      labels, packed = self._local(x, mask, centres, jnp.zeros(x.shape[0], jnp.int32))
      _, counts, inertia, _ = unpack(packed, x.shape[1])
      return labels, counts, inertia

    # Assignments leave replicated: every process reads all of them (several hosts).
    self.assign = jax.jit(assign, out_shardings=self.replicated)

    def farthest(x, mask, centres, n):
      scores = _scores(x, centres, distance)
      d = _point_distance(x, jnp.max(scores, axis=1), distance)
      _, idx = jax.lax.top_k(jnp.where(mask, d, -jnp.inf), n)
      return x[idx]

    self.farthest = jax.jit(farthest, static_argnums=3, out_shardings=self.replicated)


def _shard_rows(array: np.ndarray, sharding) -> jax.Array:
  """A global array from the full host copy every process holds: each device reads its rows."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def kmeans(x, k: int, *, mesh, seed: int = 0, max_iters: int = 100, tol: float = 1e-4,
           distance: str = 'cosine', init=None, init_sample: int | None = 100_000
           ) -> KMeansResult:
  """Clusters the rows of `x` [N, D] (the same host array on every process) into `k`.

  `init`: initial centres [k, D] (default: k-means++ with `seed`). Raises for k > N."""
  if distance not in DISTANCES:
    raise ValueError(f'k-means distance={distance!r}: expected one of {DISTANCES}.')
  x = _prepare(x, distance)
  n, dim = x.shape
  if not 1 <= k <= n:
    raise ValueError(f'k-means into K={k} clusters needs at least K points, but the pool has '
                     f'{n}: use fewer clusters (config.dnc.num_clusters) or a bigger pool.')
  if init is None:
    centres = kmeans_plus_plus(x, k, seed=seed, distance=distance, init_sample=init_sample)
  else:
    centres = np.asarray(init, np.float32)
    if centres.shape != (k, dim):
      raise ValueError(f'k-means init has shape {centres.shape}; expected ({k}, {dim}).')
    if distance == 'cosine':
      centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
  tol_abs = float(tol * np.mean(np.var(x, axis=0)))  # scikit-learn's tolerance.

  programs = _Programs(mesh, k, distance)
  devices = mesh.shape['data']
  padded = -(-n // devices) * devices
  x_dev = _shard_rows(np.pad(x, ((0, padded - n), (0, 0))), programs.rows)
  mask = _shard_rows(np.arange(padded) < n, programs.rows)
  labels = _shard_rows(np.full(padded, -1, np.int32), programs.rows)
  centres = jax.device_put(centres, programs.replicated)

  compiled_iter, iter_cost = flops.compile_and_measure(programs.iteration, x_dev, mask, centres,
                                                       labels)
  reseeded, iterations, strict = [], 0, False
  for iterations in range(1, max_iters + 1):
    new, labels, stats = compiled_iter(x_dev, mask, centres, labels)
    stats = jax.device_get(stats)  # A few numbers: the convergence test.
    empty = np.flatnonzero(np.asarray(stats['counts']) == 0)
    if len(empty):  # Re-seed with the farthest points (from the centres just used).
      far = np.asarray(jax.device_get(programs.farthest(x_dev, mask, centres, len(empty))))
      logging.warning('k-means iteration %d: cluster(s) %s got no points; re-seeding each with '
                      'the point farthest from its centre.', iterations, empty.tolist())
      new = np.asarray(jax.device_get(new)).copy()
      new[empty] = far
      new = jax.device_put(new, programs.replicated)
      reseeded += empty.tolist()
    centres = new
    if len(empty):
      continue  # The re-seeded centres need at least one more assignment step.
    if stats['changed'] == 0:
      strict = True
      break
    if stats['shift'] <= tol_abs:
      break
  del strict  # The final pass gives the final centres' assignments either way.
  compiled_assign, assign_cost = flops.compile_and_measure(programs.assign, x_dev, mask, centres)
  final_labels, counts, inertia = jax.device_get(compiled_assign(x_dev, mask, centres))
  counts = np.asarray(counts).astype(np.int64)
  if np.any(counts == 0):
    logging.warning('k-means ended with empty cluster(s) %s after %d iterations (max_iters=%d): '
                    'raise max_iters or use fewer clusters.', np.flatnonzero(counts == 0).tolist(),
                    iterations, max_iters)
  return KMeansResult(
      centres=np.asarray(jax.device_get(centres), np.float32),
      assignments=np.asarray(final_labels)[:n].astype(np.int32), inertia=float(inertia),
      iterations=iterations, flops=iter_cost.flops * iterations + assign_cost.flops,
      reseeded=reseeded, counts=counts)

