"""Brute-force Gibbs sampler over sub-batches: the reference JEST's chunked sampler approximates.

Target: sub-batches X of b distinct examples of a super-batch, with p(X) proportional to
exp(gain * L(X)), L(X) = sum_{i, j in X} S[i, j] (the sigmoid batch learnability; S from
`jest.dense_score_matrix`). One Gibbs step frees one slot of the sub-batch and redraws it from
its exact conditional over every example not in the rest of the batch:
  p(j | X minus the slot) ~ exp(gain * (S[j, j] + sum_{m in rest} (S[m, j] + S[j, m]))),
which is L's increment from adding j. A sweep visits every slot once. Each step costs O(B) (the
sums are updated incrementally), but the dense [B, B] matrix is needed: for small B only (the
JEST paper's Fig. 2 comparison, and tests).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def learnability(scores, indices):
  """L(X) = sum_{i, j in X} S[i, j] of the sub-batch `indices`."""
  scores, indices = jnp.asarray(scores), jnp.asarray(indices)
  return jnp.sum(scores[indices][:, indices])


def gibbs_sample(scores, num_selected: int, rng, *, num_sweeps: int, gain: float = 1.0,
                 init=None):
  """Runs `num_sweeps` Gibbs sweeps; returns (indices int32 [b] ascending, L after each sweep).

  `init` (int [b], distinct) starts the chain, e.g. from the chunked sampler's choice; by
  default it starts from a uniformly random sub-batch.
  """
  scores = jnp.asarray(scores, jnp.float32)
  size = scores.shape[0]
  if scores.shape != (size, size):
    raise ValueError(f'scores must be a square [B, B] matrix; got {scores.shape}.')
  if not 0 < num_selected <= size:
    raise ValueError(f'Cannot select {num_selected} of a super-batch of {size}.')
  init_rng, rng = jax.random.split(rng)
  slots = (jax.random.permutation(init_rng, size)[:num_selected] if init is None
           else jnp.asarray(init, jnp.int32))
  slots = slots.astype(jnp.int32)
  pair = scores + scores.T  # S[m, j] + S[j, m]
  diag = jnp.diagonal(scores)
  member = jnp.zeros([size], jnp.float32).at[slots].set(1.0)
  if init is not None and slots.shape != (num_selected,):
    raise ValueError(f'init must hold {num_selected} indices; got shape {slots.shape}.')
  # cross[j] = sum over members m of (S[m, j] + S[j, m]), kept up to date incrementally.
  cross = pair @ member

  def step(carry, slot_and_key):
    slots, member, cross = carry
    slot, key = slot_and_key
    out = slots[slot]
    member = member.at[out].set(0.0)
    cross = cross - pair[out]
    logits = jnp.where(member > 0, -jnp.inf, gain * (diag + cross))
    new = jax.random.categorical(key, logits).astype(jnp.int32)
    member = member.at[new].set(1.0)
    return (slots.at[slot].set(new), member, cross + pair[new]), None

  def sweep(carry, key):
    keys = jax.random.split(key, num_selected)
    carry, _ = jax.lax.scan(step, carry, (jnp.arange(num_selected), keys))
    return carry, learnability(scores, carry[0])

  (slots, _, _), trace = jax.lax.scan(sweep, (slots, member, cross),
                                      jax.random.split(rng, num_sweeps))
  return jnp.sort(slots), trace
