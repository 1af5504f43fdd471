"""Atomic, resumable checkpoints with orbax: train state, data-iterator state, step, counters.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact. `latest_step()` only sees finished ones.
A finished checkpoint damaged afterwards (a truncated array file, a missing _METADATA or
state/, an empty data state) is reported by step and path when resuming, moved aside to
`<workdir>/checkpoints_damaged/`, and the run falls back to the newest valid one
(`restore_latest`).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time

from etils import epath
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import orbax.checkpoint as ocp

# Orbax splits each replicated array among its replicas so that they write it in parallel
# ("replica-parallel"). That pays for large arrays on a pod slice, whose replicas sit on
# different hosts; for a small array each split is one more program (a jit slice per shape)
# and dispatch, and buys nothing (measured: a small ViT's first save compiled 40-80 slices,
# 0.5-1.8 s, in every process that saved). Below this size per replica, one replica writes
# the array whole.
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 4 << 20


def _register_array_handler():
  """Orbax's default jax.Array handler (its array metadata store included) with the threshold."""
  try:  # Where orbax keeps it (0.11-0.12); without it, arrays' metadata is not stored apart.
    from orbax.checkpoint._src.metadata import array_metadata_store  # pylint: disable=g-import-not-at-top
    store = array_metadata_store.Store()
  except ImportError:
    store = None
  absl = logging.getLogger('absl')  # Orbax warns that it overrides its default: we mean to.
  level = absl.level
  absl.setLevel(logging.ERROR)  # setLevel, not .level =: it also clears the logger's cache.
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL,
            array_metadata_store=store), override=True)
  finally:
    absl.setLevel(level)


_register_array_handler()


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

  def describe_latest(self) -> str:
    step = self.latest_step()
    return ('none yet (a rerun starts over)' if step is None else
            f'step {step} ({os.path.join(self.directory, str(step))})')

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

  def restore_latest(self, abstract_state, accept=None):
    """(step, state, data_state, meta) of the newest checkpoint that restores, or None if there
    is none. `accept(state, data_state, meta)` may raise to reject one (e.g. a data state the
    iterator cannot take). Damaged ones are reported, moved aside and skipped; if every one is
    damaged, the error lists them and says what to delete."""
    damaged = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      path = os.path.join(self.directory, str(step))
      try:
        state, data_state, meta = self.restore(step, abstract_state)
        if not isinstance(data_state, dict) or not data_state:
          raise ValueError(f'its data-iterator state is empty ({data_state!r})')
        if not isinstance(meta, dict) or {'step', 'flops', 'wall_s'} - set(meta) or (
            int(meta['step']) != step):
          raise ValueError(f'its meta is incomplete or names another step ({meta!r})')
        if accept is not None:
          accept(state, data_state, meta)
      except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
        reason = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'[:300]
        logging.warning('Checkpoint of step %d at %s is damaged (%s); trying the previous one.',
                        step, path, reason)
        damaged.append((step, path, reason))
        continue
      for bad_step, bad_path, _ in damaged:
        self._quarantine(bad_step, bad_path)
      if damaged:
        self._manager.reload()
        logging.warning('Resuming from step %d at %s instead (the damaged ones are in %s).',
                        step, path, self._quarantine_dir)
      return step, state, data_state, meta
    if damaged:
      listing = '; '.join(f'step {s} at {p} ({r})' for s, p, r in damaged)
      raise RuntimeError(
          f'No valid checkpoint to resume from: {listing}. Delete them to start this run over '
          f'(rm -r {" ".join(p for _, p, _ in damaged)}; metrics.jsonl is then rewritten), or '
          'use another --workdir.')
    return None

  @property
  def _quarantine_dir(self):
    return self.directory.rstrip('/') + '_damaged'

  def _quarantine(self, step, path):
    if jax.process_index() != 0 or '://' in path:
      return
    os.makedirs(self._quarantine_dir, exist_ok=True)
    dest = os.path.join(self._quarantine_dir, f'{step}-{int(time.time())}')
    shutil.move(path, dest)
    logging.warning('Moved the damaged checkpoint of step %d to %s.', step, dest)

  def reached_preemption(self, step: int) -> bool:
    """True on multi-host TPU when the runtime announced preemption (all hosts agree)."""
    try:
      return bool(self._manager.reached_preemption(step))
    except Exception:  # pylint: disable=broad-except
      return False  # Not running under jax.distributed: SIGTERM handling covers us.

  def close(self):
    self._manager.close()


def saved_steps(workdir: str) -> list[int]:
  """Steps with a finished checkpoint directory in `workdir`, without opening any."""
  directory = epath.Path(workdir) / 'checkpoints'
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def abstract_like(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class StopRequest:
  """Turns SIGTERM (a preempted Cloud TPU VM) and SIGINT (Ctrl-C) into a stop the loop polls.

  One process: a flag, set by either signal. Several processes (jax.distributed): SIGTERM is
  left to jax's preemption service, which tells every host and agrees on one step to stop at
  (`Checkpointer.reached_preemption`); a Python SIGTERM handler would replace its handler and
  it would never fire. SIGINT is forwarded as SIGTERM to this process, so that it stops every
  host too. A flag set on one host only would make that host stop (and wait in the checkpoint
  barrier) while the others wait in the next step's collectives.
  """

  def __init__(self, multihost: bool = False):
    self._event = threading.Event()
    self.signal_name = None
    self.multihost = multihost
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in ((signal.SIGINT,) if multihost else (signal.SIGTERM, signal.SIGINT)):
        self._previous[sig] = signal.signal(sig, self._handler)

  def close(self):
    """Gives the signals back to whoever handled them before (a sweep, pytest)."""
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}

  def _handler(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    if self.multihost:
      os.kill(os.getpid(), signal.SIGTERM)  # jax's preemption service takes it from here.
    else:
      self._event.set()

  def __bool__(self):
    return self._event.is_set()

  def request(self, reason: str = 'requested'):
    self.signal_name = reason
    self._event.set()


def load_trained_params(workdir: str, role: str = 'learner', sharding=None):
  """Parameters of `role` from the last checkpoint of a finished run, and its metadata.

  Used to load frozen reference models (Bad Students, JEST) and priors (ReLA) by workdir. The
  parameters are restored replicated onto this run's devices (`sharding`, default: all of
  them), whatever layout or number of hosts saved them: orbax refuses to restore without a
  target when the device set differs ("topology mismatch"), so the target is built from the
  checkpoint's own shapes and dtypes.
  """
  # Orbax wants absolute local paths.
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints') if '://' not in workdir else (
      workdir.rstrip('/') + '/checkpoints')
  if not epath.Path(directory).exists():
    raise FileNotFoundError(
        f'No checkpoint under {directory!r}. Train the model first (e.g. `python -m '
        'big_vision_style.train --config experiments/bad_students/reference.py --workdir '
        f'{workdir}`) or fix the path in the config.')
  manager = ocp.CheckpointManager(
      directory, item_names=('state', 'data', 'meta'),
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'data': ocp.JsonCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'{directory!r} holds no finished checkpoint.')
  tree = manager.item_metadata(step)['state']
  if role not in tree:
    raise KeyError(f'Checkpoint {directory}/{step} has roles {sorted(tree)}, not {role!r}.')
  if sharding is None:
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ('data',)), P())
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                          tree)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  manager.close()
  params = restored['state'][role]['params']
  bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(params)
         if not np.all(np.isfinite(np.asarray(x.addressable_data(0))))]
  if bad:
    raise ValueError(
        f'Checkpoint {directory}/{step} ({role}) has non-finite parameters in {len(bad)} arrays '
        f'(e.g. {bad[0]}): that run diverged. Retrain it (e.g. with a lower config.optax.lr) '
        'before using it as a reference or prior.')
  return params, restored['meta']
