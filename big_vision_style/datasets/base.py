"""The one data-source interface every dataset implements, and wrappers shared by all of them.

A source is a grain-compatible random-access data source: `len(source)` and `source[i]`, where
`source[i]` is a dict with at least
  image: uint8 array [H, W, C] (or encoded bytes that the pipeline's `decode` op turns into one),
  label: int32 class index,
  id:    int64, stable across runs, splits and label noise; later work caches per-example
         scores and embeddings by this id,
  label_flipped: bool, whether label noise changed this example's label (so a run can report
         what fraction of the examples a selection policy picks are noisy).
Sources also expose `num_classes`, and `ids` (all ids of the split, in index order) so that
per-example caches can be built without decoding images.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence

import numpy as np


class Source(Protocol):
  num_classes: int
  ids: np.ndarray

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict[str, Any]: ...


def holdout_split_indices(num_examples: int, holdout_size: int, split_seed: int):
  """Deterministic disjoint (train, holdout) index sets over an official train split.

  Holdout is a seeded random slice (not the tail) so that it is class-balanced in expectation
  whatever the order of the underlying files. Both are returned sorted, so an index's position
  in the split never depends on anything but (num_examples, holdout_size, split_seed).
  """
  if not 0 <= holdout_size < num_examples:
    raise ValueError(
        f'holdout_size={holdout_size} must be in [0, {num_examples}) for a train split of '
        f'{num_examples} examples; set config.data.holdout_size accordingly.')
  perm = np.random.default_rng(split_seed).permutation(num_examples)
  return np.sort(perm[holdout_size:]), np.sort(perm[:holdout_size])


def select_split(split: str, num_train: int, holdout_size: int, split_seed: int):
  """Indices into the official train split for our `train` / `holdout` splits."""
  train_idx, holdout_idx = holdout_split_indices(num_train, holdout_size, split_seed)
  if split == 'train':
    return train_idx
  if split == 'holdout':
    return holdout_idx
  raise ValueError(f'Unknown split {split!r}: expected one of train, holdout, test.')


@dataclasses.dataclass(frozen=True)
class LabelNoise:
  """Symmetric label noise: exactly round(rate * n) examples get a uniformly random *other* label.

  Which examples flip, and to what, depends only on (ids, num_classes, rate, seed); the flip is
  stored as an offset in [1, num_classes) so it can be applied lazily to any source, including
  TFDS sources whose labels are only known when a record is read.
  """
  flipped_ids: np.ndarray  # sorted int64
  _offset_by_position: np.ndarray  # int32 [n], 0 where not flipped

  @classmethod
  def make(cls, ids: np.ndarray, num_classes: int, rate: float, seed: int) -> 'LabelNoise':
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f'label_noise={rate} is out of range; it must be in [0, 1].')
    n = len(ids)
    rng = np.random.default_rng(seed)
    positions = rng.choice(n, size=int(round(rate * n)), replace=False)
    offsets = np.zeros(n, np.int32)
    offsets[positions] = rng.integers(1, num_classes, size=len(positions))
    return cls(np.sort(np.asarray(ids)[positions]).astype(np.int64), offsets)

  def apply(self, position: int, label: int, num_classes: int) -> int:
    return (int(label) + int(self._offset_by_position[position])) % num_classes

  def apply_all(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return ((labels.astype(np.int64) + self._offset_by_position) % num_classes).astype(np.int32)


class ArraySource:
  """An in-memory split: images, labels and ids as numpy arrays (small datasets)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, ids: np.ndarray, num_classes: int,
               label_noise: LabelNoise | None = None):
    if not len(images) == len(labels) == len(ids):
      raise ValueError(f'Mismatched lengths: {len(images)} images, {len(labels)} labels, '
                       f'{len(ids)} ids.')
    if len(images) == 0:
      raise ValueError('Refusing to build an empty dataset split.')
    self.images = images
    self.clean_labels = labels.astype(np.int32)
    self.labels = (label_noise.apply_all(self.clean_labels, num_classes)
                   if label_noise is not None else self.clean_labels)
    self.ids = ids.astype(np.int64)
    self.num_classes = num_classes
    self.flipped_ids = (label_noise.flipped_ids if label_noise is not None
                        else np.zeros([0], np.int64))

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {'image': self.images[index], 'label': self.labels[index], 'id': self.ids[index],
            'label_flipped': self.labels[index] != self.clean_labels[index]}

  def __repr__(self):
    return (f'ArraySource(n={len(self)}, image_shape={self.images.shape[1:]}, '
            f'flipped={len(self.flipped_ids)})')


class Subset:
  """The examples of `source` at `positions` (in that order): class subsets, probe subsets."""

  def __init__(self, source, positions, name: str = 'subset'):
    self.source = source
    self.positions = np.asarray(positions, np.int64)
    if len(self.positions) == 0:
      raise ValueError(f'Refusing to build an empty {name}.')
    self.ids = np.asarray(source.ids)[self.positions]
    self.num_classes = source.num_classes

  @classmethod
  def of_classes(cls, source, classes: Sequence[int]) -> 'Subset':
    """Only the examples whose label is in `classes` (labels and num_classes unchanged)."""
    labels = getattr(source, 'labels', None)
    if labels is None:
      raise ValueError(f'config.data.classes needs a source with in-memory labels; '
                       f'{type(source).__name__} reads labels lazily.')
    positions = np.flatnonzero(np.isin(labels, np.asarray(classes)))
    return cls(source, positions, name=f'split with classes {tuple(classes)}')

  def __len__(self) -> int:
    return len(self.positions)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.source[int(self.positions[index])]


def check_split_name(split: str, allowed: Sequence[str] = ('train', 'holdout', 'test')):
  if split not in allowed:
    raise ValueError(f'Unknown split {split!r}: expected one of {", ".join(allowed)}.')


class LazySource:
  """A split over a random-access record source, decoded one record at a time.

  `indices[i]` is the position in `records` of our split's i-th example, `ids[i]` its stable id.
  `decode` maps a raw record to (image uint8 [H, W, C], label); it must be picklable (a
  module-level function or a partial of one) because grain ships sources to worker processes.
  """

  def __init__(self, records, indices: np.ndarray, ids: np.ndarray, num_classes: int,
               decode: Callable[[Any], tuple[np.ndarray, int]],
               label_noise: LabelNoise | None = None, name: str = ''):
    if len(indices) != len(ids):
      raise ValueError(f'Mismatched lengths: {len(indices)} indices, {len(ids)} ids.')
    if len(indices) == 0:
      raise ValueError(f'Refusing to build an empty dataset split{" of " + name if name else ""}.')
    self.records = records
    self.indices = np.asarray(indices, np.int64)
    self.ids = np.asarray(ids, np.int64)
    self.num_classes = int(num_classes)
    self.decode = decode
    self.label_noise = label_noise
    self.flipped_ids = (label_noise.flipped_ids if label_noise is not None
                        else np.zeros([0], np.int64))
    self.name = name

  def __len__(self) -> int:
    return len(self.ids)

  def _example(self, position: int, record) -> dict[str, Any]:
    image, label = self.decode(record)
    if not 0 <= label < self.num_classes:
      raise ValueError(f'{self.name}: record with id {self.ids[position]} has label {label}, '
                       f'outside [0, num_classes={self.num_classes}).')
    clean = label
    if self.label_noise is not None:
      label = self.label_noise.apply(position, label, self.num_classes)
    return {'image': image, 'label': np.int32(label), 'id': self.ids[position],
            'label_flipped': np.bool_(label != clean)}

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f'Index {index} out of range for a split of {len(self)} examples.')
    position = index % len(self)  # Label noise is keyed by the non-negative position.
    return self._example(position, self.records[int(self.indices[position])])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    # Both ArrayRecord readers used here read a batch of keys in parallel threads, which matters
    # on network file systems; fall back to one-by-one reads otherwise.
    positions = [int(i) % len(self) for i in indices]
    keys = [int(self.indices[p]) for p in positions]
    getitems = getattr(self.records, '__getitems__', None)
    records = getitems(keys) if getitems is not None else [self.records[k] for k in keys]
    return [self._example(p, r) for p, r in zip(positions, records)]

  def __repr__(self):
    return (f'LazySource({self.name}, n={len(self)}, num_classes={self.num_classes}, '
            f'flipped={len(self.flipped_ids)})')
