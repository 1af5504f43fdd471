"""Any TFDS image classification dataset prepared as ArrayRecord, read with random access.

  config.data.name = 'tfds:imagenet2012'
  config.data.data_dir = '/mnt/data/tensorflow_datasets'  # Default: $TFDS_DATA_DIR or
                                                          # ~/tensorflow_datasets.
  config.data.test_split = 'validation'  # imagenet2012 has no labelled 'test' split.

The ArrayRecord reader opens files through riegeli's local file reader, which (in open-source
array_record releases up to at least early 2025, google/array_record#120) cannot open gs://
paths: on Cloud TPU VMs copy the dataset to local disk or mount the bucket with gcsfuse.

This is the route for big datasets on TPU hosts: records are read and decoded one at a time from
the ArrayRecord shards (the reader behind `tfds.data_source`), so nothing is loaded up front.

Splits and ids follow fashion_mnist: `train` / `holdout` are disjoint slices of the official
`train_split`, `test` is the official `test_split`. The id of an official train record is its
index in that split; a test record's id is len(official train) + its index. TFDS shards are
written deterministically, so ids are stable for a given prepared copy of the dataset.

This source never downloads or prepares anything: a training job must not start a
hundreds-of-GB download on every host. Prepare datasets beforehand (see `not_prepared_message`).
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow_datasets as tfds

from big_vision_style.datasets import array_record
from big_vision_style.datasets import base


class DatasetNotPreparedError(FileNotFoundError):
  pass


def not_prepared_message(tfds_name: str, data_dir: str | None, problem: str) -> str:
  shown_dir = data_dir or tfds.core.constants.get_default_data_dir()
  cli_dir = f' --data_dir={data_dir}' if data_dir else ''
  py_dir = f', data_dir={data_dir!r}' if data_dir else ''
  return (
      f'TFDS dataset {tfds_name!r} {problem} (data_dir={shown_dir!r}, taken from '
      f'{"config.data.data_dir" if data_dir else "$TFDS_DATA_DIR or the TFDS default"}). '
      'The tfds source reads ArrayRecord files through tfds.data_source and never downloads. '
      'To fix it, on a machine with access to the data run\n'
      f"  tfds.builder({tfds_name!r}{py_dir}, file_format='array_record').download_and_prepare()\n"
      f'or `tfds build {tfds_name}{cli_dir} --file_format=array_record` (datasets with manual '
      'downloads, such as imagenet2012, also need their archives in <data_dir>/downloads/manual), '
      'then point config.data.data_dir (or $TFDS_DATA_DIR) at that directory. A copy already '
      'prepared as TFRecord can be converted in place with `tfds convert_format '
      '--dataset_version_dir=<data_dir>/<name>/<version> --out_file_format=array_record`.')


def load_builder(tfds_name: str, data_dir: str | None):
  """The builder of an already prepared dataset, or DatasetNotPreparedError saying how to fix it."""
  try:
    # For names that are not registered in this tfds install (custom datasets), this still finds
    # a prepared copy under data_dir from its dataset_info.json.
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    # The original message lists every dataset TFDS knows; its first line is the useful part.
    first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DatasetNotPreparedError(not_prepared_message(
        tfds_name, data_dir, f'was not found ({first_line})')) from None
  if not builder.is_prepared():
    raise DatasetNotPreparedError(not_prepared_message(
        tfds_name, data_dir, f'is not prepared (nothing at {builder.data_dir})'))
  return builder


def _num_examples(builder, tfds_name: str, split_name: str, config_key: str) -> int:
  try:
    return int(builder.info.splits[split_name].num_examples)
  except (KeyError, ValueError) as e:
    raise ValueError(
        f'TFDS dataset {tfds_name!r} has no split {split_name!r} (it has '
        f'{sorted(builder.info.splits)}); set config.data.{config_key}.') from e


def _data_source(builder, tfds_name: str, data_dir: str | None, split_name: str):
  try:
    return builder.as_data_source(split=split_name)
  except NotImplementedError as e:  # Prepared, but only in a sequential format (TFRecord).
    raise DatasetNotPreparedError(not_prepared_message(
        tfds_name, data_dir, f'is prepared at {builder.data_dir} without ArrayRecord files, which '
        f'random access needs ({str(e).splitlines()[0]})')) from e


def decode_record(record: dict, image_key: str = 'image',
                  label_key: str = 'label') -> tuple[np.ndarray, int]:
  """A record decoded by TFDS (a dict of numpy features) -> (image uint8 [H, W, C], label)."""
  image = np.asarray(record[image_key])
  if image.dtype != np.uint8:
    raise ValueError(f'TFDS feature {image_key!r} has dtype {image.dtype}; expected uint8 images.')
  return (image[..., None] if image.ndim == 2 else image), int(record[label_key])


def make_source(split: str, tfds_name: str, data_dir: str | None = None,
                holdout_size: int = 10_000, split_seed: int = 0, label_noise: float = 0.0,
                noise_seed: int = 0, train_split: str = 'train', test_split: str = 'test',
                image_key: str = 'image', label_key: str = 'label',
                **unused) -> base.LazySource:
  del unused  # Keys meant for other sources (kept so one data config can switch sources).
  base.check_split_name(split)
  data_dir = str(data_dir) if data_dir else None
  # Equivalent to tfds.data_source(tfds_name, split=..., data_dir=data_dir, download=False), but
  # with the builder in hand to check preparation first and to read split sizes and features.
  builder = load_builder(tfds_name, data_dir)
  features = builder.info.features
  for key in (image_key, label_key):
    if key not in features:
      raise ValueError(f'TFDS dataset {tfds_name!r} has no feature {key!r} (it has '
                       f'{sorted(features)}); set config.data.image_key / label_key.')
  num_classes = getattr(features[label_key], 'num_classes', None)
  if not num_classes:
    raise ValueError(f'TFDS feature {tfds_name}:{label_key} is {type(features[label_key]).__name__}'
                     ', not a ClassLabel with num_classes; only classification data is supported.')

  num_train = _num_examples(builder, tfds_name, train_split, 'train_split')
  if split == 'test':
    _num_examples(builder, tfds_name, test_split, 'test_split')  # A clear error if it's missing.
    records = _data_source(builder, tfds_name, data_dir, test_split)
    indices = np.arange(len(records))
    ids = num_train + indices
  else:
    records = _data_source(builder, tfds_name, data_dir, train_split)
    indices = ids = base.select_split(split, len(records), holdout_size, split_seed)
  noise = (base.LabelNoise.make(ids, num_classes, label_noise, noise_seed)
           if label_noise else None)
  decode = functools.partial(decode_record, image_key=image_key, label_key=label_key)
  return base.LazySource(records, indices, ids, num_classes, decode, noise,
                                 name=f'tfds:{tfds_name}:{split}')
