"""End-to-end trainer: learns, 8 devices == 1 device, bit-exact resume, SIGTERM, bad config."""
import math
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from big_vision_style import train
from experiments.baseline import fashion_mnist as baseline_config
from tests.helpers import override
from tests.helpers import read_rows as _rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  return override(baseline_config.get_config('runlocal'), **overrides)


def test_twenty_steps_lower_the_loss_and_log_everything(tmp_path):
  final, _ = train.train(_config(), str(tmp_path))
  rows = _rows(tmp_path)
  assert [r['step'] for r in rows] == [5, 10, 15, 20]
  for key in ('step', 'examples_seen', 'train/loss', 'flops/learner', 'flops/total', 'wall_s',
              'eval/test/accuracy'):
    assert key in rows[-1], key
  # The zero-initialised head starts at exactly ln(10); 20 steps must beat it clearly.
  assert final['eval/test/loss'] < math.log(10) - 0.03
  assert final['eval/test/accuracy'] > 0.15  # Chance is 0.10.
  assert rows[-1]['examples_seen'] == 20 * 32
  assert rows[-1]['flops/learner'] == pytest.approx(4 * rows[0]['flops/learner'])
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(tmp_path))


def test_eight_devices_match_one_device(tmp_path):
  final8, state8 = train.train(_config(), str(tmp_path / 'eight'))
  final1, state1 = train.train(_config(mesh_devices=1), str(tmp_path / 'one'))
  losses8 = [r['train/loss'] for r in _rows(tmp_path / 'eight')]
  losses1 = [r['train/loss'] for r in _rows(tmp_path / 'one')]
  np.testing.assert_allclose(losses8, losses1, rtol=1e-4)
  assert final8['eval/test/accuracy'] == pytest.approx(final1['eval/test/accuracy'], abs=2e-3)
  # About the same global FLOPs however the step is partitioned; not exactly, because each of
  # the 8 devices also runs the (replicated) optimizer update, which for this 20k-parameter
  # smoke model is about 5% of the step.
  assert final8['flops/learner'] == pytest.approx(final1['flops/learner'], rel=0.1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
               state8['learner']['params'], state1['learner']['params'])


def test_rerunning_a_finished_run_returns_its_final_metrics(tmp_path):
  final, _ = train.train(_config(total_steps=5, log_training_steps=5), str(tmp_path))
  again, _ = train.train(_config(total_steps=5, log_training_steps=5), str(tmp_path))
  assert again == {k: v for k, v in final.items() if k != 'wall_s'} | {'wall_s': again['wall_s']}
  assert 'eval/test/accuracy' in again and again['step'] == 5


def test_train_once_marks_only_finished_runs(tmp_path, monkeypatch):
  partial, _ = train.train(_config(), str(tmp_path), stop_after_step=3)
  assert partial['preempted'] and partial['step'] == 3
  # A sweep that is asked to stop mid-run must not record the run as finished.
  monkeypatch.setattr(train, 'train', lambda config, workdir: (partial, None))
  with pytest.raises(SystemExit) as stopped:
    train.train_once(_config(), str(tmp_path))
  assert stopped.value.code == train.EXIT_PREEMPTED  # Sweeps and tpu/ scripts rerun on it.
  assert not os.path.exists(tmp_path / 'final.json')


def test_interrupted_and_resumed_run_is_bit_exact(tmp_path):
  _, uninterrupted = train.train(_config(), str(tmp_path / 'a'))
  partial, _ = train.train(_config(), str(tmp_path / 'b'), stop_after_step=13)
  assert partial['step'] == 13
  _, resumed = train.train(_config(), str(tmp_path / 'b'))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(uninterrupted),
               jax.device_get(resumed))
  # The resumed run re-did steps 14..15 after the step-13 checkpoint: no duplicate rows, and
  # every logged number (cumulative FLOPs included) equals the uninterrupted run's.
  rows_a, rows_b = _rows(tmp_path / 'a'), _rows(tmp_path / 'b')
  assert [r['step'] for r in rows_b] == [5, 10, 15, 20]
  for ra, rb in zip(rows_a, rows_b):
    for key in ra:
      if key != 'wall_s':
        assert ra[key] == rb[key], key


def test_batch_not_divisible_by_device_count(tmp_path):
  config = _config()
  with config.unlocked():
    config.input.batch_size = 12
  with pytest.raises(ValueError, match='batch_size=12 is not divisible by the 8 devices'):
    train.train(config, str(tmp_path))
  config = _config()
  with config.unlocked():
    config.evals.test.batch_size = 1004
  with pytest.raises(ValueError, match='evals.test.batch_size=1004 is not divisible'):
    train.train(config, str(tmp_path))


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_exits_with_the_rerun_code(tmp_path, sig):
  """A preempted TPU VM gets SIGTERM, a user presses Ctrl-C: the trainer saves before it exits,
  with EXIT_PREEMPTED (75), which says "stopped early, rerun to resume" (not 0: not finished)."""
  workdir = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'big_vision_style.train', '--workdir', str(workdir),
         '--config', os.path.join(REPO, 'experiments/baseline/fashion_mnist.py') +
         ':runlocal', '--config.total_steps=100000', '--config.ckpt_steps=100000']
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while not (workdir / 'metrics.jsonl').exists():  # Training is under way.
      assert proc.poll() is None, proc.stderr.read()
      assert time.time() < deadline
      time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == train.EXIT_PREEMPTED, stderr
  saved = [int(d) for d in os.listdir(workdir / 'checkpoints') if d.isdigit()]
  assert saved and 0 < max(saved) < 100000
  assert signal.Signals(sig).name in stderr
