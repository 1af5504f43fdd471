"""Per-example preprocessing on the host: decode, resize, augment, normalise.

Built from `config.input` keys; `make(...)` returns `fn(example, rng) -> example` suitable for
grain's `random_map` (rng is a numpy Generator seeded per element, so augmentation is
deterministic given the pipeline seed and the element's *global* stream position, the same
whatever the number of processes: exact resume and pod-size independence need that;
input_pipeline applies the random map before taking this process's rows).
Without augmentation `fn.batched(records) -> records` does the same to stacked records.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

_AUGMENTATIONS = ('flip', 'crop')


def _decode(image) -> np.ndarray:
  if isinstance(image, (bytes, np.bytes_)):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    image = np.asarray(Image.open(io.BytesIO(image)))
  image = np.asarray(image)
  return image[..., None] if image.ndim == 2 else image


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  if image.shape[0] == size and image.shape[1] == size:
    return image
  from PIL import Image  # pylint: disable=g-import-not-at-top
  squeeze = image.shape[-1] == 1
  pil = Image.fromarray(image[..., 0] if squeeze else image)
  out = np.asarray(pil.resize((size, size), Image.BILINEAR))
  return out[..., None] if squeeze else out


def make(image_size: int, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,),
         augment: Sequence[str] = (), crop_padding: int = 2):
  unknown = set(augment) - set(_AUGMENTATIONS)
  if unknown:
    raise ValueError(f'Unknown augmentation(s) {sorted(unknown)}: expected {_AUGMENTATIONS}.')
  mean = np.asarray(mean, np.float32) * 255.0
  std = np.asarray(std, np.float32) * 255.0

  def fn(example, rng: np.random.Generator | None = None):
    image = _resize(_decode(example['image']), image_size)
    if 'crop' in augment:
      p = crop_padding
      padded = np.pad(image, ((p, p), (p, p), (0, 0)), mode='reflect')
      dy, dx = rng.integers(0, 2 * p + 1, size=2)
      image = padded[dy:dy + image_size, dx:dx + image_size]
    if 'flip' in augment and rng.random() < 0.5:
      image = image[:, ::-1]
    image = (image.astype(np.float32) - mean) / std
    # Other per-example fields (label_flipped, cached scores, ...) pass through unchanged.
    return {**example, 'image': image, 'label': np.int32(example['label']),
            'id': np.int64(example['id'])}

  def batched(examples):
    """`fn` over stacked records of decoded images (no augmentation): the same numbers as
    `fn` per record, then stacking."""
    images = np.asarray(examples['image'])
    images = images[..., None] if images.ndim == 3 else images
    if images.shape[1:3] != (image_size, image_size):  # Resizing stays per image (PIL).
      images = np.stack([_resize(image, image_size) for image in images])
    return {**examples, 'image': (images.astype(np.float32) - mean) / std,
            'label': np.asarray(examples['label'], np.int32),
            'id': np.asarray(examples['id'], np.int64)}

  # Augmentation draws per-record randomness from grain; only the deterministic path batches.
  fn.batched = None if augment else batched
  return fn
