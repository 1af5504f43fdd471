"""Bad Students in the trainer: the reference is used and frozen, the actor trains on exactly
the selected examples, the score cache matches the live reference, resume stays bit-exact."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_style import checkpointing
from big_vision_style import input_pipeline
from big_vision_style import methods
from big_vision_style import score_cache
from big_vision_style import selection
from big_vision_style import sharding
from big_vision_style import steps
from big_vision_style import train
from experiments.bad_students import policy_comparison
from experiments.bad_students import reference as reference_config
from tests.helpers import override


@pytest.fixture(scope='module')
def reference_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('reference'))
  train.train(reference_config.get_config('runlocal'), workdir)
  return workdir


def _config(reference_dir, extra=''):
  return policy_comparison.get_config(f'runlocal,reference_workdir={reference_dir}{extra}')


def _step_setup(config, mesh, seed=0):
  """The supervised method's built step, state and a fixed super-batch, for one step."""
  b = config.input.batch_size
  n = selection.super_batch_size(b, config.selection.filter_ratio)
  example = {'image': jax.ShapeDtypeStruct((28, 28, 1), jnp.float32),
             'label': jax.ShapeDtypeStruct((), jnp.int32),
             'id': jax.ShapeDtypeStruct((), jnp.int32),
             'label_flipped': jax.ShapeDtypeStruct((), jnp.bool_)}
  ctx = methods.base.Context(config=config, mesh=mesh, num_classes=10, total_steps=10,
                             example=example, train_rng=jax.random.key(1))
  built = methods.build(ctx)
  replicated = jax.NamedSharding(mesh, jax.P())
  state = jax.jit(built.init, out_shardings=replicated)(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  batch = {'image': rng.normal(size=(n, 28, 28, 1)).astype(np.float32),
           'label': rng.integers(0, 10, n).astype(np.int32), 'id': np.arange(n, dtype=np.int32),
           'label_flipped': np.zeros(n, bool)}
  batch = jax.device_put(batch, input_pipeline.data_sharding(mesh))
  update = jax.jit(built.phases[0].step, donate_argnums=(0,),
                   out_shardings=(replicated, replicated))
  return built, state, batch, update


def test_changing_only_the_reference_changes_the_selection(reference_dir):
  config = _config(reference_dir, ',policy=easy_reference,method=topk')
  mesh = sharding.make_mesh()
  _, state, batch, update = _step_setup(config, mesh)
  # A trained reference and a perturbed copy (a freshly initialised ViT would not do: its
  # zero-initialised head gives every example the same loss, ln 10).
  ref_a, _ = checkpointing.load_trained_params(reference_dir)
  leaves, treedef = jax.tree.flatten(ref_a)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  ref_b = jax.tree.unflatten(treedef, [x + 0.5 * jax.random.normal(k, x.shape)
                                       for x, k in zip(leaves, keys)])
  copy = lambda s: jax.tree.map(jnp.copy, s)  # The step donates its state argument.
  step = jnp.asarray(1, jnp.int32)
  out_a, m_a = update(copy(state), {'reference': ref_a}, batch, step)
  out_a2, _ = update(copy(state), {'reference': ref_a}, batch, step)
  out_b, m_b = update(copy(state), {'reference': ref_b}, batch, step)
  leaves = lambda s: jax.tree.leaves(s['learner']['params'])
  for x, y in zip(leaves(out_a), leaves(out_a2)):  # Deterministic given the reference...
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(leaves(out_a), leaves(out_b)))
  assert float(m_a['selection/reference_loss']) != float(m_b['selection/reference_loss'])
  # ...and the selected examples are the reference's easiest ones.
  assert float(m_a['selection/score_selected']) > float(m_a['selection/score_unselected'])


def test_actor_and_learner_train_on_exactly_the_selected_examples(reference_dir):
  config = _config(reference_dir, ',policy=hard_learner,method=topk')
  mesh = sharding.make_mesh()
  built, state, batch, update = _step_setup(config, mesh)
  models_by_role, txs = built.models, built.txs
  expected_state = jax.device_get(state)
  # By hand: actor losses on the super-batch, top-b, one update of each role on those.
  actor_loss = steps.per_example_loss(models_by_role['actor'], state['actor']['params'], batch,
                                      num_classes=10)
  b = config.input.batch_size
  chosen_idx = np.sort(np.argsort(-np.asarray(actor_loss), kind='stable')[:b])
  chosen = jax.tree.map(lambda x: np.asarray(x)[chosen_idx], batch)
  rng = jax.random.fold_in(jax.random.key(1), 1)
  _, rng_learner, rng_actor, _ = jax.random.split(rng, 4)
  want = {}
  for role, r in (('learner', rng_learner), ('actor', rng_actor)):
    # Jitted on its own (op by op it compiled ~500 programs); not the trainer's program.
    by_hand = jax.jit(functools.partial(steps.sgd_step, models_by_role[role], txs[role],
                                        num_classes=10, label_smoothing=0.1))
    want[role], _ = by_hand(expected_state[role], chosen, r)
  got, m = update(state, {}, batch, jnp.asarray(1, jnp.int32))
  for role in ('learner', 'actor'):
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6),
                 jax.device_get(got[role]['params']), jax.device_get(want[role]['params']))
  np.testing.assert_allclose(float(m['selection/score_selected']),
                             np.sort(np.asarray(actor_loss))[-b:].mean(), rtol=1e-5)


def test_reference_is_frozen_and_outside_the_optimiser(reference_dir, tmp_path):
  before, _ = checkpointing.load_trained_params(reference_dir)
  _, state = train.train(_config(reference_dir, ',policy=learnability'), str(tmp_path))
  assert set(state) == {'learner', 'actor'}  # No reference params, so no optimiser state.
  after, _ = checkpointing.load_trained_params(reference_dir)
  jax.tree.map(np.testing.assert_array_equal, before, after)
  # An online reference, by contrast, is trained (on the whole super-batch).
  _, online = train.train(_config(reference_dir, ',policy=learnability,reference=online'),
                          str(tmp_path / 'online'))
  assert set(online) == {'learner', 'actor', 'reference'}


def test_score_cache_gives_the_same_selection_as_the_live_reference(reference_dir, tmp_path):
  config = _config(reference_dir, ',policy=easy_reference,method=topk')
  ids, scores, meta = score_cache.compute_reference_scores(config)
  assert len(ids) == 50_000 and meta['flops'] > 0
  path = str(tmp_path / 'scores.npz')
  score_cache.save(path, ids, scores, meta)
  live_final, live = train.train(config, str(tmp_path / 'live'))
  cached_config = _config(reference_dir,
                          f',policy=easy_reference,method=topk,reference=cached,score_cache={path}')
  cached_final, cached = train.train(cached_config, str(tmp_path / 'cached'))
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6),
               jax.device_get(live['learner']['params']),
               jax.device_get(cached['learner']['params']))
  np.testing.assert_allclose(live_final['selection/score_selected'],
                             cached_final['selection/score_selected'], rtol=1e-5)
  # The cached run counts the one-off cache computation, not a reference forward per step,
  # and, as the live run does, the reference's training (recorded in the cache's metadata).
  assert cached_final['flops/reference_scoring'] == pytest.approx(meta['flops'])
  assert live_final['flops/reference_train'] > 0
  assert cached_final['flops/reference_train'] == pytest.approx(live_final['flops/reference_train'])


def test_resume_is_bit_exact_with_selection_on(reference_dir, tmp_path):
  config = _config(reference_dir, ',policy=learnability')
  _, whole = train.train(config, str(tmp_path / 'a'))
  partial, _ = train.train(config, str(tmp_path / 'b'), stop_after_step=4)
  assert partial['step'] == 4
  _, resumed = train.train(config, str(tmp_path / 'b'))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(whole), jax.device_get(resumed))


def test_invalid_selection_settings_are_clear_errors(reference_dir, tmp_path):
  with pytest.raises(ValueError, match='filter_ratio'):
    train.train(_config(reference_dir, ',filter_ratio=1.0'), str(tmp_path / 'f'))
  with pytest.raises(ValueError, match='filter_ratio'):
    train.train(_config(reference_dir, ',filter_ratio=-0.1'), str(tmp_path / 'g'))
  config = _config(reference_dir, ',filter_ratio=0.2')
  with config.unlocked():
    config.input.batch_size = 16  # B = 20: not a multiple of 8 devices.
  with pytest.raises(ValueError, match='super-batch of 20 examples .* not divisible by the 8'):
    train.train(config, str(tmp_path / 'h'))
  with pytest.raises(FileNotFoundError, match='No checkpoint under'):
    train.train(_config(str(tmp_path / 'nowhere')), str(tmp_path / 'i'))
  with pytest.raises(ValueError, match='config.selection.policy'):
    train.train(_config(reference_dir, ',policy=loudest'), str(tmp_path / 'j'))


def test_reference_loads_from_a_relative_workdir(reference_dir):
  """Configs name workdirs relative to the repo (orbax itself needs absolute paths)."""
  relative = os.path.relpath(reference_dir)
  assert not os.path.isabs(relative)
  params, meta = checkpointing.load_trained_params(relative)
  assert meta['step'] == 6 and jax.tree.leaves(params)


def test_scoring_forward_passes_are_counted(reference_dir, tmp_path):
  """Guards against claiming savings while the scoring forwards go uncounted."""
  steps_run = 6  # runlocal.
  final, _ = train.train(_config(reference_dir, ',policy=learnability'), str(tmp_path / 's'))
  per_step = {k: final[f'flops/{k}'] / steps_run
              for k in ('learner_train', 'scoring', 'actor_train', 'reference_scoring')}
  # f = 0.5: the actor and the reference each run a forward over B = 2b examples. A train step
  # costs about 3 forwards of b examples, so a B-example forward is about 2/3 of the actor's
  # train step (the actor and the reference share one architecture); selection adds a little.
  assert per_step['scoring'] == pytest.approx(2 / 3 * per_step['actor_train'], rel=0.25)
  assert per_step['reference_scoring'] == pytest.approx(2 / 3 * per_step['actor_train'], rel=0.25)
  assert final['flops/total'] == pytest.approx(
      final['flops/learner'] + final['flops/scoring'] + final['flops/actor'] +
      final['flops/reference'])
  assert final['flops/total'] > final['flops/learner'] + final['flops/reference_train']
  # I.i.d. batches cost the learner update and nothing else (the step's few scalar extras, such
  # as the logged learning rate, land in `scoring`: tens of FLOPs); drawing b of B = 2b
  # uniformly (the comparison's uniform policy) adds only the random draw and the gather.
  iid, _ = train.train(_config(reference_dir, ',policy=uniform,filter_ratio=0'),
                       str(tmp_path / 'iid'))
  assert iid['flops/scoring'] < 1e-4 * iid['flops/learner']
  assert iid['flops/actor'] == iid['flops/reference'] == 0
  uniform, _ = train.train(_config(reference_dir, ',policy=uniform'), str(tmp_path / 'u'))
  # (Under 2% of even this smoke-sized learner's 20 MFLOP step.)
  assert 0 < uniform['flops/scoring'] < 0.02 * uniform['flops/learner']


def test_a_reference_trained_on_another_device_layout_loads_onto_this_one(tmp_path):
  """A reference trained on a smaller slice (here 2 of the 8 devices) is restored replicated
  onto all of this run's devices (orbax alone refuses: "topology mismatch")."""
  workdir = str(tmp_path / 'reference_on_2')
  train.train(override(reference_config.get_config('runlocal'), mesh_devices=2, total_steps=2,
                       evals={}), workdir)
  params, _ = checkpointing.load_trained_params(workdir)
  assert {len(x.sharding.device_set) for x in jax.tree.leaves(params)} == {8}
  final, _ = train.train(override(_config(workdir, ',policy=learnability'), total_steps=2,
                                  evals={}), str(tmp_path / 'learner'))
  assert final['step'] == 2 and np.isfinite(final['train/loss'])
