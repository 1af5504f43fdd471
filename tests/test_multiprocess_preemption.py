"""Preemption across hosts: a signal to one of 2 processes stops both after the same step with
one complete checkpoint, and the rerun resumes exactly (tests/multiprocess.py runs the
underscore-prefixed functions below). Its own module, apart from test_multiprocess_methods.py,
so that a parallel test run (pytest -n) can run the two at once.
"""
import os
import signal
import threading
import time

import jax
import numpy as np
import pytest

from tests import multiprocess
from tests.helpers import few_steps
from tests.helpers import read_rows

TOTAL, SIGNAL_AFTER = 30, 4


def _baseline(workdir, steps=TOTAL):
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  from experiments.baseline import fashion_mnist  # pylint: disable=g-import-not-at-top
  return train.train(few_steps(fashion_mnist.get_config('runlocal'), steps=steps), workdir)


def _preempted_run(workdir, sig):
  """Process 1 signals itself once process 0 has logged step SIGNAL_AFTER."""
  def watch():
    path = os.path.join(workdir, 'metrics.jsonl')
    while not (os.path.exists(path) and len(open(path).readlines()) >= SIGNAL_AFTER):
      time.sleep(0.05)
    os.kill(os.getpid(), sig)

  if jax.process_index() == 1:
    threading.Thread(target=watch, daemon=True).start()
  final, _ = _baseline(workdir)
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  return {'final': final, 'checkpoints': steps}


def _resumed_run(workdir):
  final, state = _baseline(workdir)
  return {'final': final, 'params': state['learner']['params']}


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_one_host_stops_every_host_after_the_same_step(tmp_path, sig):
  workdir = str(tmp_path / 'run')
  stopped = multiprocess.run_processes('tests.test_multiprocess_preemption:_preempted_run',
                                       (workdir, sig), num_processes=2, devices_per_process=2,
                                       timeout=300)
  steps = {r['final']['step'] for r in stopped}
  assert len(steps) == 1, stopped  # Both hosts stopped after the same step...
  step, = steps
  assert all(r['final']['preempted'] for r in stopped)
  assert SIGNAL_AFTER <= step < TOTAL
  assert stopped[0]['checkpoints'][-1] == step  # ... with one complete checkpoint there.
  resumed = multiprocess.run_processes('tests.test_multiprocess_preemption:_resumed_run',
                                       (workdir,), num_processes=2, devices_per_process=2,
                                       timeout=300)
  rows = read_rows(workdir)
  assert [r['step'] for r in rows] == list(range(1, TOTAL + 1))  # No row lost or repeated.
  assert resumed[0]['final']['step'] == TOTAL and 'preempted' not in resumed[0]['final']
  if sig == signal.SIGTERM:  # Resume is exact: the same parameters as an uninterrupted run.
    straight = multiprocess.run_processes('tests.test_multiprocess_preemption:_resumed_run',
                                          (str(tmp_path / 'straight'),), num_processes=2,
                                          devices_per_process=2, timeout=300)
    jax.tree.map(np.testing.assert_array_equal, resumed[0]['params'], straight[0]['params'])
