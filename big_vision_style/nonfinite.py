"""The non-finite guard: a run never trains on, logs as a number, or saves a NaN / inf.

Two modes, `config.skip_nonfinite_steps`:
- False (default): stop. After every step a tiny jitted program folds the step's losses and
  gradient norms (measurements named `*loss` or `*grad_norm`) into a device-side record of the
  first bad step (`Tracker`). It is dispatched asynchronously, so the loop does not wait for
  the device each step; the host reads it only where it syncs anyway (log, evaluation and
  checkpoint steps) and always before a save, so a non-finite state is never written. The
  step program itself is untouched: same results and same measured FLOPs as without a guard.
  A bad step raises `NonFiniteError`, naming the step, the quantity and the last checkpoint
  saved before it.
- True: skip and count, as large-scale trainers do. The phase's step is wrapped (`skipping`):
  inside the jitted step, a step whose losses or gradient norms are not all finite keeps the
  previous state (parameters, optimiser, every role), and `state[SKIPPED]` counts such steps;
  rows log the count as `train/nonfinite_skipped` (only in this mode).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

SKIPPED = 'nonfinite_skipped'  # The state entry (and metric suffix) of skipped steps.
METRIC = 'train/nonfinite_skipped'


class NonFiniteError(FloatingPointError):
  """A step produced a non-finite loss or gradient norm; nothing after it was saved."""


def watched(measurements) -> list[str]:
  """The measurements that must be finite: every loss and gradient norm, sorted."""
  return sorted(k for k in measurements if k.endswith('loss') or k.endswith('grad_norm'))


def _bad_bits(measurements, keys, bit_of=None):
  bits = jnp.int32(0)
  for i, k in zip(bit_of or range(len(keys)), keys):
    bits = bits | jnp.where(jnp.all(jnp.isfinite(measurements[k])), 0, 1 << i).astype(jnp.int32)
  return bits


class Tracker:
  """Device-side (first bad step, which quantities), updated without a host sync."""

  def __init__(self, replicated):
    self._record = jax.device_put((jnp.int32(0), jnp.int32(0)), replicated)
    self._names = []  # Every watched name seen, in any phase: bit i is self._names[i].
    self._fold = jax.jit(self._fold_fn, static_argnames=('keys', 'bit_of'),
                         out_shardings=replicated)

  @staticmethod
  def _fold_fn(record, measurements, step, keys, bit_of):
    first, bits = record
    new_bits = _bad_bits(measurements, keys, bit_of)
    fresh = (first == 0) & (new_bits != 0)
    return jnp.where(fresh, step, first), jnp.where(fresh, new_bits, bits)

  def update(self, measurements, step):
    keys = tuple(watched(measurements))  # Phases (ReLA's, then the method's) log different ones.
    self._names += [k for k in keys if k not in self._names]
    self._record = self._fold(self._record, {k: measurements[k] for k in keys}, step, keys=keys,
                              bit_of=tuple(self._names.index(k) for k in keys))

  def failed(self) -> bool:
    """Whether any step so far was not finite (syncs with the device)."""
    return bool(int(jax.device_get(self._record[0])))

  def check(self, last_good: str):
    """Raises NonFiniteError if any step so far was not finite (syncs with the device)."""
    first, bits = (int(x) for x in jax.device_get(self._record))
    if first:
      names = [k for i, k in enumerate(self._names) if bits >> i & 1]
      raise NonFiniteError(
          f'Step {first} gave a non-finite {" and ".join(names)}; stopped without saving it. '
          f'The last good checkpoint is {last_good}. Lower the learning rate (config.optax.lr) '
          'or clip gradients (config.optax.clip_norm) and rerun (it resumes from there), or '
          'set config.skip_nonfinite_steps=True to skip and count such steps.')


def skipping(phase):
  """`phase` whose step keeps the previous state when a loss or gradient norm is not finite,
  and counts those steps in `state[SKIPPED]` (module doc)."""
  inner = phase.step

  def step(state, frozen, batch, step_num):
    count = state[SKIPPED]
    old = {k: v for k, v in state.items() if k != SKIPPED}
    new, measurements = inner(dict(old), frozen, batch, step_num)
    finite = _bad_bits(measurements, watched(measurements)) == 0
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new[SKIPPED] = count + jnp.where(finite, 0, 1).astype(jnp.int32)
    return new, {**measurements, METRIC: new[SKIPPED]}

  def ended(state):
    return phase.ended({k: v for k, v in state.items() if k != SKIPPED})

  return dataclasses.replace(phase, step=step, ended=phase.ended and ended)


def init_skipped():
  return jnp.int32(0)
