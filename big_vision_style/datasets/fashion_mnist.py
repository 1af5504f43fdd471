"""Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist` package (offline).

Splits: `train` and `holdout` are disjoint slices of the official 60k train split (holdout is
for reference / prior models), `test` is the official 10k test split. Ids: official train file
index i has id i, official test file index i has id 60000 + i, whatever the split settings.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from big_vision_style.datasets import base
from big_vision_style.datasets import idx

DEFAULT_DIR = '/usr/share/datasets/fashion-mnist'
ENV_VAR = 'FASHION_MNIST_DIR'
NUM_CLASSES = 10
NUM_OFFICIAL_TRAIN = 60_000
TEST_ID_OFFSET = NUM_OFFICIAL_TRAIN
CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
               'Sneaker', 'Bag', 'Ankle boot')
_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
          'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


def resolve_data_dir(data_dir: str | None = None) -> str:
  """Config value, else $FASHION_MNIST_DIR, else the Debian package's directory."""
  return data_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR


@functools.lru_cache(maxsize=4)
def load_official_split(data_dir: str, official_split: str):
  """(images uint8 [N,28,28,1], labels int32 [N]) of the official `train` or `test` files."""
  image_stem, label_stem = _FILES[official_split]
  image_path = idx.find_idx_file(data_dir, image_stem)
  label_path = idx.find_idx_file(data_dir, label_stem)
  if image_path is None or label_path is None:
    missing = image_stem if image_path is None else label_stem
    raise FileNotFoundError(
        f'Fashion-MNIST file {missing}[.gz] not found in {data_dir!r}. Install the data with '
        f'`sudo apt-get install dataset-fashion-mnist` (files land in {DEFAULT_DIR}), or point '
        f'config.data.data_dir or ${ENV_VAR} at a directory holding the four IDX files.')
  images = idx.read_idx(image_path, expected_ndim=3)
  labels = idx.read_idx(label_path, expected_ndim=1)
  if len(images) != len(labels):
    raise idx.IdxFormatError(f'{image_path} has {len(images)} images but {label_path} has '
                             f'{len(labels)} labels.')
  if labels.max() >= NUM_CLASSES:
    raise idx.IdxFormatError(f'{label_path} holds label {labels.max()} >= {NUM_CLASSES}.')
  images.setflags(write=False)
  return images[..., None], labels.astype(np.int32)


def make_source(split: str, data_dir: str | None = None, holdout_size: int = 10_000,
                split_seed: int = 0, label_noise: float = 0.0, noise_seed: int = 0,
                **unused) -> base.ArraySource:
  del unused  # Keys meant for other sources (kept so one data config can switch sources).
  base.check_split_name(split)
  data_dir = resolve_data_dir(data_dir)
  if split == 'test':
    images, labels = load_official_split(data_dir, 'test')
    ids = TEST_ID_OFFSET + np.arange(len(images))
  else:
    images, labels = load_official_split(data_dir, 'train')
    ids = base.select_split(split, len(images), holdout_size, split_seed)
    images, labels = images[ids], labels[ids]
  noise = (base.LabelNoise.make(ids, NUM_CLASSES, label_noise, noise_seed)
           if label_noise else None)
  return base.ArraySource(images, labels, ids, NUM_CLASSES, noise)
