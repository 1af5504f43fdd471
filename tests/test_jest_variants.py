"""The JEST variant study's analysis (experiments/jest/variants.py) on hand-made logs."""
import json

import numpy as np
import pytest

from experiments.jest import variants


def _write_log(tmp_path, losses, step_stride=1):
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    for k, loss in enumerate(losses):
      f.write(json.dumps({'step': 1 + k * step_stride, 'train/loss': loss,
                          'train/grad_norm': 2 * loss}) + '\n')


def test_loss_spikes_finds_the_one_spike_after_warm_up(tmp_path):
  losses = list(np.linspace(6.0, 3.0, 100))
  losses[10] = 50.0  # In warm-up: ignored.
  losses[70] *= 1.5  # 39% above the previous 20 steps' median, which the falling trend lifts.
  _write_log(tmp_path, losses)
  got = variants.loss_spikes(str(tmp_path), warmup=40)
  assert got['max_rise'] == pytest.approx(losses[70] / np.median(losses[50:70]) - 1)
  assert 0.3 < got['max_rise'] < 0.5 and got['steps_rising_over_25pct'] == 1
  assert got['max_grad_norm'] == pytest.approx(2 * losses[70])


def test_loss_spikes_refuses_a_run_that_did_not_log_every_step(tmp_path):
  _write_log(tmp_path, [3.0] * 50, step_stride=50)
  with pytest.raises(ValueError, match='log_every=1'):
    variants.loss_spikes(str(tmp_path), warmup=0)
