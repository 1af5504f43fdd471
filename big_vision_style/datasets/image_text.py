"""Image-text pairs (encoded image, caption) from ArrayRecord files or a prepared TFDS dataset.

The TPU route to real image-text data (a COCO / CC12M / LAION-style copy you prepared):

  # ArrayRecord files of tf.train.Examples: `image` (PNG/JPEG bytes) and `caption` (bytes).
  config.data = dict(name='image_text', format='array_record',
                     paths='/data/cc12m/{split}-*.array_record',
                     tokenizer='sentencepiece:/data/spm_32k.model', max_text_len=64)
  # A TFDS dataset prepared as ArrayRecord, e.g. coco_captions (captions under a nested key).
  config.data = dict(name='image_text', format='tfds', tfds_name='coco_captions',
                     text_key='captions/text', test_split='val', tokenizer=...)

Files, splits and ids follow the classification sources (the same code reads them: file
resolution from `array_record`, builder checks from `tfds_source`, lazy index-mapped reads from
`base.LazySource`): `train` / `holdout` are disjoint slices of the official train split, `test`
is the official test split. Records: image uint8 [H, W, C]; text int32 [max_text_len]; label
int32 (from `label_key` if given, else -1: web pairs have none); id int64; corruption int32 -1
(unknown: real web data does not say which pairs are noisy). A record with several captions
(COCO) contributes its first.
"""
from __future__ import annotations

import functools

import numpy as np

from big_vision_style import tokenizers
from big_vision_style.datasets import array_record
from big_vision_style.datasets import base

UNKNOWN = -1
FORMATS = ('array_record', 'tfds')


def encode_example(image, caption: str, label: int | None = None) -> bytes:
  """A serialized tf.train.Example: array_record's image record plus a `caption` bytes feature."""
  example = array_record._example_pb2().Example.FromString(  # pylint: disable=protected-access
      array_record.encode_example(image, UNKNOWN if label is None else label))
  if label is None:
    del example.features.feature['label']
  example.features.feature['caption'].bytes_list.value.append(caption.encode('utf-8'))
  return example.SerializeToString()


def write_examples(path: str, images, texts, labels=None) -> int:
  """Writes (image, caption[, label]) records to one ArrayRecord file; returns the count."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if len(images) != len(texts) or (labels is not None and len(labels) != len(texts)):
    raise ValueError(f'Mismatched lengths: {len(images)} images, {len(texts)} captions'
                     f'{"" if labels is None else f", {len(labels)} labels"}.')
  writer = array_record_module.ArrayRecordWriter(str(path), 'group_size:1')
  try:
    for i, (image, text) in enumerate(zip(images, texts)):
      writer.write(encode_example(image, text, None if labels is None else labels[i]))
  finally:
    writer.close()
  return len(texts)


def _as_text(value) -> str:
  value = np.asarray(value)
  if value.ndim:  # Several captions per image (COCO): the first.
    if not value.size:
      return ''
    value = value.reshape(-1)[0]
  value = value.item()
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def decode_array_record(record: bytes, image_key: str, text_key: str, label_key: str | None,
                        channels: int | None):
  """A serialized tf.train.Example -> (image, caption, label or -1)."""
  features = array_record._example_pb2().Example.FromString(  # pylint: disable=protected-access
      record).features.feature
  for key in (image_key, text_key):
    if key not in features or not features[key].bytes_list.value:
      raise ValueError(f'tf.train.Example has no bytes feature {key!r} (it has '
                       f'{sorted(features)}); set config.data.image_key / text_key.')
  image = array_record.decode_image(features[image_key].bytes_list.value[0], channels)
  label = (int(features[label_key].int64_list.value[0])
           if label_key and label_key in features else UNKNOWN)
  return image, features[text_key].bytes_list.value[0].decode('utf-8'), label


def _nested(record, key: str):
  for part in key.split('/'):
    record = record[part]
  return record


def decode_tfds(record: dict, image_key: str, text_key: str, label_key: str | None):
  """A TFDS record (dict of numpy features; `text_key` may be a/b for nested ones)."""
  image = np.asarray(_nested(record, image_key))
  if image.dtype != np.uint8:
    raise ValueError(f'TFDS feature {image_key!r} has dtype {image.dtype}; expected uint8 images.')
  label = int(_nested(record, label_key)) if label_key else UNKNOWN
  return (image[..., None] if image.ndim == 2 else image), _as_text(
      _nested(record, text_key)), label


class ImageTextSource(base.LazySource):
  """`base.LazySource` whose records are image-text pairs, tokenized when read."""

  def __init__(self, records, indices, ids, decode, tokenizer, name: str = ''):
    super().__init__(records, indices, ids, num_classes=0, decode=decode, name=name)
    self.tokenizer = tokenizer

  def _example(self, position: int, record):
    image, caption, label = self.decode(record)
    return {'image': image, 'text': self.tokenizer(caption), 'label': np.int32(label),
            'id': self.ids[position], 'corruption': np.int32(UNKNOWN)}


def _array_record_split(split, paths, holdout_size, split_seed):
  import grain  # pylint: disable=g-import-not-at-top
  train = grain.sources.ArrayRecordDataSource(array_record.resolve_paths(paths, 'train'))
  if split == 'test':
    records = grain.sources.ArrayRecordDataSource(array_record.resolve_paths(paths, 'test'))
    indices = np.arange(len(records))
    return records, indices, len(train) + indices
  indices = base.select_split(split, len(train), holdout_size, split_seed)
  return train, indices, indices


def _tfds_split(split, tfds_name, data_dir, holdout_size, split_seed, train_split, test_split,
                keys):
  # pylint: disable-next=g-import-not-at-top  (TFDS's import costs seconds; only if used)
  from big_vision_style.datasets import tfds_source
  # pylint: disable=protected-access
  builder = tfds_source.load_builder(tfds_name, data_dir)
  for key in keys:
    if key.split('/')[0] not in builder.info.features:
      raise ValueError(f'TFDS dataset {tfds_name!r} has no feature {key!r} (it has '
                       f'{sorted(builder.info.features)}); set config.data.image_key / text_key.')
  num_train = tfds_source._num_examples(builder, tfds_name, train_split, 'train_split')
  if split == 'test':
    tfds_source._num_examples(builder, tfds_name, test_split, 'test_split')
    records = tfds_source._data_source(builder, tfds_name, data_dir, test_split)
    indices = np.arange(len(records))
    return records, indices, num_train + indices
  records = tfds_source._data_source(builder, tfds_name, data_dir, train_split)
  indices = base.select_split(split, len(records), holdout_size, split_seed)
  return records, indices, indices


def make_source(split: str, format: str = 'array_record', *,  # pylint: disable=redefined-builtin
                tokenizer: str, max_text_len: int = 64, paths=None, tfds_name: str | None = None,
                data_dir: str | None = None, holdout_size: int = 10_000, split_seed: int = 0,
                train_split: str = 'train', test_split: str = 'test', image_key: str = 'image',
                text_key: str = 'caption', label_key: str | None = None,
                image_channels: int | None = 3, label_noise: float = 0.0,
                **unused) -> ImageTextSource:
  del unused  # Keys meant for other sources (kept so one data config can switch sources).
  base.check_split_name(split)
  if label_noise:
    raise ValueError(f'label_noise={label_noise} does not apply to image-text data.')
  tok = tokenizers.get_tokenizer(tokenizer, max_text_len)
  if format == 'array_record':
    if paths is None:
      raise ValueError("format='array_record' needs config.data.paths.")
    records, indices, ids = _array_record_split(split, paths, holdout_size, split_seed)
    decode = functools.partial(decode_array_record, image_key=image_key, text_key=text_key,
                               label_key=label_key, channels=image_channels)
    name = f'image_text:array_record:{split}'
  elif format == 'tfds':
    if not tfds_name:
      raise ValueError("format='tfds' needs config.data.tfds_name.")
    data_dir = str(data_dir) if data_dir else None
    keys = [image_key, text_key] + ([label_key] if label_key else [])
    records, indices, ids = _tfds_split(split, tfds_name, data_dir, holdout_size, split_seed,
                                        train_split, test_split, keys)
    decode = functools.partial(decode_tfds, image_key=image_key, text_key=text_key,
                               label_key=label_key)
    name = f'image_text:tfds:{tfds_name}:{split}'
  else:
    raise ValueError(f'Unknown image-text format {format!r} (config.data.format): expected one '
                     f'of {FORMATS}.')
  return ImageTextSource(records, indices, ids, decode, tok, name=name)
