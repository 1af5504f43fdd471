"""experiments/jest/flexi_cost.py: Flexi-JEST's per-iteration cost taken apart.

The formula at inputs whose answer is known by hand (no compile), the paper model's analytic
forwards, and, on the `runlocal` Flexi config, the measured pieces against the compiled whole
step (XLA cost analysis; about ten small compiles, nothing run).
"""
import dataclasses
import json
import os

import numpy as np
import pytest

from experiments.jest import flexi_cost


def test_formula_gives_the_papers_figures():
  # The 72% cut taken on a whole pair's forward: scoring 5 x 0.28, training 3 x (0.5 + 0.14).
  counted = flexi_cost.Proportions(text_share=0.0, coarse_ratio=0.28)
  assert flexi_cost.flexi_ratio(counted) == pytest.approx((5 * 0.28 + 3 * 0.64) / 3)
  assert flexi_cost.flexi_ratio(counted) == pytest.approx(1.1067, abs=1e-4)
  # JEST with the cached reference: F (B/b + 3) / 3F, and F (B/b + 2) / 3F reused (233%).
  assert flexi_cost.jest_ratio(counted) == pytest.approx(8 / 3)
  assert flexi_cost.jest_ratio(counted, reuse=True) == pytest.approx(7 / 3)


def test_formula_limits_and_a_hand_computed_case():
  p = flexi_cost.Proportions(text_share=0.3, coarse_ratio=0.4, overhead=0.05)
  # No saving at the coarse patch (c = 1), or nothing but text (t = 1): JEST's cost.
  for same in (dataclasses.replace(p, coarse_ratio=1.0), dataclasses.replace(p, text_share=1.0)):
    assert flexi_cost.flexi_ratio(same) == pytest.approx(flexi_cost.jest_ratio(p))
  # Reusing everything (h = 1, c = 1): m - 1 forwards of training, as reused JEST.
  whole = dataclasses.replace(p, coarse_ratio=1.0, coarse_half=1.0)
  assert flexi_cost.flexi_ratio(whole, reuse=True) == pytest.approx(
      flexi_cost.jest_ratio(p, reuse=True))
  # g = 0.3 + 0.7 * 0.4 = 0.58: (5 * 0.58 + 3 * (0.5 + 0.29)) / 3 + 0.05.
  assert p.coarse_pair == pytest.approx(0.58)
  assert flexi_cost.flexi_ratio(p) == pytest.approx((2.9 + 2.37) / 3 + 0.05)


def test_paper_model_forwards():
  pp = flexi_cost.paper_proportions(64)
  # ViT-B/16 at 256 px: 12 x (8 N D^2 + 4 N^2 D + 4 N D M) at N = 256, the patch embedding
  # 2 x 256^2 x 3 x 768 and the 768 -> 768 head; at patch 32, N = 64; the text tower at L = 64
  # has the coarse image's encoder and head, no patch embedding.
  assert pp['image_native'] == 12 * 3_825_205_248 + 301_989_888 + 1_179_648
  assert pp['image_coarse'] == 12 * 918_552_576 + 301_989_888 + 1_179_648
  assert pp['text'] == 12 * 918_552_576 + 1_179_648
  q = flexi_cost.Proportions(**pp['proportions'])
  assert q.text_share == pytest.approx(0.1926, abs=1e-4)
  assert q.coarse_ratio == pytest.approx(0.2451, abs=1e-4)
  assert flexi_cost.flexi_ratio(q) == pytest.approx(1.346, abs=1e-3)


def test_pieces_add_up_to_the_compiled_step():
  config = flexi_cost.config_of('flexi', runlocal=True)
  whole = flexi_cost.whole_step(config, categories=False)['flops']
  pieces = flexi_cost.pieces(config, per_example=False)
  # What is left is the gather and the logged learnability of two b x b sub-batches.
  assert flexi_cost.pieces_sum(pieces) == pytest.approx(whole, rel=0.02)
  assert flexi_cost.pieces_sum(pieces) < whole
  # The resize is counted in both coarse forwards; without taking one off, the sum overshoots.
  assert pieces['resize_per_call'] > 0
  assert flexi_cost.pieces_sum(pieces) + pieces['resize_per_call'] > whole


def test_committed_report_regenerates_from_its_json(tmp_path):
  """results/jest/flexi_cost.md and .png are what the committed flexi_cost.json gives."""
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  committed = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'results', 'jest')
  with open(os.path.join(committed, 'flexi_cost.json')) as f:
    result = json.load(f)
  flexi_cost.write_report(str(tmp_path), result, os.path.join(committed, 'summary.json'))
  for name in ('flexi_cost.md',):
    with open(tmp_path / name) as got, open(os.path.join(committed, name)) as want:
      assert got.read() == want.read()
  got, want = (image.imread(os.path.join(d, 'flexi_cost.png')) for d in (tmp_path, committed))
  assert got.shape == want.shape and np.array_equal(got, want)
  # The committed decomposition closes: pieces within 1% of the step, formula within 1 point.
  local = result['variants']['local']
  assert abs(local['rest_fraction']) < 0.01
  assert local['formula_percent'] == pytest.approx(local['percent_of_iid'], abs=1.0)
