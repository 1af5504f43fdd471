"""Curated and uncurated training pools drawn by id from another source's `train` split:
Divide and Contrast's local benchmark of the curation gap (`config.data.name = 'pools'`).

  config.data = dict(name='pools', base=dict(name='fashion_mnist', holdout_size=10_000, ...),
                     pool=dict(kind='uncurated', zipf=1.0, seed=0, size=None, distractors=0))

`train` is the pool; every other split (`test`, `holdout`) is the base source's, unchanged, so
both pools are evaluated on the same balanced test split and probed on the same held-out one
(`eval_base`, another data config, takes them from elsewhere: paper scale trains on an
uncurated set and probes on ImageNet).

Pools (deterministic from `pool.seed`; a pool is a list of base example ids):
  uncurated: a heavy-tailed class distribution. Classes are ranked in a seeded random order
             and class r (0-based) keeps n_r = floor(n_min / (r + 1) ** zipf) examples, n_min
             the smallest class's size in the base split: Zipf-like with exponent `zipf`.
  curated:   the same number of examples, class-balanced (the remainder spread over the
             first classes in the same seeded order).
  all:       the whole base split (paper scale: the uncurated data set itself).
`size` (optional) subsamples either pool to that many examples, keeping its class proportions.
Which examples of a class are kept is a seeded random choice. `distractors` adds that many
images that belong to no class (label -1; scikit-learn's 8x8 digits upsampled to the base
images' size, seeded, with ids DISTRACTOR_ID_OFFSET + i) to either pool: irrelevant negatives
of the kind uncurated web data is full of. Methods treat label -1 as unlabelled (MoCLR's
online classifier skips it); pools with distractors need an in-memory base source.

Clusters (DnC's experts): `cluster_table` (an id table of cluster indices, written by
methods/dnc.py's clustering stage) and `cluster` (an index) restrict `train` to the pool's
examples of that cluster. The table records the pool it was computed on (`meta['data']`) and
a table made for another pool is refused.
"""
from __future__ import annotations

import functools
import json

import numpy as np

from big_vision_style import id_table
from big_vision_style.datasets import base as base_lib

KINDS = ('uncurated', 'curated', 'all')
DISTRACTOR_ID_OFFSET = 1_000_000
POOL_DEFAULTS = dict(kind='uncurated', zipf=1.0, seed=0, size=None, distractors=0)
CLUSTER_TABLE_WHAT = 'cluster assignment table'
CLUSTER_TABLE_HOW = 'rerun the DnC pipeline\'s cluster stage (delete its directory)'


def pool_spec(pool) -> dict:
  spec = {**POOL_DEFAULTS, **dict(pool or {})}
  unknown = set(spec) - set(POOL_DEFAULTS)
  if unknown:
    raise ValueError(f'Unknown config.data.pool key(s) {sorted(unknown)}: expected '
                     f'{sorted(POOL_DEFAULTS)}.')
  if spec['kind'] not in KINDS:
    raise ValueError(f'config.data.pool.kind={spec["kind"]!r}: expected one of {KINDS}.')
  if spec['zipf'] < 0:
    raise ValueError(f'config.data.pool.zipf={spec["zipf"]} must be >= 0 (0: balanced).')
  return spec


def class_counts(available: np.ndarray, spec: dict) -> np.ndarray:
  """Examples kept per class (indexed by class) for the pool `spec`; `available`: per class."""
  num_classes = len(available)
  order = np.random.default_rng(spec['seed']).permutation(num_classes)  # order[r]: rank r.
  n_min = int(available.min())
  zipf = np.floor(n_min / (np.arange(num_classes) + 1.0) ** spec['zipf']).astype(np.int64)
  counts = np.zeros(num_classes, np.int64)
  if spec['kind'] == 'uncurated':
    counts[order] = zipf
  elif spec['kind'] == 'curated':  # The uncurated pool's total, balanced.
    total = int(zipf.sum())
    counts[order] = total // num_classes + (np.arange(num_classes) < total % num_classes)
  else:
    counts = available.astype(np.int64)
  if spec['size'] is not None:
    if spec['size'] > counts.sum():
      raise ValueError(f'config.data.pool.size={spec["size"]} exceeds the {counts.sum()} '
                       f'examples of the {spec["kind"]} pool.')
    counts = _scale(counts, int(spec['size']))
  return counts


def _scale(counts: np.ndarray, size: int) -> np.ndarray:
  """`counts` scaled to sum to `size` (largest remainders), proportions kept."""
  exact = counts * size / counts.sum()
  out = np.floor(exact).astype(np.int64)
  out[np.argsort(-(exact - out), kind='stable')[:size - out.sum()]] += 1
  return out


def pool_positions(labels: np.ndarray, num_classes: int, spec: dict) -> np.ndarray:
  """Sorted positions into the base split of the pool's examples."""
  available = np.bincount(labels, minlength=num_classes)
  counts = class_counts(available, spec)
  rng = np.random.default_rng([spec['seed'], 1])
  keep = [rng.choice(np.flatnonzero(labels == c), counts[c], replace=False)
          for c in range(num_classes)]
  return np.sort(np.concatenate(keep))


@functools.lru_cache(maxsize=4)
def _distractor_images(count: int, image_size: int, seed: int):
  from big_vision_style.datasets import sklearn_digits  # pylint: disable=g-import-not-at-top
  images, _ = sklearn_digits.load_images(image_size)
  pick = np.random.default_rng([seed, 2]).choice(len(images), count, replace=count > len(images))
  return images[pick]


class PoolSource(base_lib.ArraySource):
  """An in-memory pool (images, labels, ids) that also reads whole batches (`get_batch`)."""

  def get_batch(self, indices) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64) % len(self)
    return {'image': self.images[indices], 'label': self.labels[indices],
            'id': self.ids[indices],
            'label_flipped': self.labels[indices] != self.clean_labels[indices]}


def _plain(value):
  """ConfigDicts and tuples inside `value` as plain dicts and lists (JSON-able)."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def pool_data_config(data_config) -> dict:
  """The part of a data config that names the pool (not which cluster of it): what a cluster
  table records and is checked against."""
  data = json.loads(json.dumps(_plain(data_config)))
  data.pop('cluster_table', None)
  data.pop('cluster', None)
  return data


def _images_labels(source):
  images = getattr(source, 'images', None)
  labels = getattr(source, 'labels', None)
  if images is None or labels is None:
    raise ValueError(f'The pools source needs a base source with in-memory images and labels; '
                     f'{type(source).__name__} reads them lazily (at paper scale use '
                     "pool.kind='all' with a ready-made uncurated data set).")
  return np.asarray(images), np.asarray(labels)


def make_source(split: str, base=None, pool=None, cluster_table: str | None = None,
                cluster: int | None = None, eval_base=None, name: str = 'pools', **unused):
  del unused  # Keys meant for other sources (label_noise from get_source).
  from big_vision_style import datasets  # pylint: disable=g-import-not-at-top
  if base is None:
    raise ValueError("config.data.base is missing: the pools source draws from a base source, "
                     "e.g. base=dict(name='fashion_mnist').")
  if split != 'train':  # Evaluation and probe splits: the base's (or eval_base's), as they are.
    return datasets.get_source(eval_base or base, split)
  source = datasets.get_source(base, split)
  spec = pool_spec(pool)
  if spec['kind'] == 'all' and not spec['distractors'] and spec['size'] is None:
    pool_src = source
  else:
    images, labels = _images_labels(source)
    positions = pool_positions(labels, source.num_classes, spec)
    images, labels, ids = images[positions], labels[positions], np.asarray(source.ids)[positions]
    if spec['distractors']:
      extra = _distractor_images(int(spec['distractors']), images.shape[1], spec['seed'])
      images = np.concatenate([images, extra.astype(images.dtype)])
      labels = np.concatenate([labels, np.full(len(extra), -1, labels.dtype)])
      ids = np.concatenate([ids, DISTRACTOR_ID_OFFSET + np.arange(len(extra))])
    pool_src = PoolSource(images, labels, ids, source.num_classes)
  if cluster_table is None:
    if cluster is not None:
      raise ValueError('config.data.cluster is set without config.data.cluster_table.')
    return pool_src
  return cluster_subset(pool_src, cluster_table, cluster,
                        dict(name=name, base=base, pool=pool,
                             **({'eval_base': eval_base} if eval_base is not None else {})))


def cluster_subset(pool_src, table_path: str, cluster: int, data_config):
  """The examples of `pool_src` in cluster `cluster` of the table at `table_path`."""
  table = id_table.load(table_path, what=CLUSTER_TABLE_WHAT, how=CLUSTER_TABLE_HOW)
  recorded, current = table.meta.get('data'), pool_data_config(data_config)
  if recorded is not None and recorded != current:
    raise ValueError(f'The {CLUSTER_TABLE_WHAT} {table_path} was computed for another pool '
                     f'({recorded} in the table, {current} here); {CLUSTER_TABLE_HOW}.')
  assignments = table.lookup(pool_src.ids).astype(np.int64)
  k = int(table.meta.get('num_clusters', assignments.max() + 1))
  if cluster is None or not 0 <= int(cluster) < k:
    raise ValueError(f'config.data.cluster={cluster!r}: expected an index in [0, {k}).')
  positions = np.flatnonzero(assignments == int(cluster))
  if len(positions) == 0:
    raise ValueError(f'Cluster {cluster} of {table_path} holds no example of this pool.')
  if isinstance(pool_src, base_lib.ArraySource):  # In memory: keep batched reads.
    return PoolSource(pool_src.images[positions], pool_src.labels[positions],
                      pool_src.ids[positions], pool_src.num_classes)
  return base_lib.Subset(pool_src, positions, name=f'cluster {cluster}')
