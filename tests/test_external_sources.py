"""ArrayRecord and TFDS sources on tiny datasets written to tmp dirs (offline, a few seconds)."""
import functools
import pickle

import grain
import numpy as np
import pytest

from big_vision_style import datasets
from big_vision_style.datasets import array_record

NUM_TRAIN, NUM_TEST, NUM_CLASSES, HOLDOUT = 40, 10, 3, 8


def _make_arrays(n, seed, shape=(6, 5, 3)):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n, *shape), dtype=np.uint8),
          rng.integers(0, NUM_CLASSES, n).astype(np.int64))


@pytest.fixture(scope='module')
def ar_data(tmp_path_factory):
  """Train in two shards (ids run across shards in file-name order), test in one file."""
  root = tmp_path_factory.mktemp('ar')
  train_images, train_labels = _make_arrays(NUM_TRAIN, 0)
  test_images, test_labels = _make_arrays(NUM_TEST, 1)
  half = NUM_TRAIN // 2
  # Written out of order on purpose: ids must follow sorted file names, not creation order.
  array_record.write_examples(root / 'train-00001-of-00002.array_record',
                              train_images[half:], train_labels[half:])
  array_record.write_examples(root / 'train-00000-of-00002.array_record',
                              train_images[:half], train_labels[:half])
  array_record.write_examples(root / 'test-00000-of-00001.array_record', test_images, test_labels)
  return {'root': root, 'images': np.concatenate([train_images, test_images]),
          'labels': np.concatenate([train_labels, test_labels]),
          'config': {'name': 'array_record', 'paths': str(root / '{split}-*.array_record'),
                     'num_classes': NUM_CLASSES, 'holdout_size': HOLDOUT}}


def _all(source):
  return [source[i] for i in range(len(source))]


def test_array_record_round_trip(ar_data):
  for split in ('train', 'holdout', 'test'):
    source = datasets.get_source(ar_data['config'], split)
    assert source.num_classes == NUM_CLASSES
    assert source.ids.dtype == np.int64
    for i, ex in enumerate(_all(source)):
      assert ex['id'] == source.ids[i]
      assert ex['image'].dtype == np.uint8 and ex['image'].shape == (6, 5, 3)
      np.testing.assert_array_equal(ex['image'], ar_data['images'][ex['id']])
      assert ex['label'].dtype == np.int32 and ex['label'] == ar_data['labels'][ex['id']]


def test_array_record_splits_disjoint_and_ids_stable(ar_data):
  config = ar_data['config']
  ids = {s: datasets.get_source(config, s).ids for s in ('train', 'holdout', 'test')}
  assert len(ids['holdout']) == HOLDOUT and len(ids['train']) == NUM_TRAIN - HOLDOUT
  assert not set(ids['train']) & set(ids['holdout'])
  np.testing.assert_array_equal(np.sort(np.concatenate([ids['train'], ids['holdout']])),
                                np.arange(NUM_TRAIN))
  np.testing.assert_array_equal(ids['test'], NUM_TRAIN + np.arange(NUM_TEST))
  # Same config -> same ids; another split seed moves examples between train and holdout, but
  # an example keeps its id (and so its image) wherever it lands.
  np.testing.assert_array_equal(datasets.get_source(config, 'train').ids, ids['train'])
  other = datasets.get_source({**config, 'split_seed': 1}, 'holdout')
  assert set(other.ids) != set(ids['holdout'])
  for i in range(len(other)):
    np.testing.assert_array_equal(other[i]['image'], ar_data['images'][other.ids[i]])
  # The dict form of `paths` (lists of patterns) reads the same files the same way.
  root = ar_data['root']
  dict_config = {**config, 'paths': {'train': [str(root / 'train-00000-*'),
                                               str(root / 'train-00001-*')],
                                     'test': str(root / 'test-*')}}
  for split in ('train', 'test'):
    np.testing.assert_array_equal(datasets.get_source(dict_config, split).ids, ids[split])


def test_array_record_label_noise(ar_data):
  rate = 0.25
  clean = datasets.get_source(ar_data['config'], 'train')
  noisy = datasets.get_source({**ar_data['config'], 'label_noise': rate, 'noise_seed': 3},
                              'train')
  n = len(clean)
  assert len(noisy.flipped_ids) == round(rate * n) and len(clean.flipped_ids) == 0
  changed = [int(c['id']) for c, z in zip(_all(clean), _all(noisy)) if c['label'] != z['label']]
  np.testing.assert_array_equal(sorted(changed), noisy.flipped_ids)
  assert all(0 <= ex['label'] < NUM_CLASSES for ex in _all(noisy))
  # Deterministic in the seed, and batched reads agree with single reads.
  again = datasets.get_source({**ar_data['config'], 'label_noise': rate, 'noise_seed': 3}, 'train')
  np.testing.assert_array_equal(again.flipped_ids, noisy.flipped_ids)
  batch = noisy.__getitems__([5, 0, 5])
  assert [int(ex['label']) for ex in batch] == [int(noisy[i]['label']) for i in (5, 0, 5)]


def test_array_record_works_in_grain_and_pickles(ar_data):
  source = datasets.get_source({**ar_data['config'], 'label_noise': 0.5}, 'holdout')
  clone = pickle.loads(pickle.dumps(source))  # What grain does to ship sources to workers.
  for a, b in zip(_all(source), _all(clone)):
    assert a['id'] == b['id'] and a['label'] == b['label']
  batch = next(iter(grain.MapDataset.source(source).batch(4)))
  assert batch['image'].shape == (4, 6, 5, 3) and batch['id'].dtype == np.int64


def test_array_record_grayscale_gets_channel_dim(tmp_path):
  images, labels = _make_arrays(4, 2, shape=(7, 9))
  array_record.write_examples(tmp_path / 'train.ar', images, labels)
  array_record.write_examples(tmp_path / 'test.ar', images[:2], labels[:2])
  config = {'name': 'array_record', 'paths': str(tmp_path / '{split}.ar'), 'num_classes': 3,
            'holdout_size': 1}
  ex = datasets.get_source(config, 'test')[1]
  assert ex['image'].shape == (7, 9, 1)
  np.testing.assert_array_equal(ex['image'][..., 0], images[1])
  rgb = datasets.get_source({**config, 'image_channels': 3}, 'test')[1]['image']
  assert rgb.shape == (7, 9, 3)


def test_array_record_errors(tmp_path, ar_data):
  with pytest.raises(FileNotFoundError, match='No ArrayRecord files match'):
    datasets.get_source({**ar_data['config'], 'paths': str(tmp_path / '{split}-*')}, 'train')
  with pytest.raises(ValueError, match='placeholder'):
    datasets.get_source({**ar_data['config'], 'paths': str(tmp_path / 'x-*')}, 'train')
  with pytest.raises(ValueError, match='num_classes'):
    datasets.get_source({**ar_data['config'], 'num_classes': None}, 'train')
  with pytest.raises(ValueError, match='holdout_size'):
    datasets.get_source({**ar_data['config'], 'holdout_size': NUM_TRAIN}, 'train')
  too_few = datasets.get_source({**ar_data['config'], 'num_classes': 1 + 1}, 'test')
  with pytest.raises(ValueError, match='outside'):
    _all(too_few)  # Some test labels are 2.


# A tiny TFDS dataset, built offline. skip_registration keeps it out of the global registry
# (so re-imports don't clash); tfds.builder then finds it by name from the prepared files, just
# like a custom dataset prepared on another machine.
@functools.cache
def _bvstinyimages():
  """The builder class, made on first use: importing TFDS imports TensorFlow (seconds of
  CPU), which only the pytest worker running these tests should pay."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class BvsTinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(8, 8, 3)),
          'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
          'key': np.int64,  # To check that splits partition the generated examples.
      }))

    def _split_generators(self, dl_manager):
      del dl_manager
      # Like imagenet2012: labelled `train` and `validation`, no `test`.
      return {'train': self._generate_examples(0, NUM_TRAIN),
              'validation': self._generate_examples(1000, NUM_TEST)}

    def _generate_examples(self, start, n):
      rng = np.random.default_rng(start)
      for key in range(start, start + n):
        yield key, {'image': rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                    'label': key % NUM_CLASSES, 'key': key}


  return BvsTinyImages


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  _bvstinyimages()(data_dir=str(data_dir), file_format='array_record').download_and_prepare()
  return str(data_dir)


def _tfds_config(data_dir, **kwargs):
  return {'name': 'tfds:bvs_tiny_images', 'data_dir': data_dir, 'test_split': 'validation',
          'holdout_size': HOLDOUT, **kwargs}


def test_tfds_source_splits_ids_and_records(tfds_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (see _bvstinyimages)
  sources = {s: datasets.get_source(_tfds_config(tfds_dir), s)
             for s in ('train', 'holdout', 'test')}
  reference = {s: tfds.data_source('bvs_tiny_images', split=s, data_dir=tfds_dir, download=False)
               for s in ('train', 'validation')}
  assert [len(sources[s]) for s in sources] == [NUM_TRAIN - HOLDOUT, HOLDOUT, NUM_TEST]
  ids = {s: sources[s].ids for s in sources}
  np.testing.assert_array_equal(np.sort(np.concatenate([ids['train'], ids['holdout']])),
                                np.arange(NUM_TRAIN))
  np.testing.assert_array_equal(ids['test'], NUM_TRAIN + np.arange(NUM_TEST))
  keys = {}
  for split, source in sources.items():
    assert source.num_classes == NUM_CLASSES
    keys[split] = set()
    for i, ex in enumerate(_all(source)):
      assert set(ex) == {'image', 'label', 'id', 'label_flipped'}
      assert ex['image'].shape == (8, 8, 3) and ex['image'].dtype == np.uint8
      assert ex['label'].dtype == np.int32 and ex['id'] == ids[split][i]
      ref = (reference['validation'][ex['id'] - NUM_TRAIN] if split == 'test'
             else reference['train'][ex['id']])
      np.testing.assert_array_equal(ex['image'], ref['image'])
      assert ex['label'] == ref['label'] == ref['key'] % NUM_CLASSES
      keys[split].add(int(ref['key']))
  assert keys['train'] | keys['holdout'] == set(range(NUM_TRAIN))
  assert not keys['train'] & keys['holdout']
  assert keys['test'] == set(range(1000, 1000 + NUM_TEST))


def test_tfds_source_label_noise_and_pickle(tfds_dir):
  clean = datasets.get_source(_tfds_config(tfds_dir), 'train')
  noisy = datasets.get_source(_tfds_config(tfds_dir, label_noise=0.5, noise_seed=1), 'train')
  assert len(noisy.flipped_ids) == round(0.5 * len(clean))
  changed = [int(c['id']) for c, z in zip(_all(clean), _all(noisy)) if c['label'] != z['label']]
  np.testing.assert_array_equal(sorted(changed), noisy.flipped_ids)
  clone = pickle.loads(pickle.dumps(noisy))
  assert [int(ex['label']) for ex in clone.__getitems__([0, 3])] == [
      int(noisy[0]['label']), int(noisy[3]['label'])]


def test_tfds_source_unknown_split_names_the_fix(tfds_dir):
  with pytest.raises(ValueError, match=r"no split 'test'.*validation.*test_split"):
    datasets.get_source(_tfds_config(tfds_dir, test_split='test'), 'test')


@pytest.mark.parametrize('name', ['bvs_no_such_dataset', 'mnist'])  # Unknown / known to tfds.
def test_tfds_source_missing_dataset_says_how_to_fix(tmp_path, name):
  from big_vision_style.datasets import tfds_source  # pylint: disable=g-import-not-at-top
  with pytest.raises(tfds_source.DatasetNotPreparedError) as info:
    datasets.get_source({'name': f'tfds:{name}', 'data_dir': str(tmp_path)}, 'train')
  message = str(info.value)
  assert name in message and str(tmp_path) in message
  assert "download_and_prepare" in message and "file_format='array_record'" in message
  assert 'config.data.data_dir' in message


def test_tfds_source_tfrecord_only_dataset_says_how_to_fix(tmp_path):
  from big_vision_style.datasets import tfds_source  # pylint: disable=g-import-not-at-top
  _bvstinyimages()(data_dir=str(tmp_path), file_format='tfrecord').download_and_prepare()
  with pytest.raises(tfds_source.DatasetNotPreparedError, match='convert_format'):
    datasets.get_source(_tfds_config(str(tmp_path)), 'train')
