"""The contrastive objective in the trainer: JEST / ActiveCLIP selection inside the jitted step,
the reference embedding cache against the live reference, Flexi-JEST's split batch, FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_style import contrastive
from big_vision_style import embedding_cache
from big_vision_style import image_text
from big_vision_style import models
from big_vision_style import train
from big_vision_style.methods import contrastive as contrastive_method
from big_vision_style.tools import reference_embeddings
from experiments.jest import common
from experiments.jest import filter_ratio
from experiments.jest import reference
from tests.helpers import override
from tests.helpers import read_rows

TRAIN_SIZE = 512  # Pairs in the learner's (uncurated) pool; the rest is the curated holdout.


def _small(config, **overrides):
  with config.unlocked():
    config.data.holdout_size = 60_000 - TRAIN_SIZE
    for ev in config.evals.values():
      ev.batch_size = 256
    config.evals.retrieval.max_examples = 256
  return override(config, **overrides)


@pytest.fixture(scope='module')
def reference_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('reference'))
  train.train(_small(reference.get_config('runlocal')), workdir)
  return workdir


def test_jest_step_runs_with_live_and_cached_reference_identically(reference_dir, tmp_path):
  # Without reusing the scoring forward, so the learner's scoring is a forward over B alone
  # and compares with the live reference's.
  live = _small(filter_ratio.get_config(
      f'runlocal,filter_ratio=0.75,num_chunks=4,reference_workdir={reference_dir},reuse=false'))
  cache = reference_embeddings.compute(live, batch_size=256)
  assert len(cache.ids) == TRAIN_SIZE and cache.dim == live.model.embed_dim
  path = str(tmp_path / 'cache.npz')
  embedding_cache.save(path, cache)
  cached = _small(filter_ratio.get_config(
      f'runlocal,filter_ratio=0.75,num_chunks=4,reference_workdir={reference_dir},'
      f'reference=cached,embedding_cache={path},reuse=false'))

  final_live, state_live = train.train(live, str(tmp_path / 'live'))
  final_cached, state_cached = train.train(cached, str(tmp_path / 'cached'))
  rows_live, rows_cached = read_rows(tmp_path / 'live'), read_rows(tmp_path / 'cached')
  # Same selections, so the same learner: the cache is exactly the live reference's embeddings.
  for key in ('train/loss', 'selection/learnability_selected',
              'selection/corrupted_selected'):
    np.testing.assert_allclose([r[key] for r in rows_live], [r[key] for r in rows_cached],
                               rtol=1e-4, atol=1e-6, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               state_live['learner']['params'], state_cached['learner']['params'])
  # Learnability sampling prefers learnable sub-batches over the i.i.d. first b of B.
  sel, iid = (np.mean([r[f'selection/learnability_{k}'] for r in rows_live])
              for k in ('selected', 'iid'))
  assert sel > iid
  # The live reference costs a forward over B every step; the cached one its one-off pass.
  steps = final_live['step']
  assert final_live['flops/reference_scoring'] > 0
  assert final_cached['flops/reference_scoring'] == pytest.approx(
      cache.table.meta['flops'], rel=1e-6)
  per_step_ref = final_live['flops/reference_scoring'] / steps
  assert per_step_ref == pytest.approx(final_live['flops/scoring'] / steps, rel=0.2)
  assert final_live['flops/learner_train'] == pytest.approx(final_cached['flops/learner_train'])
  for key in ('eval/zeroshot/accuracy', 'eval/retrieval/i2t_recall_at_1'):
    assert 0.0 <= final_live[key] <= 1.0


@pytest.mark.parametrize('role', ['learner', 'actor'])  # JEST; ActiveCLIP's online actor.
def test_reusing_the_scoring_forward_trains_the_same_models_for_fewer_flops(role, reference_dir,
                                                                            tmp_path):
  from experiments.bad_students import active_clip  # pylint: disable=g-import-not-at-top
  runs = {}
  for reuse in ('false', 'true'):
    if role == 'learner':
      config = filter_ratio.get_config(f'runlocal,filter_ratio=0.75,num_chunks=4,'
                                       f'reference_workdir={reference_dir},reuse={reuse}')
    else:
      config = active_clip.get_config(f'runlocal,reference_workdir={reference_dir},'
                                      f'reuse={reuse}')
    config = _small(config)
    assert contrastive_method.reusing_role(contrastive_method.selection_config(config)) == (
        role if reuse == 'true' else None)
    final, state = train.train(config, str(tmp_path / reuse))
    runs[reuse] = final, state[role]['params'], read_rows(tmp_path / reuse)
  (plain, plain_params, plain_rows), (reused, reused_params, reused_rows) = (
      runs['false'], runs['true'])
  keys = ['train/loss', 'selection/learnability_selected'] + (
      ['actor/loss'] if role == 'actor' else [])
  for key in keys:
    np.testing.assert_allclose([r[key] for r in reused_rows], [r[key] for r in plain_rows],
                               rtol=1e-4, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-3), reused_params,
               plain_params)
  # The scorer's step loses its forward over b: about a third of forward + backward.
  assert 0.6 < reused[f'flops/{role}_train'] / plain[f'flops/{role}_train'] < 0.75
  assert reused['flops/reference_scoring'] == plain['flops/reference_scoring']


def test_independent_selection_and_uniform_baseline_run(reference_dir, tmp_path):
  for arg in ('policy=uniform', 'method=independent,policy=easy_reference,filter_ratio=0.5'):
    config = _small(filter_ratio.get_config(f'runlocal,{arg},reference_workdir={reference_dir}'))
    final, _ = train.train(config, str(tmp_path / arg.replace(',', '_')))
    assert np.isfinite(final['train/loss'])
    if arg == 'policy=uniform':  # No scoring: the learner's step is the whole cost.
      assert final['flops/scoring'] == final['flops/reference_scoring'] == 0
      assert final['flops/total'] == final['flops/learner_train']


def test_flexi_loss_trains_half_the_batch_at_each_patch_size():
  model = models.get_model('two_towers').Model(
      embed_dim=8, image=dict(width=8, depth=1, mlp_dim=16, num_heads=1, patch_size=(4, 4)),
      text=dict(width=8, depth=1, mlp_dim=16, num_heads=1, vocab_size=20))
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.normal(size=(6, 16, 16, 3)), jnp.float32),
           'text': jnp.asarray(rng.integers(1, 20, size=(6, 5)), jnp.int32)}
  # Each piece jitted (op by op, the test compiled some 330 programs).
  params = jax.jit(lambda k: image_text.init_params(model, k, (1, 16, 16, 3), (1, 5)))(
      jax.random.key(0))
  got = jax.jit(lambda p, x: image_text.loss_fn(model, p, x, loss='sigmoid',
                                                flexi_patch_size=(8, 8)))(params, batch)

  @jax.jit
  def by_hand(p, x):
    zimg_a, ztxt, out = model.apply({'params': p}, x['image'][:3], x['text'])
    zimg_b, _, _ = model.apply({'params': p}, x['image'][3:], None, patch_size=(8, 8))
    return contrastive.sigmoid_loss(jnp.concatenate([zimg_a, zimg_b]), ztxt, out['t'], out['b'])

  np.testing.assert_allclose(got, by_hand(params, batch), rtol=1e-6)
  # Not the same as training everything at the native patch.
  native = jax.jit(lambda p, x: image_text.loss_fn(model, p, x, loss='sigmoid'))(params, batch)
  assert abs(float(native) - float(got)) > 1e-4


def test_bad_selection_configs_name_the_problem():
  for arg, match in (('method=greedy', 'config.selection.method'),
                     ('num_chunks=5', 'num_chunks=5 does not divide'),
                     ('filter_ratio=1.0', 'filter_ratio=1.0 must be in'),
                     ('flexi,reuse=true', 'reuse_scoring_forward cannot be used with Flexi')):
    with pytest.raises(ValueError, match=match):
      contrastive_method.selection_config(filter_ratio.get_config(arg))
  config = filter_ratio.get_config('')
  with config.unlocked():
    config.selection.temperature = 2.0
  with pytest.raises(ValueError, match="Unknown config.selection key"):
    contrastive_method.selection_config(config)
  assert contrastive_method.roles_needed(contrastive_method.selection_config(
      filter_ratio.get_config('scorer=actor'))) == {'actor', 'reference'}
  assert common.reference_workdir('uncurated') == 'workdirs/jest/reference_uncurated'
  with pytest.raises(ValueError, match='Unknown reference pool'):
    common.reference_workdir('web')


def test_benchmark_versions_set_the_data_knobs():
  data = filter_ratio.get_config('').data
  assert (data.caption_style, data.layout, data.corruption_rate) == ('alt_text', 'centred', 0.3)
  data = filter_ratio.get_config('benchmark=v1').data
  assert (data.caption_style, data.layout, data.corruption_rate) == ('attributes', 'grid', 0.5)
  assert filter_ratio.get_config('benchmark=v1,corruption=0.0').data.corruption_rate == 0.0
  from experiments.jest import reference  # pylint: disable=g-import-not-at-top
  assert reference.get_config('benchmark=v1').data.layout == 'grid'
  with pytest.raises(ValueError, match="benchmark='v3'"):
    filter_ratio.get_config('benchmark=v3')


@pytest.mark.parametrize('module', ['filter_ratio', 'flexi', 'reference', 'reference_curation',
                                    'sampler_quality', 'table1', 'variants', 'active_clip'])
@pytest.mark.parametrize('mode', ['', 'runlocal', 'tpu'])
def test_every_image_text_config_builds_a_valid_selection(module, mode):
  import importlib  # pylint: disable=g-import-not-at-top
  package = 'experiments.bad_students' if module == 'active_clip' else 'experiments.jest'
  config = importlib.import_module(f'{package}.{module}').get_config(mode)
  assert config.objective == 'contrastive' and config.model_name == 'two_towers'
  sel = contrastive_method.selection_config(config)
  assert sel['super_batch_size'] * (1 - sel['filter_ratio']) == pytest.approx(
      config.input.batch_size)
  if mode == 'tpu':
    assert config.input.batch_size == 32_768 and config.model.image.variant == 'B/16'
