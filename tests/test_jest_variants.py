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


def _fake_run(workdir, zeroshot, every_step_loss=None, corrupted=None):
  """A run's metrics.jsonl as the trainer writes it: evaluations every 100 of 800 steps (and,
  for the beta2 runs, every step's training loss)."""
  workdir.mkdir(parents=True)
  rows = []
  for k, acc in enumerate(zeroshot):
    step = 100 * (k + 1)
    row = {'step': step, 'eval/zeroshot/accuracy': acc, 'eval/retrieval/i2t_recall_at_1': 0.04,
           'eval/retrieval/t2i_recall_at_1': 0.04, 'flops/total_pretrained_reference': 1e9 * step}
    if corrupted is not None:
      row['selection/corrupted_selected'] = corrupted
    rows.append(row)
  for step, loss in enumerate(every_step_loss or [], start=1):
    rows.append({'step': step, 'train/loss': loss, 'train/grad_norm': 1.0})
  with open(workdir / 'metrics.jsonl', 'w') as f:
    f.write('\n'.join(json.dumps(r) for r in rows) + '\n')


def test_variants_analysis_writes_its_table_and_figure(tmp_path):
  main, var = tmp_path / 'main', tmp_path / 'variants'
  ramp = lambda top, n=8: list(np.linspace(0.05, top, n))
  for seed in (0, 1):
    runs = lambda root, name: root / 'runs' / f'{name}_s{seed}'
    _fake_run(runs(main, 'uniform_3x'), ramp(0.13, 24))
    _fake_run(runs(main, 'uniform'), ramp(0.12))
    for policy in ('easy_reference', 'learnability'):
      for f in variants.FILTER_RATIOS:
        _fake_run(runs(main, f'{policy}_joint_f{f}'), ramp(0.15), corrupted=0.2)
    _fake_run(runs(main, 'learnability_independent_f0.8'), ramp(0.15), corrupted=0.2)
    for f in variants.FILTER_RATIOS:  # Never reaches uniform_3x's 13%.
      _fake_run(runs(var, f'hard_learner_joint_f{f}'), ramp(0.11), corrupted=0.7)
    _fake_run(runs(var, 'uniform_softmax'), ramp(0.135))
    for method in ('joint', 'independent'):
      _fake_run(runs(var, f'softmax_learnability_{method}_f0.8'), ramp(0.15), corrupted=0.25)
    for b2 in variants.BETA2:
      loss = list(np.linspace(6.0, 3.0, 800))
      if b2 == 0.999:
        loss[500] *= 2  # One spike.
      _fake_run(runs(var, f'learnability_joint_f0.8_b2_{b2}'), ramp(0.15), loss, 0.2)
  summary = variants.analyze({'main': str(main), 'variants': str(var)}, [0, 1])
  hard = summary['hard_learner']['hard_learner']['0.9']
  assert hard['final']['mean'] == pytest.approx(0.11)
  assert hard['corrupted_selected']['mean'] == pytest.approx(0.7)
  assert hard['iterations_fraction_uniform_3x'] == {'mean': None, 'std': None, 'n': 0, 'of': 2}
  # 15% at 800 steps on a straight ramp from 5%: first >= 13% at step 700, of a 2,400-step run.
  learn = summary['hard_learner']['learnability']['0.8']
  assert learn['iterations_fraction_uniform_3x']['mean'] == pytest.approx(700 / 2400)
  soft = summary['softmax']['joint']['softmax']
  assert soft['final']['mean'] == pytest.approx(0.15)
  beta2 = summary['beta2']
  assert beta2['0.999']['steps_rising_over_25pct']['mean'] == 1
  assert beta2['0.95']['steps_rising_over_25pct']['mean'] == 0
  variants.write_table(summary, str(tmp_path / 'table.md'))
  table = (tmp_path / 'table.md').read_text()
  assert '| hard_learner | 0.9 | 11.00 ± 0.00 |' in table and 'never (2 seeds)' in table
  variants.plot(summary, str(tmp_path / 'variants.png'))
  assert (tmp_path / 'variants.png').stat().st_size > 10_000
