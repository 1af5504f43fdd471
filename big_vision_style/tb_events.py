"""TensorBoard scalars written without importing TensorFlow.

clu's SummaryWriter goes through `tf.summary`, and importing TensorFlow costs about 6 s of CPU in
every process that trains: every host of a pod slice, every worker of a local `--parallel` sweep,
every process of the multi-process tests. A scalar event file needs none of it: it is a sequence
of `Event` protos (tensorboard's own copies of them) in TFRecord framing (length, masked CRC32C
of the length, data, masked CRC32C of the data; tensorboard's pure-Python record writer). This
writes that for local workdirs. Object-store workdirs (gs://) keep clu's writer, whose file
system layer is TensorFlow's (TPU VMs import it anyway, for TFDS).

TensorBoard reads both alike (tests/test_metrics_writer.py reads one back through its
EventAccumulator): a scalar is a `simple_value`, which TensorBoard's data loader turns into its
scalar plugin's tensors.
"""
from __future__ import annotations

import os
import socket
import time

# Neither import touches TensorFlow (tensorboard.compat.tf would: it imports TensorFlow when it is
# installed, so tensorboard's EventFileWriter is not used).
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer import record_writer


class EventFileWriter:
  """Scalars to `<logdir>/events.out.tfevents.<time>.<host>.<pid>.<n>.v2`: a new file per
  writer, as TensorFlow's writer does (a resumed run appends a file; TensorBoard merges them)."""

  _count = 0  # Files opened by this process: two writers in one second get distinct names.

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    EventFileWriter._count += 1
    name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.'
            f'{EventFileWriter._count}.v2')
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, 'wb')  # pylint: disable=consider-using-with
    self._records = record_writer.RecordWriter(self._file)
    # The first record says which format the rest is in.
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event):
    self._records.write(event.SerializeToString())

  def write_scalars(self, step: int, scalars: dict):
    if not scalars:
      return
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values)))

  def flush(self):
    self._file.flush()

  def close(self):
    if not self._file.closed:
      self._file.close()


class NullWriter:
  """Hosts other than process 0 write no events."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def flush(self):
    pass

  def close(self):
    pass


def writer(logdir: str, *, is_main: bool):
  """The event writer of a run's workdir: this module's for local paths, clu's (TensorFlow's
  file systems) for object stores."""
  if not is_main:
    return NullWriter()
  if '://' in logdir:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TF: slow)
    return metric_writers.SummaryWriter(logdir)
  return EventFileWriter(logdir)
