"""The paired joint-vs-independent study's statistics (experiments/jest/joint_vs_independent.py),
on hand-made curves."""
import json

import numpy as np
import pytest

from experiments import analysis
from experiments.jest import joint_vs_independent as jvi


def _curve(zeroshot, retrieval, corrupted=0.1):
  return {'step': [100, 200], 'zeroshot': [0.1, zeroshot], 'i2t': [0.0, retrieval],
          't2i': [0.0, retrieval], 'flops': [1.0, 2.0], 'corrupted_selected': [0.3, corrupted]}


# Final zero-shot per seed: joint, independent (learnability at f = 0.8 and 0.9).
FINALS = {'learnability_joint_f0.8': [0.60, 0.62, 0.64], 'learnability_independent_f0.8':
          [0.61, 0.60, 0.61], 'learnability_joint_f0.9': [0.66, 0.63, 0.70],
          'learnability_independent_f0.9': [0.60, 0.62, 0.61]}
SEEDS = ('3', '4', '10')


@pytest.fixture
def curves():
  return {name: {s: _curve(v, v / 2) for s, v in zip(SEEDS, values)}
          for name, values in FINALS.items()}


def test_differences_are_paired_by_seed_and_the_gap_growth_too(curves):
  summary = jvi.summarize(curves)
  low = summary['pairs']['learnability_f0.8']['zeroshot']
  want = np.subtract(FINALS['learnability_joint_f0.8'], FINALS['learnability_independent_f0.8'])
  assert low['mean'] == pytest.approx(want.mean())
  assert low['std'] == pytest.approx(want.std(ddof=1))
  half = analysis.t_quantile(0.95, 2) * want.std(ddof=1) / np.sqrt(3)
  assert (low['low'], low['high']) == pytest.approx((want.mean() - half, want.mean() + half))
  assert low['joint_ahead'] == 2 and low['seeds'] == list(SEEDS)  # Numeric seed order.
  # Retrieval: the mean of I2T and T2I (both v / 2 here).
  assert summary['pairs']['learnability_f0.8']['retrieval']['mean'] == pytest.approx(
      want.mean() / 2)
  high = np.subtract(FINALS['learnability_joint_f0.9'], FINALS['learnability_independent_f0.9'])
  growth = summary['gap_growth_f0.9_minus_f0.8']['learnability']['zeroshot']
  assert growth['mean'] == pytest.approx((high - want).mean())
  assert growth['std'] == pytest.approx((high - want).std(ddof=1))
  assert 'easy_reference' not in summary['gap_growth_f0.9_minus_f0.8']
  # The mean over the run's evaluations (0.3 then 0.1).
  assert summary['pairs']['learnability_f0.9']['corrupted_selected']['joint']['mean'] == (
      pytest.approx(0.2))


def test_a_seed_one_run_lacks_is_left_out_of_its_pair(curves):
  del curves['learnability_independent_f0.8']['4']
  entry = jvi.summarize(curves)['pairs']['learnability_f0.8']
  assert entry['zeroshot']['seeds'] == ['3', '10'] and entry['zeroshot']['n'] == 2


def test_the_results_folder_regenerates_from_its_curves(curves, tmp_path):
  out = tmp_path / 'out'
  first = jvi.write(str(out), curves, 'python -m experiments.jest.joint_vs_independent')
  assert (out / 'joint_vs_independent.png').stat().st_size > 0
  assert 'learnability' in (out / 'table.md').read_text()
  jvi.main(['--regenerate_from', str(out), '--out', str(tmp_path / 'again')])
  again = json.loads((tmp_path / 'again' / 'summary.json').read_text())
  assert again == json.loads(json.dumps(first))
  assert (tmp_path / 'again' / 'table.md').read_text() == (out / 'table.md').read_text()
