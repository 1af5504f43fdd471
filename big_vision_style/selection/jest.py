"""JEST: joint example selection for contrastive image-text training (Evans et al., NeurIPS 2024).

In a contrastive batch every example's loss depends on the others, so JEST samples whole
sub-batches, approximately with probability proportional to exp(gain * batch learnability), by
the blocked sampler of the paper's Algorithm 1 (METHODS.md section 2):

  emb = Embeddings(image=zimg, text=ztxt, temperature=out['t'], bias=out['b'])  # per model, [B, d]
  sample = sample_joint(learner_emb, reference_emb, num_selected=b, num_chunks=N, rng=rng,
                        mesh=mesh, policy='learnability', loss='sigmoid', gain=...)
  batch = selection.gather(super_batch, sample.indices, mesh)         # the b chosen pairs

Scores. For a model with temperature t and bias b, M[i, j] = -log sigmoid(z_ij (t <img_i, txt_j>
+ b)), z_ij = +1 iff i == j: the SigLIP loss of image i against text j. The score matrix is
S = M_learner - M_reference ('learnability'), -M_reference ('easy_reference') or M_learner
('hard_learner'); the batch learnability of a sub-batch X is sum_{i, j in X} S[i, j].

Chunked sampler (b = num_selected, N chunks of n = b / N):
  chunk 1: n indices without replacement from softmax(gain * S[i, i]);
  chunk c: n more from softmax(gain * c_i) over the candidates i not yet selected, with the
    conditional logit c_i = S[i, i] + sum over selected k of (S[k, i] + S[i, k]),
each chunk drawn by Gumbel-top-k (`selection.select_indices`, exact sampling without
replacement). `loss='softmax'` is the CLIP variant: a candidate's conditional logit is its own
softmax-contrastive learnability with the negatives restricted to the already selected examples
(image-to-text and text-to-image, averaged), recomputed for every chunk. With nothing selected
yet that loss is 0 for every candidate, so the softmax variant's first chunk is uniform.

Memory: the B x B matrix is never formed, not even B x b, nor even one [B, n] block. Each chunk
needs only the blocks between all candidates and the chunk just chosen ([B, n], from the
embeddings), and only their row sums (sigmoid) or log-sum-exps (softmax), accumulated in [B]
vectors. The update is written so that XLA fuses each block's matmul with the loss and the row
reduction (`_Accumulated.update`: softplus / logsumexp without jax.nn's isnan / isfinite guards,
both directions as candidate-major products [B, d] @ [d, n], the positive pairs corrected on
the chunk members only, the bias added after the log-sum-exp), so no block is written out: the
working memory is O(B + n d), a few [B] vectors (tests check the compiled temp size). The
dense forms (`dense_score_matrix`, jest_gibbs.py) exist for small B: tests and the Gibbs
baseline.

What is global and what is per-device (mesh axis 'data', sharding.make_mesh; everything runs in
one `shard_map`):
- Per device: the candidates' embeddings, B/D rows per model and modality (inputs sharded
  P('data'); they never move), the conditional-logit accumulators and the selected mask [B/D],
  and the score blocks [B/D, n] between the local candidates and the current chunk.
- Global: per chunk, (1) the [B] conditional logits are gathered on every device (B floats, not
  embeddings), every device draws the same Gumbel noise (a function of the chunk's key and the
  global position only) and takes the same top-n, so all agree on the chunk without further
  communication; (2) the chosen chunk's embeddings, [n, d] per model and modality, are
  assembled on every device by one all-reduce of rows each owned by exactly one device (exact).
  Those are the only things that cross devices. Per-device working memory is therefore
  O(B + n d): the gathered logits, noise and top-k over [B], and the chunk's rows. The result
  (chunk order [N, n], indices [b] ascending) is replicated. The choice is the same on 1 and on D devices
  (tests check it): the noise and the top-k see the same global vector, and each score is a
  row-local computation.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from big_vision_style import contrastive
from big_vision_style.selection import batch
from big_vision_style.selection import policies

POLICIES = ('learnability', 'easy_reference', 'hard_learner')
LOSSES = ('sigmoid', 'softmax')
PAPER_GAIN = 100.0  # The JEST paper multiplies scores by 100 before the softmax.

# Sign of each model's loss in the score: S = sum over roles of sign * M_role.
_SIGNS = {
    'learnability': (('learner', 1.0), ('reference', -1.0)),
    'easy_reference': (('reference', -1.0),),
    'hard_learner': (('learner', 1.0),),
}


class Embeddings(NamedTuple):
  """One model's view of a batch: L2-normalised embeddings and its loss's temperature and bias."""
  image: jax.Array  # [B, d]
  text: jax.Array  # [B, d]
  temperature: jax.Array  # scalar, t = exp(t')
  bias: jax.Array  # scalar


class JointSample(NamedTuple):
  indices: jax.Array  # int32 [b], ascending: positions in the super-batch.
  chunks: jax.Array  # int32 [N, n]: the same, chunk by chunk, in the order drawn.
  conditional_logits: jax.Array | None  # float32 [N, B] before the gain, -inf once selected;
  #                                       only with return_logits=True (diagnostics, O(N B)).


def needs(policy: str) -> set[str]:
  """The models `policy` scores with: a subset of {'learner', 'reference'} (policies.READS;
  JEST's 'learner' is whichever model scores, config.selection.scorer)."""
  if policy not in _SIGNS:
    raise ValueError(f'Unknown JEST scoring policy {policy!r}: expected one of {POLICIES}.')
  return {'learner' if r == 'scorer' else r for r in policies.reads(policy, policies.CONTRASTIVE)}


def _signed_models(policy: str, learner, reference) -> list[tuple[float, Embeddings]]:
  given = {'learner': learner, 'reference': reference}
  missing = sorted(r for r in needs(policy) if given[r] is None)
  if missing:
    raise ValueError(f'JEST policy {policy!r} needs the {" and ".join(missing)} embeddings, '
                     'which were not given (None).')
  out = []
  for role, sign in _SIGNS[policy]:
    emb = Embeddings(*given[role])
    image, text = jnp.asarray(emb.image, jnp.float32), jnp.asarray(emb.text, jnp.float32)
    if image.ndim != 2 or image.shape != text.shape:
      raise ValueError(f'{role} embeddings must be image and text [B, d] of the same shape; got '
                       f'{image.shape} and {text.shape}.')
    # Selection never differentiates through the scores.
    emb = jax.tree.map(jax.lax.stop_gradient, Embeddings(
        image, text, jnp.asarray(emb.temperature, jnp.float32).reshape(()),
        jnp.asarray(emb.bias, jnp.float32).reshape(())))
    out.append((sign, emb))
  sizes = {e.image.shape[0] for _, e in out}
  if len(sizes) != 1:
    raise ValueError(f'Learner and reference embed super-batches of different sizes {sizes}.')
  return out


def _check_loss(loss: str):
  if loss not in LOSSES:
    raise ValueError(f'Unknown JEST loss {loss!r} (sigmoid or softmax); expected one of {LOSSES}.')


def _check_gain(gain):
  if isinstance(gain, numbers.Real) and not gain > 0:
    raise ValueError(f'The JEST gain (inverse temperature) must be > 0; got {gain}.')


# ----- Scores -----

def _logits(emb: Embeddings, image, text):
  return emb.temperature * image @ text.T + emb.bias


def _block_logits(emb: Embeddings, candidates, chunk, bias: bool = True):
  """Logits between the candidates' rows [B/D, d] and the chunk's rows [n, d], candidate-major
  [B/D, n]. The temperature scales the chunk's side: scaling the candidates' would be hoisted out
  of the sampler's loop as [B/D, d] copies."""
  logits = candidates @ (emb.temperature * chunk).T
  return logits + emb.bias if bias else logits


def _softplus(x):
  """softplus(x) = log(1 + e^x), as jax.nn.softplus computes it (max(x, 0) + log1p(e^-|x|)) but
  without its isnan guard, which keeps XLA from fusing it into the block matmul's consumer."""
  return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _logsumexp_rows(x):
  """logsumexp over axis 1 of finite x, as jax.nn.logsumexp computes it, minus its isfinite
  guard (the same fusion reason as _softplus)."""
  top = jnp.max(x, axis=1)
  return jnp.log(jnp.sum(jnp.exp(x - top[:, None]), axis=1)) + top


def _pair_losses(logits, positive):
  # -log sigmoid(z * l) = softplus(-z * l), z = +1 for matching pairs, -1 otherwise.
  return jax.nn.softplus(jnp.where(positive, -logits, logits))


def diagonal_scores(learner=None, reference=None, *, policy: str = 'learnability'):
  """S[i, i] for every pair [B]: the per-pair (independent, ActiveCLIP-style) score."""
  out = 0.0
  for sign, emb in _signed_models(policy, learner, reference):
    logits = emb.temperature * jnp.sum(emb.image * emb.text, axis=-1) + emb.bias
    out = out + sign * jax.nn.softplus(-logits)
  return out


def dense_score_matrix(learner=None, reference=None, *, policy: str = 'learnability'):
  """The whole B x B score matrix S. For small B only: the Gibbs baseline and tests."""
  models = _signed_models(policy, learner, reference)
  size = models[0][1].image.shape[0]
  positive = jnp.eye(size, dtype=bool)
  return sum(sign * _pair_losses(_logits(e, e.image, e.text), positive) for sign, e in models)


def batch_learnability(learner=None, reference=None, indices=None, *,
                       policy: str = 'learnability', loss: str = 'sigmoid'):
  """The score of the sub-batch `indices` [b]: the sum over its members of their contrastive
  loss within it, signed per model. For 'sigmoid' that is sum_{i, j in X} S[i, j]. Builds the
  b x b logits (as the learner's own loss on that batch does)."""
  _check_loss(loss)
  total = 0.0
  for sign, e in _signed_models(policy, learner, reference):
    img, txt = e.image[indices], e.text[indices]
    total = total + sign * jnp.sum(contrastive.per_example_loss(loss, img, txt, e.temperature,
                                                                e.bias))
  return total


# ----- Sizes and errors -----

def check_sizes(super_batch: int, num_selected: int, num_chunks: int, num_devices: int = 1):
  for name, value in (('num_selected', num_selected), ('num_chunks', num_chunks)):
    if not (isinstance(value, numbers.Integral) and value > 0):
      raise ValueError(f'JEST {name} must be a positive integer; got {value!r}.')
  if num_selected > super_batch:
    raise ValueError(f'Cannot select {num_selected} of a super-batch of {super_batch}.')
  if num_selected % num_chunks:
    raise ValueError(f'config.selection.num_chunks={num_chunks} does not divide the sub-batch of '
                     f'{num_selected}: the sampler draws equal chunks of b / N examples.')
  if super_batch % num_devices:
    raise ValueError(f'The super-batch of {super_batch} is not divisible by the {num_devices} '
                     "devices of the data axis, over which the candidates are sharded.")


def sizes(batch_size: int, filter_ratio: float, num_chunks: int, num_devices: int = 1):
  """(super-batch B, chunk size n) for learner batch b, filter ratio f and N chunks; checked."""
  super_batch = batch.super_batch_size(batch_size, filter_ratio)  # f must be in [0, 1).
  check_sizes(super_batch, batch_size, num_chunks, num_devices)
  return super_batch, batch_size // num_chunks


# ----- Independent selection (ActiveCLIP / the JEST paper's "independent" baseline) -----

def select_independent(learner=None, reference=None, *, num_selected: int, rng,
                       policy: str = 'learnability', gain: float = 1.0, method: str = 'sample'):
  """b pairs drawn independently from softmax(gain * S[i, i]) (or the top b): int32 [b] sorted.

  Elementwise on global (sharded) embeddings, then `selection.select_indices`' global top-k.
  """
  _check_gain(gain)
  return batch.select_indices(gain * diagonal_scores(learner, reference, policy=policy),
                                  num_selected, rng, method=method)


# ----- The chunked joint sampler -----

@dataclasses.dataclass(frozen=True)
class _Accumulated:
  """What the chosen chunks contribute to the local candidates' conditional logits."""
  loss: str
  signs: tuple[float, ...]

  def init(self, models, positions):
    # Built from `positions` so that shard_map types them as varying over 'data' (per-device
    # values), like the scan carries they start.
    zeros = jnp.zeros_like(positions, jnp.float32) * 0
    if self.loss == 'sigmoid':
      return {'sum': zeros}
    neg_inf = jnp.stack([zeros - jnp.inf] * len(models))
    return {'lse_i2t': neg_inf, 'lse_t2i': neg_inf}

  def logits(self, state, models):
    """Conditional logits of the local candidates [B/D] given the chunks accumulated."""
    if self.loss == 'sigmoid':
      diag = 0.0
      for sign, e in zip(self.signs, models):
        diag = diag + sign * jax.nn.softplus(
            -(e.temperature * jnp.sum(e.image * e.text, -1) + e.bias))
      return diag + state['sum']
    out = 0.0
    for m, (sign, e) in enumerate(zip(self.signs, models)):
      own = e.temperature * jnp.sum(e.image * e.text, -1) + e.bias
      # The candidate's CLIP loss against {itself} + the selected ones: -l_ii + logsumexp.
      i2t = jnp.logaddexp(state['lse_i2t'][m], own) - own
      t2i = jnp.logaddexp(state['lse_t2i'][m], own) - own
      out = out + sign * 0.5 * (i2t + t2i)
    return out

  def update(self, state, models, chunk_models, positions, chunk):
    """Adds the blocks between the local candidates and the chunk just chosen ([B/D, n]).

    Written so that XLA fuses each block's matmul with the elementwise loss and the row
    reduction: no [B/D, n] block is ever written to memory (working memory O(B + n d)).
    """
    if self.loss == 'sigmoid':
      in_chunk = _members(positions, chunk)
      total = state['sum']
      for sign, e, c in zip(self.signs, models, chunk_models):
        # All pairs as negatives, S[i, k] and S[k, i], both computed as candidate-major
        # [B/D, n] products (a transposed product would not fuse with the row sum).
        as_image = _softplus(_block_logits(e, e.image, c.text))  # -log sigmoid(-l(img_i, txt_k))
        as_text = _softplus(_block_logits(e, e.text, c.image))  # -log sigmoid(-l(img_k, txt_i))
        # The positive pairs (i == k, a chunk member against itself) only on the diagonal
        # entries: softplus(-l) - softplus(l) = -l, in both directions.
        own = e.temperature * jnp.sum(e.image * e.text, -1) + e.bias
        total = total + sign * (jnp.sum(as_image + as_text, axis=1)
                                + jnp.where(in_chunk, -2.0 * own, 0.0))
      return {'sum': total}
    i2t, t2i = [], []
    for m, (e, c) in enumerate(zip(models, chunk_models)):
      # logsumexp_k(l_ik + bias) = logsumexp_k(l_ik) + bias: the bias added to the [B/D] row
      # values, not broadcast over the block (which XLA would materialise).
      i2t.append(jnp.logaddexp(state['lse_i2t'][m], e.bias + _logsumexp_rows(
          _block_logits(e, e.image, c.text, bias=False))))
      t2i.append(jnp.logaddexp(state['lse_t2i'][m], e.bias + _logsumexp_rows(
          _block_logits(e, e.text, c.image, bias=False))))
    return {'lse_i2t': jnp.stack(i2t), 'lse_t2i': jnp.stack(t2i)}


def _members(positions, chunk):
  """[B/D] bool: which local candidates (global `positions`, contiguous) are in `chunk`."""
  local = chunk - positions[0]
  mine = (local >= 0) & (local < positions.shape[0])
  return (positions < 0).at[jnp.where(mine, local, positions.shape[0])].set(True, mode='drop')


def _fetch_rows(x, chunk, start):
  """Rows `chunk` (global positions) of a 'data'-sharded array, on every device: [n, ...].

  Each row lives on exactly one device, which contributes it; the others add zeros, so the
  all-reduce is exact. Only these n rows cross devices.
  """
  local = chunk - start
  mine = (local >= 0) & (local < x.shape[0])
  rows = jnp.take(x, jnp.clip(local, 0, x.shape[0] - 1), axis=0)
  rows = jnp.where(mine.reshape((-1,) + (1,) * (x.ndim - 1)), rows, jnp.zeros((), x.dtype))
  return jax.lax.psum(rows, 'data')


def _gather_vector(local, start, total):
  """The global [B] vector from its [B/D] shards, on every device.

  An all-reduce of shards placed at their offsets (zeros elsewhere; exact, one contributor per
  entry, -inf included) rather than an all_gather: shard_map then knows the result is the same
  on every device, which the replicated chunk indices it returns require.
  """
  full = jax.lax.dynamic_update_slice(jnp.zeros([total], local.dtype), local, (start,))
  return jax.lax.psum(full, 'data')


def sample_joint(learner=None, reference=None, *, num_selected: int, num_chunks: int, rng, mesh,
                 policy: str = 'learnability', loss: str = 'sigmoid', gain: float = 1.0,
                 return_logits: bool = False) -> JointSample:
  """JEST's chunked joint sampler (see the module doc); eager or inside jit.

  `learner` / `reference` are `Embeddings` of the same super-batch (global arrays [B, d],
  ideally sharded over the mesh's 'data' axis; whichever `policy` needs). Returns b =
  `num_selected` distinct positions, drawn in `num_chunks` chunks.
  """
  _check_loss(loss)
  _check_gain(gain)
  models = _signed_models(policy, learner, reference)
  signs = tuple(s for s, _ in models)
  embs = [e for _, e in models]
  total = embs[0].image.shape[0]
  devices = mesh.shape['data']
  check_sizes(total, num_selected, num_chunks, devices)
  chunk_size = num_selected // num_chunks
  acc = _Accumulated(loss, signs)
  keys = jax.random.split(rng, num_chunks)

  def choose(state, selected, models_local, key, start):
    logits = jnp.where(selected, -jnp.inf, acc.logits(state, models_local))
    logits = _gather_vector(logits, start, total)  # [B], the same on every device.
    chunk = batch.select_indices(gain * logits, chunk_size, key, method='sample')
    return chunk, logits

  def per_device(models_local, keys):
    local_size = models_local[0].image.shape[0]
    start = jax.lax.axis_index('data') * local_size
    positions = start + jnp.arange(local_size, dtype=jnp.int32)
    state = acc.init(models_local, positions)
    selected = positions < 0  # All False, varying over 'data' like `positions`.
    first, first_logits = choose(state, selected, models_local, keys[0], start)

    def body(carry, key):
      state, selected, previous = carry
      chunk_models = [Embeddings(_fetch_rows(e.image, previous, start),
                                 _fetch_rows(e.text, previous, start), e.temperature, e.bias)
                      for e in models_local]
      state = acc.update(state, models_local, chunk_models, positions, previous)
      selected = selected | _members(positions, previous)  # Taken from now on.
      chunk, logits = choose(state, selected, models_local, key, start)
      return (state, selected, chunk), (chunk, logits if return_logits else None)

    _, (chunks, logits) = jax.lax.scan(body, (state, selected, first), keys[1:])
    chunks = jnp.concatenate([first[None], chunks])
    if return_logits:
      logits = jnp.concatenate([first_logits[None], logits])
    return chunks, logits

  sharded = Embeddings(P('data'), P('data'), P(), P())
  fn = batch.shard_map(
      per_device, mesh=mesh, in_specs=([sharded] * len(embs), P()), out_specs=(P(), P()))
  chunks, logits = fn(embs, keys)
  return JointSample(jnp.sort(chunks.reshape(-1)), chunks, logits)

