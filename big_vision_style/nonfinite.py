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
import numpy as np

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
  """The first non-finite step and what was not finite, found without a host sync per step.

  `update` only keeps references to each step's watched measurements (scalars, already on
  device); `failed` / `check` fetch them in one transfer at log and checkpoint steps and scan
  them on the host. No extra program is dispatched per step: an earlier version folded them
  into a device record with a second jitted program every step, and on XLA:CPU that program,
  dispatched while the sharded step ran, intermittently aborted the process.
  """

  def __init__(self, replicated=None):
    del replicated  # Kept for callers; nothing lives on device any more.
    self._pending = []  # (step, {name: device scalar}) since the last check.
    self._first = None  # (step, names) of the first non-finite step seen.

  def update(self, measurements, step):
    keys = watched(measurements)  # Phases (ReLA's, then the method's) log different ones.
    self._pending.append((int(step), {k: measurements[k] for k in keys}))

  def _scan(self):
    pending, self._pending = self._pending, []
    if self._first is not None or not pending:
      return
    for step, values in zip([s for s, _ in pending], jax.device_get([v for _, v in pending])):
      bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
      if bad:
        self._first = (step, bad)
        return

  def failed(self) -> bool:
    """Whether any step so far was not finite (syncs with the device)."""
    self._scan()
    return self._first is not None

  def check(self, last_good: str):
    """Raises NonFiniteError if any step so far was not finite (syncs with the device)."""
    if self.failed():
      first, names = self._first
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
