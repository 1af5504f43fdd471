"""Fashion-MNIST source: deterministic disjoint splits, stable ids, label noise, bad input."""
import gzip
import os

import numpy as np
import pytest

from big_vision_style.datasets import base
from big_vision_style.datasets import fashion_mnist
from big_vision_style.datasets import get_source
from big_vision_style.datasets import idx
from idx_fixtures import idx_bytes
from idx_fixtures import write_fake_fashion_mnist


def test_real_splits_are_deterministic_disjoint_and_cover_train():
  splits = {s: get_source({'name': 'fashion_mnist'}, s) for s in ('train', 'holdout', 'test')}
  assert [len(splits[s]) for s in ('train', 'holdout', 'test')] == [50_000, 10_000, 10_000]
  train, holdout, test = (set(splits[s].ids.tolist()) for s in ('train', 'holdout', 'test'))
  assert not train & holdout and not train & test and not holdout & test
  assert train | holdout == set(range(60_000))
  assert test == set(range(60_000, 70_000))
  again = get_source({'name': 'fashion_mnist'}, 'holdout')
  np.testing.assert_array_equal(again.ids, splits['holdout'].ids)
  # The id is the official file index, so the image behind an id never changes.
  images, _ = fashion_mnist.load_official_split(fashion_mnist.resolve_data_dir(), 'train')
  ex = splits['holdout'][123]
  np.testing.assert_array_equal(ex['image'], images[ex['id']])
  other = get_source({'name': 'fashion_mnist', 'split_seed': 1}, 'holdout')
  assert set(other.ids.tolist()) != holdout
  # Holdout is a random slice, so roughly class-balanced.
  assert np.bincount(splits['holdout'].labels, minlength=10).min() > 900


@pytest.mark.parametrize('rate', [0.0, 0.3, 1.0])
def test_label_noise_flips_exactly_the_configured_fraction(rate):
  clean = get_source({'name': 'fashion_mnist'}, 'train')
  noisy = get_source({'name': 'fashion_mnist', 'label_noise': rate, 'noise_seed': 7}, 'train')
  changed = noisy.labels != clean.labels
  assert changed.sum() == round(rate * len(clean)) == len(noisy.flipped_ids)
  np.testing.assert_array_equal(np.sort(noisy.ids[changed]), noisy.flipped_ids)
  np.testing.assert_array_equal(noisy.clean_labels, clean.labels)
  for i in range(0, len(noisy), 997):  # Records carry the flag that selection metrics use.
    assert noisy[i]['label_flipped'] == changed[i]
  if rate:
    # Symmetric: every wrong class is about equally likely.
    offsets = (noisy.labels[changed] - clean.labels[changed]) % 10
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].mean()
  again = get_source({'name': 'fashion_mnist', 'label_noise': rate, 'noise_seed': 7}, 'train')
  np.testing.assert_array_equal(again.labels, noisy.labels)


def test_label_noise_applies_to_train_only_by_default():
  config = {'name': 'fashion_mnist', 'label_noise': 0.3}
  assert len(get_source(config, 'test').flipped_ids) == 0
  assert len(get_source(config, 'holdout').flipped_ids) == 0
  noisy_holdout = get_source({**config, 'noise_splits': ('train', 'holdout')}, 'holdout')
  assert len(noisy_holdout.flipped_ids) == 3000


def test_label_noise_rate_out_of_range():
  with pytest.raises(ValueError, match='label_noise=1.5 is out of range'):
    base.LabelNoise.make(np.arange(10), 10, 1.5, 0)


def test_data_dir_from_env_var_and_config(tmp_path, monkeypatch):
  arrays = write_fake_fashion_mnist(tmp_path / 'fm', num_train=120, num_test=30)
  monkeypatch.setenv('FASHION_MNIST_DIR', str(tmp_path / 'fm'))
  train = get_source({'name': 'fashion_mnist', 'holdout_size': 20}, 'train')
  test = get_source({'name': 'fashion_mnist', 'holdout_size': 20}, 'test')
  assert len(train) == 100 and len(test) == 30
  np.testing.assert_array_equal(test[3]['image'][..., 0], arrays['t10k-images-idx3-ubyte'][3])
  assert test[3]['id'] == 60_003
  monkeypatch.delenv('FASHION_MNIST_DIR')
  write_fake_fashion_mnist(tmp_path / 'raw', num_train=50, num_test=10, gz=False)
  src = get_source({'name': 'fashion_mnist', 'data_dir': str(tmp_path / 'raw'),
                    'holdout_size': 10}, 'holdout')
  assert len(src) == 10


def test_missing_data_names_the_package_and_the_override(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    get_source({'name': 'fashion_mnist', 'data_dir': str(tmp_path)}, 'train')
  msg = str(e.value)
  assert 'apt-get install dataset-fashion-mnist' in msg
  assert 'FASHION_MNIST_DIR' in msg and 'config.data.data_dir' in msg


def _corrupt(directory, name, data, gz=True):
  path = os.path.join(directory, name + ('.gz' if gz else ''))
  if gz:
    with gzip.open(path, 'wb') as f:
      f.write(data)
  else:
    with open(path, 'wb') as f:
      f.write(data)


def test_truncated_file_is_an_error_not_an_empty_dataset(tmp_path):
  write_fake_fashion_mnist(tmp_path, num_train=50, num_test=10)
  whole = idx_bytes(np.zeros((50, 28, 28)))
  _corrupt(tmp_path, 'train-images-idx3-ubyte', whole[:-100])
  with pytest.raises(idx.IdxFormatError, match='truncated'):
    get_source({'name': 'fashion_mnist', 'data_dir': str(tmp_path), 'holdout_size': 10}, 'train')


def test_corrupt_gzip_and_bad_magic_are_errors(tmp_path):
  write_fake_fashion_mnist(tmp_path, num_train=50, num_test=10)
  path = tmp_path / 't10k-images-idx3-ubyte.gz'
  path.write_bytes(path.read_bytes()[:200])  # Cut the gzip stream.
  with pytest.raises(idx.IdxFormatError, match='corrupt or truncated'):
    get_source({'name': 'fashion_mnist', 'data_dir': str(tmp_path)}, 'test')
  _corrupt(tmp_path, 't10k-images-idx3-ubyte', b'PK\x03\x04 not an idx file')
  with pytest.raises(idx.IdxFormatError, match='not an IDX file'):
    get_source({'name': 'fashion_mnist', 'data_dir': str(tmp_path)}, 'test')


def test_mismatched_images_and_labels(tmp_path):
  write_fake_fashion_mnist(tmp_path, num_train=50, num_test=10)
  _corrupt(tmp_path, 't10k-labels-idx1-ubyte', idx_bytes(np.zeros([9])))
  with pytest.raises(idx.IdxFormatError, match='10 images but'):
    get_source({'name': 'fashion_mnist', 'data_dir': str(tmp_path)}, 'test')


def test_bad_split_and_holdout_size():
  with pytest.raises(ValueError, match="Unknown split 'validation'"):
    get_source({'name': 'fashion_mnist'}, 'validation')
  with pytest.raises(ValueError, match='holdout_size=60000 must be in'):
    get_source({'name': 'fashion_mnist', 'holdout_size': 60_000}, 'train')
  with pytest.raises(ValueError, match='Unknown data source'):
    get_source({'name': 'nope'}, 'train')
