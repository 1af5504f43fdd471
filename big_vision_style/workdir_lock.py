"""One writer per workdir: `<workdir>/lock.json` records the owner's pid, host and start time.

Taking the lock creates the file exclusively (O_EXCL). If it exists:
- its owner runs on this host and is dead (no such pid, or the pid now belongs to a process
  started later: a reused pid): the lock is stale; it is taken over with a warning;
- its owner is alive, or runs on another host (whose liveness cannot be checked from here):
  the trainer refuses, naming the owner and the file to delete if that owner is gone.
Multi-host runs: only process 0 writes (metrics, run.json; orbax coordinates checkpoints), so
only process 0 takes the lock. Object stores (gs://) have no exclusive create: there the lock
is best effort (check, then write).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time

from etils import epath

FILE = 'lock.json'


def _start_ticks(pid: int) -> int | None:
  """When `pid` started (clock ticks since boot; Linux), to tell a reused pid from its owner."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(owner: dict) -> bool:
  pid = int(owner.get('pid', -1))
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Someone else's live process.
  ticks = _start_ticks(pid)
  return ticks is None or owner.get('start_ticks') in (None, ticks)


class WorkdirLock:
  """Context manager; `enabled=False` (hosts other than process 0) does nothing."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.path = epath.Path(workdir) / FILE
    self.enabled = enabled
    self._held = False
    self.me = {'pid': os.getpid(), 'host': socket.gethostname(),
               'start_ticks': _start_ticks(os.getpid()), 'since': time.time()}

  def __enter__(self):
    if self.enabled:
      self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()

  def acquire(self):
    for _ in range(3):
      if self._create():
        self._held = True
        return
      try:
        owner = json.loads(self.path.read_text())
      except (OSError, ValueError):
        owner = {}  # Torn or vanished: written by a process killed mid-write.
      if owner and (owner.get('host') != self.me['host'] or _alive(owner)):
        raise RuntimeError(
            f'{self.path.parent} is in use by another trainer (pid {owner.get("pid")} on host '
            f'{owner.get("host")}, since {time.ctime(owner.get("since", 0))}): two writers '
            'would duplicate metrics rows and overwrite each other\'s checkpoints. Wait for it '
            f'or stop it; if it is gone (another host, or not a trainer), delete {self.path}.')
      logging.warning('Taking over the stale lock %s of pid %s on %s, which is no longer '
                      'running.', self.path, owner.get('pid'), owner.get('host'))
      try:
        self.path.unlink()
      except FileNotFoundError:
        pass
    raise RuntimeError(f'Could not take the lock {self.path}: it keeps being re-created.')

  def _create(self) -> bool:
    text = json.dumps(self.me)
    if '://' in str(self.path):  # No O_EXCL on object stores: best effort.
      if self.path.exists():
        return False
      self.path.write_text(text)
      return True
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    except PermissionError as e:
      raise PermissionError(f'The workdir {self.path.parent} is not writable ({e}); choose '
                            'another --workdir or fix its permissions.') from e
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    return True

  def release(self):
    if not self._held:
      return
    self._held = False
    try:
      if json.loads(self.path.read_text()).get('pid') == self.me['pid']:
        self.path.unlink()
    except (OSError, ValueError):
      pass
