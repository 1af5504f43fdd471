"""On-device data selection: scores, Gumbel-top-k sampling, and the sharded gather."""
import itertools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from big_vision_style import hlo_stats
from big_vision_style import selection
from big_vision_style import sharding

ACTOR = np.array([2.0, 1.0, 3.0, 0.5], np.float32)
REFERENCE = np.array([0.5, 2.0, 1.0, 0.25], np.float32)
LEARNER = np.array([4.0, 0.0, 1.5, 1.0], np.float32)


# ----- Scores -----

@pytest.mark.parametrize('policy, expected', [
    ('uniform', np.zeros(4)),
    ('hard_learner', ACTOR),
    ('easy_reference', -REFERENCE),
    ('learnability', ACTOR - REFERENCE),
    ('rho', LEARNER - REFERENCE),
])
def test_score_formulas(policy, expected):
  # All three losses are given and differ, so a policy reading the wrong one (e.g. the reference
  # loss overwritten by the learner's) gives a different answer.
  got = selection.score(policy, actor_loss=ACTOR, reference_loss=REFERENCE, learner_loss=LEARNER)
  assert got.shape == (4,) and got.dtype == jnp.float32
  np.testing.assert_array_equal(got, expected)


def test_score_reads_only_what_needs_says():
  for policy in selection.POLICIES:
    given = {f'{role}_loss': {'actor': ACTOR, 'reference': REFERENCE, 'learner': LEARNER}[role]
             for role in selection.needs(policy)}
    selection.score(policy, **given, num_examples=4)  # Enough for every policy.
  assert selection.needs('uniform') == set()
  assert selection.needs('learnability') == {'actor', 'reference'}
  assert selection.needs('rho') == {'learner', 'reference'}
  assert selection.needs('hard_learner') == {'actor'}
  assert selection.needs('easy_reference') == {'reference'}
  np.testing.assert_array_equal(selection.score('uniform', num_examples=3), np.zeros(3))


def test_score_errors():
  with pytest.raises(ValueError, match='Unknown selection policy'):
    selection.score('learnabilty', actor_loss=ACTOR, reference_loss=REFERENCE)
  with pytest.raises(ValueError, match='Unknown selection policy'):
    selection.needs('random')
  with pytest.raises(ValueError, match='reference_loss'):
    selection.score('learnability', actor_loss=ACTOR)
  with pytest.raises(ValueError, match='learner_loss'):
    selection.score('rho', actor_loss=ACTOR, reference_loss=REFERENCE)
  with pytest.raises(ValueError, match='actor_loss'):
    selection.score('hard_learner', reference_loss=REFERENCE)
  with pytest.raises(ValueError, match='num_examples'):
    selection.score('uniform')
  with pytest.raises(ValueError, match=r'shape \[B\]'):  # Would broadcast to a B x B matrix.
    selection.score('learnability', actor_loss=ACTOR, reference_loss=REFERENCE[:, None])


# ----- Sampling -----

def exact_inclusion(scores, k):
  """P(i in the sample) for k draws without replacement, p = softmax(scores), by enumeration."""
  p = np.exp(scores - scores.max())
  p /= p.sum()
  incl = np.zeros(len(p))
  for order in itertools.permutations(range(len(p)), k):
    prob, left = 1.0, 1.0
    for i in order:
      prob *= p[i] / left
      left -= p[i]
    incl[list(order)] += prob
  return incl


def inclusion_frequency(scores, k, num_draws=20000, seed=0, **kwargs):
  keys = jax.random.split(jax.random.key(seed), num_draws)
  draw = jax.jit(jax.vmap(lambda r: selection.select_indices(scores, k, r, **kwargs)))
  idx = np.asarray(draw(keys))
  assert idx.dtype == np.int32 and idx.shape == (num_draws, k)
  # Without replacement, and sorted ascending: strictly increasing rows.
  assert (np.diff(idx, axis=1) > 0).all()
  return np.bincount(idx.ravel(), minlength=len(scores)) / num_draws


def test_gumbel_top_k_matches_exact_inclusion_probabilities():
  scores = np.array([1.0, 0.0, -1.0, 2.0, 0.5], np.float32)
  expected = exact_inclusion(scores, 2)
  got = inclusion_frequency(jnp.asarray(scores), 2)
  assert np.abs(got - expected).max() < 0.02, (got, expected)
  # Temperature divides the scores: T=2 samples from softmax(scores / 2).
  expected = exact_inclusion(scores / 2, 3)
  got = inclusion_frequency(jnp.asarray(scores), 3, seed=1, temperature=2.0)
  assert np.abs(got - expected).max() < 0.02, (got, expected)


def test_high_temperature_is_uniform_and_topk_is_top_scores():
  scores = jnp.array([5.0, 0.0, -3.0, 2.0, 1.0, -1.0])
  got = inclusion_frequency(scores, 2, temperature=1e6)
  assert np.abs(got - 2 / 6).max() < 0.02, got
  idx = selection.select_indices(scores, 3, jax.random.key(0), method='topk')
  np.testing.assert_array_equal(idx, [0, 3, 4])
  assert idx.dtype == jnp.int32


def test_uniform_policy_selects_uniformly():
  scores = selection.score('uniform', num_examples=10)
  got = inclusion_frequency(scores, 3)
  assert np.abs(got - 3 / 10).max() < 0.02, got


def test_select_indices_errors():
  scores = jnp.zeros(8)
  rng = jax.random.key(0)
  with pytest.raises(ValueError, match='Unknown selection method'):
    selection.select_indices(scores, 2, rng, method='choice')
  with pytest.raises(ValueError, match='temperature'):
    selection.select_indices(scores, 2, rng, temperature=0.0)
  with pytest.raises(ValueError, match='num_selected=9'):
    selection.select_indices(scores, 9, rng)
  with pytest.raises(ValueError, match='num_selected=0'):
    selection.select_indices(scores, 0, rng)
  with pytest.raises(ValueError, match=r'vector \[B\]'):
    selection.select_indices(scores[:, None], 2, rng)


# ----- Global selection and gather, 8 devices vs 1 -----

def put(x, mesh):
  return jax.device_put(x, NamedSharding(mesh, P('data')))


def make_super_batch(super_batch, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(super_batch, 6, 5, 3)).astype(np.float32),
          'label': rng.integers(0, 10, super_batch).astype(np.int32),
          # Ids beyond int32: they must come back as the same int64 values.
          'id': (np.int64(2**40) + rng.permutation(10 * super_batch)[:super_batch]),
          'mask': rng.random(super_batch) < 0.5}


def select_and_gather(scores, batch, mesh, num_selected, rng, method):
  @jax.jit
  def step(scores, batch, rng):
    idx = selection.select_indices(scores, num_selected, rng, method=method)
    return idx, selection.gather(batch, idx, mesh)
  return step(put(scores, mesh), jax.tree.map(lambda x: put(x, mesh), batch), rng)


@pytest.mark.parametrize('method', ['sample', 'topk'])
def test_selection_on_8_devices_equals_1_device(method):
  super_batch, num_selected = 64, 32
  scores = np.random.default_rng(1).normal(size=super_batch).astype(np.float32)
  batch = make_super_batch(super_batch)
  mesh8, mesh1 = sharding.make_mesh(), sharding.make_mesh(1)
  rng = jax.random.key(7)
  with jax.enable_x64(True):  # So that the int64 ids really are int64 on device.
    idx8, out8 = select_and_gather(scores, batch, mesh8, num_selected, rng, method)
    idx1, out1 = select_and_gather(scores, batch, mesh1, num_selected, rng, method)
  np.testing.assert_array_equal(idx8, idx1)
  assert len(set(np.asarray(idx8).tolist())) == num_selected
  expected = {k: v[np.asarray(idx1)] for k, v in batch.items()}
  for key in batch:
    assert out8[key].dtype == out1[key].dtype == batch[key].dtype, key
    np.testing.assert_array_equal(out8[key], out1[key])
    np.testing.assert_array_equal(out8[key], expected[key])
    assert out8[key].shape[0] == num_selected
    assert out8[key].sharding.is_equivalent_to(NamedSharding(mesh8, P('data')), out8[key].ndim)
    assert len(out8[key].sharding.device_set) == 8


def test_selection_is_global_not_per_device():
  # All the high scores sit in the first device's shard. A per-device selection would take
  # b/8 examples from every shard; a global one takes them all from shard 0.
  mesh = sharding.make_mesh()
  scores = np.zeros(64, np.float32)
  scores[:8] = 10.0 + np.arange(8)
  for method in ('topk', 'sample'):
    idx = jax.jit(lambda s, m=method: selection.select_indices(s, 8, jax.random.key(0), method=m))(
        put(scores, mesh))
    np.testing.assert_array_equal(idx, np.arange(8))


def test_gather_is_batch_at_indices():
  mesh = sharding.make_mesh()
  batch = make_super_batch(128, seed=3)
  batch['id'] = batch['id'].astype(np.int32)  # x64 is off here; ids are covered above.
  rng = np.random.default_rng(4)
  gather = jax.jit(lambda b, i: selection.gather(b, i, mesh))
  sharded = jax.tree.map(lambda x: put(x, mesh), batch)
  for num_selected, sort in ((16, True), (64, False), (128, False)):
    idx = rng.choice(128, num_selected, replace=False)
    idx = np.sort(idx) if sort else idx  # Any order works; select_indices sorts.
    out = gather(sharded, jnp.asarray(idx, jnp.int32))
    for key, value in batch.items():
      np.testing.assert_array_equal(out[key], value[idx])
      assert out[key].dtype == value.dtype
  # Eagerly, and on a 1-device mesh, too.
  mesh1 = sharding.make_mesh(1)
  idx = np.array([3, 9, 100, 127])
  out = selection.gather(jax.tree.map(lambda x: put(x, mesh1), batch), idx, mesh1)
  np.testing.assert_array_equal(out['image'], batch['image'][idx])


def test_gather_never_all_gathers_the_super_batch():
  # The compiled (post-SPMD-partitioning) HLO of the gather must hold no collective as large as
  # the super-batch of images, nor (outside the fallback branch) the whole selected batch: the
  # common path moves [b/n, ...] buckets by collective-permute (tests/test_gather.py checks the
  # bytes and the branches). The positive check makes the test fail loudly, rather than pass
  # vacuously, if XLA renames the op. The bound is b/n, not B: it also rejects what GSPMD makes
  # of a plain `x[indices]` (an all-reduce of all b selected rows).
  mesh = sharding.make_mesh()
  super_batch, num_selected = 64, 16
  batch = {'image': put(np.zeros((super_batch, 6, 5, 3), np.float32), mesh),
           'label': put(np.zeros(super_batch, np.int32), mesh)}
  idx = jnp.arange(num_selected, dtype=jnp.int32)
  stats = hlo_stats.collectives(
      jax.jit(lambda b, i: selection.gather(b, i, mesh)).lower(batch, idx).compile())
  assert stats.ops, hlo_stats.format_table(stats)
  for op in stats.ops:
    for array in op.operands + op.results:
      assert array.shape[0] < super_batch, op  # Nothing of the super-batch's size moves.
      if 'gather_fallback' not in op.op_name:  # Not even the full selected batch.
        assert array.shape[0] <= num_selected // 8, op
  permuted = [op for op in stats.of_kind('collective-permute')
              if 'gather_fallback' not in op.op_name]
  # The images' bucket of m = 2 rows, flattened (the leaves of one dtype travel packed).
  assert hlo_stats.Array('f32', (2, 6 * 5 * 3)) in [a for op in permuted for a in op.results]


# ----- Sizes -----

def test_super_batch_size():
  assert selection.super_batch_size(256, 0.5) == 512
  assert selection.super_batch_size(256, 0.8) == 1280  # 256 / 0.2 is 1279.9999999999998.
  assert selection.super_batch_size(256, 0.0) == 256
  assert selection.super_batch_size(64, 0.9) == 640
  assert selection.super_batch_size(96, 0.25) == 128
  for bad in (-0.1, 1.0, 1.5):
    with pytest.raises(ValueError, match=r'config\.selection\.filter_ratio.*\[0, 1\)'):
      selection.super_batch_size(256, bad)
  with pytest.raises(ValueError, match=r'config\.selection\.filter_ratio=0\.3.*not an integer'):
    selection.super_batch_size(256, 0.3)  # 365.71...
  with pytest.raises(ValueError, match='positive integer'):
    selection.super_batch_size(0, 0.5)


def test_indivisible_by_devices():
  mesh = sharding.make_mesh()
  batch = {'image': jnp.zeros((60, 2))}
  with pytest.raises(ValueError, match='super-batch of 60 is not divisible by the 8 devices'):
    selection.gather(batch, jnp.arange(8), mesh)
  batch = {'image': jnp.zeros((64, 2))}
  with pytest.raises(ValueError, match='selected batch of 12 is not divisible by the 8 devices'):
    selection.gather(batch, jnp.arange(12), mesh)
  with pytest.raises(ValueError, match='same leading super-batch axis'):
    selection.gather({'image': jnp.zeros((64, 2)), 'label': jnp.zeros(32)}, jnp.arange(8), mesh)
