"""Run a function of the project in N local CPU processes joined by jax.distributed (gloo).

Pod slices run one process per host; this simulates that on one machine. Each process gets
`devices_per_process` simulated CPU devices, joins the others through a coordinator on a free
local port, imports `module:function`, calls it with the (pickled) arguments and pickles its
result back. Compare with the same function in one process holding all N*K devices:

  from tests import multiprocess
  multi, single = multiprocess.run_layouts('tests.test_multiprocess:_stream', args=(...,))
  # multi: [result of process 0, result of process 1]; single: the 1-process result.

  results = multiprocess.run_processes('pkg.mod:fn', args=(...,), num_processes=2,
                                       devices_per_process=2, timeout=120)
  result = multiprocess.run_single('pkg.mod:fn', args=(...,), num_devices=4)

The function runs after `jax.distributed.initialize` (so `jax.process_index()`,
`jax.devices()` and collectives are those of the pod); it must be importable by its module path
from the repository root, and its arguments and result must pickle. jax Arrays in the result
come back as numpy arrays: arrays that span other processes' devices are gathered (every process
takes part in the same gathers, in the same order, since all return the same tree structure);
typed PRNG keys come back as their key data.

Each process compiles every program itself. jax can compile once and pass the executable to
the other processes (`jax_share_binary_between_hosts`), keyed by the persistent cache's key,
but on CPU that key differs between the processes of one job (measured with jax 0.10.2: the
hashed compile options and accelerator config differ, the program does not; jax strips the
device assignment from the key on GPU only), so process 1 waits for a key process 0 never
sets and the first collective times out in gloo's initialisation. For the same reason, and
because only process 0 writes the persistent cache, process 1 recompiles even when the cache
is warm. Only the "accelerator config" part differs for programs that span the processes (a
fingerprint of the CPU topology; their compile options hash the same). Replacing that hash
with the devices' platform, kind and global id in the workers makes the sharing work (a
2-process probe: process 1 then spends 4.0 CPU-s instead of 8.0 on a program that takes 7.5 to
compile), but it doubled the CPU of tests/test_multiprocess.py (30 -> 65 s, even its harness
tests that compile almost nothing), for a reason not found yet, so it is not used. Instead every
process writes its own entries to the persistent cache (jax writes from process 0 only), so a
test's later runs, and later tests, find process 1's programs too (measured, cold cache:
tests/test_multiprocess_preemption.py 142 -> 123 CPU-s; BVS_EVERY_PROCESS_WRITES_CACHE=0 turns
it off).

Everything is bounded: a run that has not finished after `timeout` seconds is killed, every
process of it. When a process fails, the others (which would wait for it in a collective) are
killed after `grace` seconds, and `ProcessesFailed` says which process failed, its exit code
and the tail of its stderr (logs of all processes are kept in the run's directory, whose path
the error message gives).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TIMEOUT = 180.0
TAIL_LINES = 40


class ProcessesFailed(AssertionError):
  """A process of a run failed or the run timed out; the message has each one's story."""


def free_port() -> int:
  try:
    import portpicker  # pylint: disable=g-import-not-at-top
    return portpicker.pick_unused_port()
  except ImportError:  # Bind port 0 and let the OS choose.
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      return s.getsockname()[1]


def worker_env(devices_per_process: int, extra: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of a worker: CPU only, `devices_per_process` simulated devices (any
  device count already in XLA_FLAGS, as tests/conftest.py sets, is replaced)."""
  env = dict(os.environ)
  flags = re.sub(r'--xla_force_host_platform_device_count=\S+', '', env.get('XLA_FLAGS', ''))
  count = f'--xla_force_host_platform_device_count={devices_per_process}'
  env['XLA_FLAGS'] = f'{flags.strip()} {count}'.strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in env.get('PYTHONPATH', '').split(
      os.pathsep) if p])
  env['PYTHONUNBUFFERED'] = '1'
  env.update(extra or {})
  return env


@dataclasses.dataclass
class _Worker:
  group: str
  index: int
  proc: subprocess.Popen
  stderr_path: str
  result_path: str
  killed: str | None = None  # Why the harness killed it, if it did.

  def kill(self, why: str):
    if self.proc.poll() is None:
      self.killed = why
      try:
        os.killpg(self.proc.pid, signal.SIGKILL)  # Its own session: it and nothing else.
      except ProcessLookupError:
        pass
      self.proc.wait()

  def story(self) -> str:
    code = self.proc.returncode
    what = (f'killed by the harness ({self.killed})' if self.killed else
            f'exit code {code}' + (f' (signal {signal.Signals(-code).name})'
                                  if code is not None and code < 0 else ''))
    try:
      with open(self.stderr_path, errors='replace') as f:
        tail = f.read().splitlines()[-TAIL_LINES:]
    except OSError:
      tail = ['<no stderr>']
    body = '\n'.join('    ' + line for line in tail) or '    <empty stderr>'
    return f'  {self.group} process {self.index}: {what}; last lines of its stderr:\n{body}'


class _Run:
  """One layout: `num_processes` workers of one function, started at once."""

  def __init__(self, name, fn_path, args, kwargs, num_processes, devices_per_process, tmpdir,
               env=None):
    self.name, self.dir = name, os.path.join(tmpdir, name)
    os.makedirs(self.dir)
    spec = os.path.join(self.dir, 'spec.pkl')
    with open(spec, 'wb') as f:
      pickle.dump((fn_path, tuple(args), dict(kwargs or {})), f)
    port = free_port() if num_processes > 1 else 0
    self.workers = []
    for i in range(num_processes):
      result = os.path.join(self.dir, f'result_{i}.pkl')
      stderr = os.path.join(self.dir, f'stderr_{i}.txt')
      with open(os.path.join(self.dir, f'stdout_{i}.txt'), 'wb') as out, open(stderr, 'wb') as err:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'tests.multiprocess', '--spec', spec, '--result', result,
             '--process_id', str(i), '--num_processes', str(num_processes),
             '--devices_per_process', str(devices_per_process), '--port', str(port)],
            cwd=REPO, env=worker_env(devices_per_process, env), stdout=out, stderr=err,
            stdin=subprocess.DEVNULL, start_new_session=True)
      self.workers.append(_Worker(name, i, proc, stderr, result))
    self.failed_at = None

  def poll(self, now: float, grace: float) -> bool:
    """Whether every worker has exited; kills the rest `grace` s after one failed."""
    codes = [w.proc.poll() for w in self.workers]
    if self.failed_at is None and any(c not in (None, 0) for c in codes):
      self.failed_at = now
    if self.failed_at is not None and now - self.failed_at > grace:
      first = next(w for w in self.workers if w.proc.returncode not in (None, 0))
      for w in self.workers:
        w.kill(f'{first.group} process {first.index} had failed {grace:.0f} s before')
    return all(w.proc.poll() is not None for w in self.workers)

  def ok(self) -> bool:
    return all(w.proc.returncode == 0 for w in self.workers)

  def results(self) -> list:
    out = []
    for w in self.workers:
      with open(w.result_path, 'rb') as f:
        out.append(pickle.load(f))
    return out


def _run_all(runs: Sequence[_Run], timeout: float, grace: float, tmpdir: str,
             keep_logs: bool = True):
  deadline = time.monotonic() + timeout
  try:
    while True:
      now = time.monotonic()
      if all([run.poll(now, grace) for run in runs]):
        break
      if now > deadline:
        for run in runs:
          for w in run.workers:
            w.kill(f'still running after the {timeout:.0f} s timeout')
        break
      time.sleep(0.05)
  finally:  # KeyboardInterrupt or a harness bug: leave no process behind.
    for run in runs:
      for w in run.workers:
        w.kill('the harness stopped')
  failed = [run for run in runs if not run.ok()]
  if failed:
    # Processes that failed by themselves first, then those the harness killed.
    workers = sorted((w for run in failed for w in run.workers), key=lambda w: (
        w.killed is not None, w.proc.returncode == 0))
    stories = '\n'.join(w.story() for w in workers)
    where = f' (logs in {tmpdir})' if keep_logs else ''
    if not keep_logs:
      shutil.rmtree(tmpdir, ignore_errors=True)
    raise ProcessesFailed(f'{", ".join(r.name for r in failed)} failed{where}:\n{stories}')
  results = [run.results() for run in runs]
  shutil.rmtree(tmpdir, ignore_errors=True)
  return results


def run_processes(fn_path: str, args: Sequence[Any] = (), kwargs: dict | None = None, *,
                  num_processes: int = 2, devices_per_process: int = 2,
                  timeout: float = DEFAULT_TIMEOUT, grace: float = 5.0,
                  env: dict[str, str] | None = None, keep_logs: bool = True) -> list:
  """`module:function(*args, **kwargs)` in `num_processes` processes of one jax.distributed
  job: the list of their results, by process index. The run's directory (specs, results,
  each process's stdout and stderr) is removed after success, kept after a failure unless
  `keep_logs` is False."""
  tmpdir = tempfile.mkdtemp(prefix='bvs_multiprocess_')
  run = _Run(f'{num_processes}x{devices_per_process}', fn_path, args, kwargs, num_processes,
             devices_per_process, tmpdir, env)
  return _run_all([run], timeout, grace, tmpdir, keep_logs)[0]


def run_single(fn_path: str, args: Sequence[Any] = (), kwargs: dict | None = None, *,
               num_devices: int = 4, timeout: float = DEFAULT_TIMEOUT,
               env: dict[str, str] | None = None, keep_logs: bool = True):
  """The 1-process reference: the function's result in one process with `num_devices`."""
  return run_processes(fn_path, args, kwargs, num_processes=1, devices_per_process=num_devices,
                       timeout=timeout, env=env, keep_logs=keep_logs)[0]


def run_layouts(fn_path: str, args: Sequence[Any] = (), kwargs: dict | None = None, *,
                num_processes: int = 2, devices_per_process: int = 2,
                timeout: float = DEFAULT_TIMEOUT, grace: float = 5.0,
                single_args: Sequence[Any] | None = None, single_kwargs: dict | None = None,
                env: dict[str, str] | None = None, keep_logs: bool = True):
  """(results of the N processes, result of 1 process with N*K devices), both runs started
  at once (their jax imports overlap). `single_args` / `single_kwargs` replace the arguments
  of the 1-process run (e.g. another workdir)."""
  tmpdir = tempfile.mkdtemp(prefix='bvs_multiprocess_')
  multi = _Run(f'{num_processes}x{devices_per_process}', fn_path, args, kwargs, num_processes,
               devices_per_process, tmpdir, env)
  single = _Run(f'1x{num_processes * devices_per_process}', fn_path,
                args if single_args is None else single_args,
                kwargs if single_kwargs is None else single_kwargs, 1,
                num_processes * devices_per_process, tmpdir, env)
  multi_results, single_results = _run_all([multi, single], timeout, grace, tmpdir, keep_logs)
  return multi_results, single_results[0]


# ----- The worker side -----


def to_numpy(tree):
  """jax Arrays -> numpy (gathering those that span other processes), keys -> key data."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def convert(x):
    if not isinstance(x, jax.Array):
      return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(convert, tree)


def _import(fn_path: str):
  import importlib  # pylint: disable=g-import-not-at-top
  module, _, name = fn_path.partition(':')
  if not name:
    raise ValueError(f'Expected "module:function", got {fn_path!r}.')
  fn = importlib.import_module(module)
  for part in name.split('.'):
    fn = getattr(fn, part)
  return fn


def _every_process_writes_the_cache():
  """jax writes persistent-cache entries from process 0 only (against write contention on
  shared filesystems such as GCS). Here every process of a job has its own cache keys (module
  doc), so process 1 would recompile every program in every run of every test; let it write
  its own entries too. Best effort: jax's private API, left alone if it has moved."""
  try:
    from jax._src import compiler  # pylint: disable=g-import-not-at-top
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    write = compiler._cache_write  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return

  def write_from_any_process(*args, **kwargs):
    state = distributed.global_state
    process_id, state.process_id = state.process_id, 0  # The one check _cache_write makes.
    try:
      return write(*args, **kwargs)
    finally:
      state.process_id = process_id

  compiler._cache_write = write_from_any_process  # pylint: disable=protected-access


def _worker_main(argv=None):
  parser = argparse.ArgumentParser()
  for flag in ('spec', 'result'):
    parser.add_argument(f'--{flag}', required=True)
  for flag in ('process_id', 'num_processes', 'devices_per_process', 'port'):
    parser.add_argument(f'--{flag}', type=int, required=True)
  a = parser.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # jax 0.10's default too.
  if a.num_processes > 1:
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{a.port}',
                               num_processes=a.num_processes, process_id=a.process_id,
                               initialization_timeout=120)
  if a.num_processes > 1 and os.environ.get('BVS_EVERY_PROCESS_WRITES_CACHE', '1') == '1':
    _every_process_writes_the_cache()
  want = (a.process_id, a.num_processes, a.devices_per_process,
          a.num_processes * a.devices_per_process)
  got = (jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
  if got != want:
    raise RuntimeError(f'Expected (process, processes, local devices, devices) {want}, got {got}.')
  with open(a.spec, 'rb') as f:
    fn_path, args, kwargs = pickle.load(f)
  result = to_numpy(_import(fn_path)(*args, **kwargs))
  tmp = a.result + '.tmp'
  with open(tmp, 'wb') as f:
    pickle.dump(result, f)
  os.replace(tmp, a.result)
  if a.num_processes > 1:
    jax.distributed.shutdown()  # A barrier: no process leaves while others still need it.


if __name__ == '__main__':
  try:
    _worker_main()
  except BaseException:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    sys.stderr.flush()
    # Not sys.exit: jax.distributed's exit hook would wait for the other processes (which
    # wait for this one) in its shutdown barrier. Fail now; the harness stops the rest.
    os._exit(1)  # pylint: disable=protected-access
