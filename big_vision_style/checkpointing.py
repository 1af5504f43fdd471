"""Atomic, resumable checkpoints with orbax: train state, data-iterator state, step, counters.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact. `latest_step()` only sees finished ones.
"""
from __future__ import annotations

import os
import signal
import threading

from etils import epath
import jax
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, workdir: str, *, max_to_keep: int = 2):
    self.directory = os.path.join(os.path.abspath(workdir) if '://' not in workdir else workdir,
                                  'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            # Synchronous saves: a preempted VM must not exit with a save half done, and the
            # small local models make async saving pointless.
            enable_async_checkpointing=False),
        item_names=('state', 'data', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state, meta: dict):
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state):
    """Restores onto the shardings of `abstract_state` (a tree of jax.ShapeDtypeStruct)."""
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return out['state'], out['data'], out['meta']

  def reached_preemption(self, step: int) -> bool:
    """True on multi-host TPU when the runtime announced preemption (all hosts agree)."""
    try:
      return bool(self._manager.reached_preemption(step))
    except Exception:  # pylint: disable=broad-except
      return False  # Not running under jax.distributed: SIGTERM handling covers us.

  def close(self):
    self._manager.close()


def abstract_like(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class StopRequest:
  """Turns SIGTERM (a preempted Cloud TPU VM) into a flag the train loop polls between steps."""

  def __init__(self):
    self._event = threading.Event()
    self.signal_name = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    self._event.set()

  def __bool__(self):
    return self._event.is_set()

  def request(self, reason: str = 'requested'):
    self.signal_name = reason
    self._event.set()


def load_trained_params(workdir: str, role: str = 'learner'):
  """Parameters of `role` from the last checkpoint of a finished run, and its metadata.

  Used to load frozen reference models (Bad Students) and priors (ReLA) by workdir.
  """
  # Orbax wants absolute local paths.
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints') if '://' not in workdir else (
      workdir.rstrip('/') + '/checkpoints')
  if not epath.Path(directory).exists():
    raise FileNotFoundError(
        f'No checkpoint under {directory!r}. Train the model first (e.g. `python -m '
        'big_vision_style.train --config experiments/bad_students/reference.py --workdir '
        f'{workdir}`) or fix the path in the config.')
  manager = ocp.CheckpointManager(directory, item_names=('state', 'data', 'meta'))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'{directory!r} holds no finished checkpoint.')
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  manager.close()
  if role not in restored['state']:
    raise KeyError(f'Checkpoint {directory}/{step} has roles {sorted(restored["state"])}, '
                   f'not {role!r}.')
  return restored['state'][role]['params'], restored['meta']
