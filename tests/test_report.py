"""The results report: table, raw numbers and plot from a metrics.jsonl."""
import json

import pytest

from big_vision_style.tools import report


def test_report_writes_table_json_and_png(tmp_path):
  rows = [{'step': s, 'examples_seen': 32 * s, 'flops/learner': 1e9 * s, 'flops/total': 1e9 * s,
           'wall_s': 0.1 * s, 'train/loss': 2.0 / s} for s in (5, 10, 15, 20)]
  rows[1].update({'eval/test/accuracy': 0.5, 'eval/test/loss': 1.2})
  rows[3].update({'eval/test/accuracy': 0.7, 'eval/test/loss': 0.9})
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  table = report.report(str(tmp_path), str(tmp_path / 'out'))
  assert table.count('\n') == 3 and '| 20 | 640 |' in table and '0.7000' in table
  saved = json.loads((tmp_path / 'out' / 'curve.json').read_text())
  assert [r['step'] for r in saved['rows']] == [10, 20]
  assert (tmp_path / 'out' / 'accuracy.png').read_bytes()[:4] == b'\x89PNG'


def test_report_without_evaluations_is_a_clear_error(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text(json.dumps({'step': 1, 'train/loss': 2.0}) + '\n')
  with pytest.raises(ValueError, match='no rows with eval/test/accuracy'):
    report.report(str(tmp_path), str(tmp_path))
