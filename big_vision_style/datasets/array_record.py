"""Image classification data in ArrayRecord files of serialized `tf.train.Example`s.

Each record is a `tf.train.Example` with features `image` (encoded PNG or JPEG bytes) and `label`
(int64 class index); `write_examples` writes such files (group_size:1, which grain needs for fast
random access). Config:

  config.data.name = 'array_record'
  config.data.paths = {'train': ['/data/x/train-*.array_record'], 'test': '/data/x/test-*'}
  #   or a single pattern with a placeholder: '/data/x/{split}-*.array_record'
  config.data.num_classes = 100

Splits and ids follow fashion_mnist: `train` / `holdout` are disjoint slices of the official
`train` files, `test` is the official `test` files. The id of an official train record is its
index in the concatenation of the (sorted) train files; a test record's id is
len(official train) + its index. Records are decoded lazily, so huge datasets are fine.

The lazy index-mapped split (`base.LazySource`) is shared with `tfds_source`.
"""
from __future__ import annotations

import functools
import glob
import io
from typing import Any, Callable, Sequence

import numpy as np

from big_vision_style.datasets import base

OFFICIAL_SPLITS = ('train', 'test')


def decode_image(data: bytes, channels: int | None = None) -> np.ndarray:
  """Encoded PNG/JPEG bytes -> uint8 [H, W, C].

  Without `channels`, grayscale stays 1-channel and anything else becomes RGB. Datasets that mix
  grayscale and colour files (ImageNet has a few) need `channels` so that batches stack.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(data)) as img:
    if channels == 1:
      mode = 'L'
    elif channels == 3:
      mode = 'RGB'
    elif channels is None:
      mode = 'L' if img.mode in ('1', 'L') else 'RGB'
    else:
      raise ValueError(f'image_channels={channels} is not supported; use 1, 3 or None.')
    array = np.asarray(img.convert(mode) if img.mode != mode else img, dtype=np.uint8)
  return array[..., None] if array.ndim == 2 else array


def _example_pb2():
  # TensorFlow is imported only when a record is first read or written: importing the package
  # (e.g. to list sources or build configs) should not pay TF's multi-second import.
  from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top
  return example_pb2


def decode_example(record: bytes, image_key: str = 'image', label_key: str = 'label',
                   channels: int | None = None) -> tuple[np.ndarray, int]:
  """A serialized tf.train.Example -> (image uint8 [H, W, C], label)."""
  features = _example_pb2().Example.FromString(record).features.feature
  for key, kind in ((image_key, 'bytes_list'), (label_key, 'int64_list')):
    if key not in features or not getattr(features[key], kind).value:
      raise ValueError(f'tf.train.Example has no {kind} feature {key!r} (it has '
                       f'{sorted(features)}); expected encoded image bytes under {image_key!r} '
                       f'and an int64 class under {label_key!r}.')
  image = decode_image(features[image_key].bytes_list.value[0], channels)
  return image, int(features[label_key].int64_list.value[0])


def encode_example(image, label: int) -> bytes:
  """(uint8 [H, W] / [H, W, C] array, or already-encoded bytes; label) -> serialized Example."""
  if not isinstance(image, bytes):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    array = np.asarray(image)
    if array.dtype != np.uint8:
      raise ValueError(f'Images must be uint8, got {array.dtype}.')
    if array.ndim == 3 and array.shape[-1] == 1:
      array = array[..., 0]  # PIL has no [H, W, 1] mode.
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format='PNG')  # Lossless, so round trips are exact.
    image = buf.getvalue()
  example_pb2 = _example_pb2()
  example = example_pb2.Example()
  example.features.feature['image'].bytes_list.value.append(image)
  example.features.feature['label'].int64_list.value.append(int(label))
  return example.SerializeToString()


def write_examples(path: str, images, labels) -> int:
  """Writes (image, label) pairs as tf.train.Examples to one ArrayRecord file; returns the count.

  `images` are uint8 arrays (stored as PNG) or encoded PNG/JPEG bytes (stored as is, e.g. to
  convert JPEG datasets without re-encoding). Shard big datasets over several files yourself
  (e.g. `train-00000-of-00064.array_record`) and list them with a glob pattern.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if len(images) != len(labels):
    raise ValueError(f'Mismatched lengths: {len(images)} images, {len(labels)} labels.')
  # group_size:1 makes every record individually addressable; grain logs an error and reads
  # slowly otherwise.
  writer = array_record_module.ArrayRecordWriter(str(path), 'group_size:1')
  try:
    for image, label in zip(images, labels):
      writer.write(encode_example(image, label))
  finally:
    writer.close()
  return len(labels)


def _glob(pattern: str) -> list[str]:
  # gs:// and friends: only TF's file system layer can list them. Reading them also needs an
  # array_record build with GCS support (google/array_record#120); a gcsfuse mount always works.
  if '://' in pattern:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return sorted(tf.io.gfile.glob(pattern))
  return sorted(glob.glob(pattern))


def resolve_paths(paths, official_split: str) -> list[str]:
  """The files of an official split, in the order that defines ids.

  Files of one pattern are sorted by name (shard order); patterns keep the order given.
  """
  if isinstance(paths, str):
    if '{split}' not in paths:
      raise ValueError(
          f'config.data.paths={paths!r} is a single pattern without a {{split}} placeholder, so '
          "train and test would be the same files; use e.g. '/data/{split}-*.array_record' or a "
          "dict {'train': [...], 'test': [...]}.")
    patterns = [paths.format(split=official_split)]
  else:
    if official_split not in paths:
      raise ValueError(f'config.data.paths has no {official_split!r} entry (it has '
                       f'{sorted(paths)}); ArrayRecord sources need both train and test files.')
    patterns = paths[official_split]
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  files = []
  for pattern in patterns:
    matched = _glob(str(pattern))
    if not matched:
      raise FileNotFoundError(
          f'No ArrayRecord files match {pattern!r} (official {official_split} split). Check '
          'config.data.paths; array_record.write_examples converts in-memory data.')
    files += [f for f in matched if f not in files]
  return files


def _open(files: list[str]):
  import grain  # pylint: disable=g-import-not-at-top
  return grain.sources.ArrayRecordDataSource(files)


def make_source(split: str, paths, num_classes: int, holdout_size: int = 10_000,
                split_seed: int = 0, label_noise: float = 0.0, noise_seed: int = 0,
                image_key: str = 'image', label_key: str = 'label',
                image_channels: int | None = None, **unused) -> base.LazySource:
  del unused  # Keys meant for other sources (kept so one data config can switch sources).
  base.check_split_name(split)
  if not num_classes or num_classes < 2:
    raise ValueError(f'config.data.num_classes={num_classes!r}: ArrayRecord files do not record '
                     'the number of classes, so it must be set (>= 2).')
  train_records = _open(resolve_paths(paths, 'train'))
  if split == 'test':
    records = _open(resolve_paths(paths, 'test'))
    indices = np.arange(len(records))
    ids = len(train_records) + indices
  else:
    records = train_records
    indices = ids = base.select_split(split, len(records), holdout_size, split_seed)
  noise = (base.LabelNoise.make(ids, num_classes, label_noise, noise_seed)
           if label_noise else None)
  decode = functools.partial(decode_example, image_key=image_key, label_key=label_key,
                             channels=image_channels)
  return base.LazySource(records, indices, ids, num_classes, decode, noise,
                         name=f'array_record:{split}')

