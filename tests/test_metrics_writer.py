"""TensorBoard events without TensorFlow (big_vision_style/tb_events.py): TensorBoard reads them
back, and writing them imports no TensorFlow."""
import os
import subprocess
import sys

import numpy as np

from big_vision_style import metrics_writer
from big_vision_style import tb_events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scalars(logdir):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(str(logdir))
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_tensorboard_reads_back_every_scalar_of_every_step(tmp_path):
  writer = metrics_writer.MetricsWriter(str(tmp_path), total_steps=2)
  writer.write(1, {'train/loss': 2.5, 'train/lr': 1e-3, 'note': 'text is not a scalar'})
  writer.write(2, {'train/loss': 1.25, 'train/lr': 2e-3, 'examples_seen': 64})
  writer.close()
  got = _scalars(tmp_path)
  assert sorted(got) == ['examples_seen', 'train/loss', 'train/lr']
  assert got['train/loss'] == [(1, 2.5), (2, 1.25)]
  assert got['examples_seen'] == [(2, 64.0)]
  np.testing.assert_allclose([v for _, v in got['train/lr']], [1e-3, 2e-3], rtol=1e-7)


def test_a_resumed_run_adds_a_file_and_tensorboard_merges_them(tmp_path):
  for step in (1, 2):
    w = tb_events.writer(str(tmp_path), is_main=True)
    w.write_scalars(step, {'train/loss': float(step)})
    w.close()
  assert len([n for n in os.listdir(tmp_path) if n.startswith('events.out.tfevents')]) == 2
  assert _scalars(tmp_path)['train/loss'] == [(1, 1.0), (2, 2.0)]


def test_other_hosts_write_no_events(tmp_path):
  w = tb_events.writer(str(tmp_path / 'events'), is_main=False)
  w.write_scalars(1, {'train/loss': 1.0})
  w.close()
  assert not (tmp_path / 'events').exists()


def test_writing_metrics_imports_no_tensorflow(tmp_path):
  """The point of tb_events: importing TensorFlow costs seconds of CPU in every process."""
  code = ('import sys; from big_vision_style import metrics_writer; '
          f'w = metrics_writer.MetricsWriter({str(tmp_path)!r}, total_steps=1); '
          "w.write(1, {'train/loss': 1.0}); w.close(); "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu')))")
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                       check=True, env={**os.environ, 'PYTHONPATH': REPO})
  assert out.stdout.strip() == '[]', out.stdout
  assert _scalars(tmp_path)['train/loss'] == [(1, 1.0)]
