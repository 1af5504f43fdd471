"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline), upsampled to 28x28.

A small out-of-domain dataset for ReLA's "digits" prior: a model trained here has seen pen
strokes, never clothes. Pixels (0..16) are scaled to 0..255 and resized bilinearly, so the
images look like (blurry) MNIST and go through the same preprocessing as Fashion-MNIST.

Splits: `test` is a seeded 20% slice; `train` is the rest, less a seeded `holdout` of
`holdout_size` examples (default none). Ids are the index in scikit-learn's array.
"""
from __future__ import annotations

import functools

import numpy as np

from big_vision_style.datasets import base

NUM_CLASSES = 10
TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=2)
def load_images(image_size: int):
  """(images uint8 [N, S, S, 1], labels int32 [N]) of all 1,797 digits."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  images = np.stack([np.asarray(Image.fromarray(im).resize((image_size, image_size),
                                                           Image.BILINEAR)) for im in small])
  images.setflags(write=False)
  return images[..., None], digits.target.astype(np.int32)


def make_source(split: str, image_size: int = 28, holdout_size: int = 0, split_seed: int = 0,
                label_noise: float = 0.0, noise_seed: int = 0, **unused) -> base.ArraySource:
  del unused  # Keys meant for other sources.
  base.check_split_name(split)
  images, labels = load_images(image_size)
  perm = np.random.default_rng(split_seed).permutation(len(images))
  num_test = int(round(TEST_FRACTION * len(images)))
  if split == 'test':
    ids = np.sort(perm[:num_test])
  else:
    rest = np.sort(perm[num_test:])
    train_pos, holdout_pos = base.holdout_split_indices(len(rest), holdout_size, split_seed)
    ids = rest[train_pos if split == 'train' else holdout_pos]
  noise = (base.LabelNoise.make(ids, NUM_CLASSES, label_noise, noise_seed)
           if label_noise else None)
  return base.ArraySource(images[ids], labels[ids], ids, NUM_CLASSES, noise)
