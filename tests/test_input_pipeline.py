"""Grain pipeline: epoch coverage, reshuffling, exact resume from iterator state, sharding."""
import jax
import numpy as np
import pytest

from big_vision_style import input_pipeline
from big_vision_style import preprocess
from big_vision_style import sharding
from big_vision_style.datasets import base


def _tiny_source(n=50):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
  return base.ArraySource(images, np.arange(n) % 3, 1000 + np.arange(n), num_classes=3)


def _iterator(source, seed=0, batch=10, augment=()):
  pp = preprocess.make(image_size=4, mean=(0.0,), std=(1 / 255,), augment=augment)
  return input_pipeline.make_train_iterator(source, global_batch_size=batch, seed=seed,
                                            preprocess_fn=pp)


def test_each_epoch_covers_every_example_once_in_a_new_order():
  it = _iterator(_tiny_source())
  epoch1 = np.concatenate([next(it)['id'] for _ in range(5)])
  epoch2 = np.concatenate([next(it)['id'] for _ in range(5)])
  assert sorted(epoch1) == sorted(epoch2) == list(range(1000, 1050))
  assert not np.array_equal(epoch1, epoch2)
  other_seed = np.concatenate([next(_iterator(_tiny_source(), seed=1))['id']])
  assert not np.array_equal(other_seed, epoch1[:10])


def test_restored_iterator_yields_the_same_next_batches():
  source = _tiny_source()
  it = _iterator(source, augment=('flip', 'crop'))
  for _ in range(7):  # Into the second epoch, so the epoch reshuffle is part of the state.
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  resumed = _iterator(source, augment=('flip', 'crop'))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_batches_become_global_arrays_sharded_over_data_axis():
  mesh = sharding.make_mesh()
  batch = next(_iterator(_tiny_source(), batch=16))
  global_batch = input_pipeline.to_global(batch, mesh)
  assert global_batch['image'].shape == (16, 4, 4, 1)
  assert len(global_batch['image'].sharding.device_set) == 8
  assert global_batch['image'].addressable_shards[0].data.shape == (2, 4, 4, 1)
  np.testing.assert_array_equal(np.asarray(global_batch['id']), batch['id'])


def test_batch_not_divisible_by_devices_is_a_clear_error():
  mesh = sharding.make_mesh()
  batch = next(_iterator(_tiny_source(), batch=10))
  with pytest.raises(ValueError, match='not divisible by the 8 devices'):
    input_pipeline.to_global(batch, mesh)


def test_eval_batches_cover_the_split_once_with_a_padding_mask():
  source = _tiny_source(50)
  pp = preprocess.make(image_size=4)
  batches = list(input_pipeline.make_eval_batches(source, global_batch_size=16,
                                                  preprocess_fn=pp))
  assert len(batches) == 4
  ids = np.concatenate([b['id'][b['mask']] for b in batches])
  assert sorted(ids) == list(range(1000, 1050))


def test_unknown_augmentation():
  with pytest.raises(ValueError, match='Unknown augmentation'):
    preprocess.make(image_size=4, augment=('mixup',))
