"""ReLA and BYOL: targets (PCA, z-score, by id), transport loss, switch rule, EMA target, data
budget, frozen priors, big_vision checkpoints, linear probe, exact resume across the switch."""

import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_style.methods import byol
from big_vision_style import checkpointing
from big_vision_style import datasets
from big_vision_style import input_pipeline
from big_vision_style import models
from big_vision_style import priors
from big_vision_style.methods import rela
from big_vision_style import rela_targets
from big_vision_style import score_cache
from big_vision_style import train
from big_vision_style import views
from big_vision_style.evaluators import linear_probe
from experiments.rela import common
from experiments.rela import prior as prior_config
from experiments.rela import table1
from tests.helpers import override
from tests.helpers import read_rows as _rows

TRAIN_SIZE = 1000  # Tests train on a 1k-example `train` split (the rest is held out).


@pytest.fixture(scope='module', autouse=True)
def _persistent_compilation_cache(tmp_path_factory):
  """The resume test compiles the same two steps three times: cache them on disk.

  For this module only: the settings and the cache's state are restored afterwards.
  """
  keys = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
          'jax_persistent_cache_min_entry_size_bytes')
  before = {k: jax.config.values[k] for k in keys}
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('jax_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  compilation_cache.reset_cache()
  yield
  for key, value in before.items():
    jax.config.update(key, value)
  compilation_cache.reset_cache()


def _student_config(root, arg='', **overrides):
  config = table1.get_config(f'runlocal,root={root}{"," + arg if arg else ""}')
  with config.unlocked():
    config.data.holdout_size = 60_000 - TRAIN_SIZE
  return override(config, **overrides)


# ----- Pure pieces -----
def test_pca_whitening_gives_zero_mean_unit_variance_targets_of_the_requested_size():
  rng = np.random.default_rng(0)
  # 40-d features of rank 12, far from centred and with very unequal scales.
  feats = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 40)) * 7 + 3
  targets, info = rela_targets.pca_whiten(feats, 8)
  assert targets.shape == (500, 8) and targets.dtype == np.float32
  np.testing.assert_allclose(targets.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(targets.std(0), 1, atol=1e-5)
  # Principal components are uncorrelated, and the first 8 of 12 explain most of the variance.
  np.testing.assert_allclose(np.corrcoef(targets.T), np.eye(8), atol=1e-4)
  assert 0.8 < info['explained_variance'] < 1.0 and info['rank'] == 12
  # More dimensions than the features' rank: capped, never z-scored noise.
  targets, info = rela_targets.pca_whiten(feats, 30)
  assert targets.shape == (500, 12) and info['dim'] == 12 and info['requested_dim'] == 30


def test_transport_loss_is_zero_for_aligned_features():
  rng = np.random.default_rng(1)
  y = rng.normal(size=(6, 5)).astype(np.float32)
  np.testing.assert_allclose(rela.transport_loss(y, y), 0, atol=1e-6)
  np.testing.assert_allclose(rela.transport_loss(3.5 * y, y), 0, atol=1e-6)  # Scale-free.
  np.testing.assert_allclose(rela.transport_loss(-y, y), 2, atol=1e-6)
  orthogonal = np.stack([np.array([1, 0, 0, 0, 0.]), np.array([0, 1, 0, 0, 0.])])
  np.testing.assert_allclose(rela.transport_loss(orthogonal, orthogonal[::-1]), 1, atol=1e-6)


def test_switch_fires_exactly_when_rho_crosses_the_threshold():
  cfg = rela.config_of({'rela': {'targets': 'unused.npz'}})['switch']
  assert (cfg['fast'], cfg['slow'], cfg['threshold']) == (0.999, 0.99, 0.995)  # The paper's.
  cfg = dict(cfg, fast=0.9, slow=0.5)  # Faster EMAs: the crossing happens within 200 steps.
  # A loss that falls quickly, then plateaus (the rule's intended trigger).
  losses = np.concatenate([np.linspace(1.0, 0.3, 40), np.full(160, 0.3)]).astype(np.float32)
  f32 = np.float32
  fast, slow, expected = f32(rela.FAST_INIT), f32(rela.SLOW_INIT), None
  for step, loss in enumerate(losses, start=1):  # The rule, by hand (in float32, as on device).
    fast = f32(0.9) * fast + f32(1 - 0.9) * loss
    slow = f32(0.5) * slow + f32(1 - 0.5) * fast
    if expected is None and np.exp(-np.maximum(slow - fast, f32(0))) >= 0.995:
      expected = step
  assert expected is not None and 40 < expected < 200
  sw = rela.init_switch()
  fired = []
  for step, loss in enumerate(losses, start=1):
    sw = rela.update_switch(sw, loss, step, cfg, total_steps=len(losses))
    if bool(sw['switched']):
      fired.append((step, int(sw['switch_step'])))
  assert fired[0] == (expected, expected)
  assert float(sw['rho']) >= 0.995
  # The fraction rule and the plateau rule's cap switch at a fixed step instead.
  for rule_cfg in (dict(cfg, rule='fraction', fraction=0.25),
                   dict(cfg, threshold=0.99999, max_fraction=0.25)):
    first = next(s for s in range(1, 201) if bool(rela.update_switch(
        rela.init_switch(), 0.5, s, rule_cfg, total_steps=200)['switched']))
    assert first == 50


def test_ema_target_update_and_momentum_schedule():
  target = {'w': jnp.array([1.0, 2.0])}
  online = {'w': jnp.array([3.0, 0.0])}
  np.testing.assert_allclose(byol.ema(target, online, 0.9)['w'], [1.2, 1.8], rtol=1e-6)
  np.testing.assert_allclose(byol.ema(target, online, 1.0)['w'], target['w'])
  kw = dict(base=0.99, end=1.0, schedule='cosine')
  assert float(byol.momentum_at(1, 101, **kw)) == pytest.approx(0.99)
  assert float(byol.momentum_at(51, 101, **kw)) == pytest.approx(0.995)
  assert float(byol.momentum_at(101, 101, **kw)) == pytest.approx(1.0)
  assert float(byol.momentum_at(70, 101, base=0.99, end=1.0, schedule='constant')) == (
      pytest.approx(0.99))
  # The trainer's hook: only the encoder and projector are averaged into the target.
  enc = models.get_model('vit').Model(num_classes=None, width=8, depth=1, mlp_dim=8,
                                      num_heads=1, patch_size=(7, 7))
  obj = byol.Byol(enc, 10, dict(projector_hidden=8, projector_dim=4, predictor_hidden=8,
                                momentum_schedule='constant', momentum=0.75))
  params = jax.jit(obj.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  moved = jax.tree.map(lambda x: x + 1.0, params)
  state = {'learner': {'params': moved}, 'target': obj.target_of(params)}
  new_state, m = jax.jit(obj.after_update, static_argnums=(1, 2))(state, 5, 10)
  assert float(m) == pytest.approx(0.75) and set(new_state['target']) == {'encoder', 'projector'}
  jax.tree.map(lambda t, p: np.testing.assert_allclose(t, p + 0.25, atol=1e-6),
               new_state['target'], obj.target_of(params))


class _Tiny:
  def __init__(self, n):
    self.ids = np.arange(100, 100 + n)
    self.num_classes = 2

  def __len__(self):
    return len(self.ids)

  def __getitem__(self, i):
    return {'image': np.zeros((2, 2, 1), np.float32), 'label': np.int32(0), 'id': self.ids[i]}


def test_epoch_subsets_have_the_right_size_no_repeats_and_change_every_epoch():
  source = _Tiny(200)
  stream = input_pipeline.EpochSubsets(source, 0.2, seed=3)
  assert stream.epoch_size == 40
  epochs = [[int(stream[e * 40 + j]['id']) for j in range(40)] for e in range(3)]
  for ids in epochs:
    assert len(set(ids)) == 40 and set(ids) <= set(source.ids.tolist())
  assert set(epochs[0]) != set(epochs[1]) != set(epochs[2])
  # A pure function of (seed, epoch): another instance reads the same subsets.
  again = input_pipeline.EpochSubsets(source, 0.2, seed=3)
  assert [int(again[40 + j]['id']) for j in range(40)] == epochs[1]
  assert set(int(input_pipeline.EpochSubsets(source, 0.2, seed=4)[j]['id'])
             for j in range(40)) != set(epochs[0])
  # Through the grain iterator, with resume from a saved state.
  make = lambda: input_pipeline.make_train_iterator(
      source, global_batch_size=8, seed=3, preprocess_fn=lambda e, rng: e, data_ratio=0.2)
  it = make()
  first = [next(it)['id'].tolist() for _ in range(5)]
  assert sum(first, []) == epochs[0]  # One epoch = 40 examples = 5 batches.
  state = it.get_state()
  expected = [next(it)['id'].tolist() for _ in range(3)]
  resumed = make()
  resumed.set_state(state)
  assert [next(resumed)['id'].tolist() for _ in range(3)] == expected
  for bad in (0.0, -0.1, 1.5):
    with pytest.raises(ValueError, match=r'data_ratio=.* must be in \(0, 1\]'):
      input_pipeline.epoch_size(200, bad)


def test_views_are_deterministic_and_identity_without_augmentation():
  images = jnp.asarray(np.random.default_rng(0).normal(size=(4, 28, 28, 1)), jnp.float32)
  none = views.ViewConfig(crop_scale=(1.0, 1.0), flip=False, jitter_prob=0.0)
  np.testing.assert_allclose(views.augment(jax.random.key(0), images, none), images, atol=1e-5)
  # A full-size, square "crop" with a flip is an exact mirror.
  flip = views.ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0)
  out = np.asarray(views.augment(jax.random.key(1), images, flip))
  for a, b in zip(out, np.asarray(images)):
    assert np.allclose(a, b, atol=1e-5) or np.allclose(a, b[:, ::-1], atol=1e-5)
  v1, v2 = views.two_views(jax.random.key(2), images, views.BYOL)
  w1, _ = views.two_views(jax.random.key(2), images, views.BYOL)
  np.testing.assert_array_equal(v1, w1)
  assert v1.shape == images.shape and not np.allclose(v1, v2)


def test_linear_probe_fits_separable_features():
  rng = np.random.default_rng(0)
  means = rng.normal(size=(3, 6)) * 4
  y = rng.integers(0, 3, 300)
  x = means[y] + rng.normal(size=(300, 6))
  w, loss = jax.jit(lambda x, y: linear_probe.fit_logistic_regression(
      x, y, num_classes=3, l2=1e-4, steps=100))(jnp.asarray(x, jnp.float32), jnp.asarray(y))
  w = np.asarray(w)
  accuracy = np.mean(np.argmax(x @ w[:-1] + w[-1], -1) == y)
  assert accuracy > 0.97 and float(loss) < 0.15


def _vit_params():
  model = models.get_model('vit').Model(num_classes=None, width=8, depth=2, mlp_dim=16,
                                        num_heads=2, patch_size=(7, 7), pool_type='tok')
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  return model, jax.tree.map(np.asarray, params)


def _flatten(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    out.update(_flatten(v, f'{prefix}{k}/') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def test_big_vision_npz_loader_round_trips(tmp_path):
  model, params = _vit_params()
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))[
      'params'])
  head = {'kernel': np.ones((8, 3), np.float32), 'bias': np.zeros(3, np.float32)}
  # 1. Our names, as big_vision saves them: {'params': ...}, with a head to drop.
  plain = _flatten({'params': {**params, 'head': head}})
  # 2. A SigLIP-style two-tower file: the image tower under img/, scanned encoder blocks, a
  #    MAP head (dropped), plus a text tower to ignore.
  tower = {**params, 'Transformer': dict(params['Transformer'])}
  blocks = [tower['Transformer'].pop(f'encoderblock_{i}') for i in range(2)]
  tower['Transformer'] = {**tower['Transformer'], 'encoderblock': jax.tree.map(
      lambda *xs: np.stack(xs), *blocks)}
  siglip = _flatten({'params': {'img': {**tower, 'MAPHead_0': {'probe': np.zeros((1, 1, 8))}},
                                'txt': {'Embed_0': {'embedding': np.zeros((5, 8))}}}})
  # 3. The original vit_jax layout: posemb inside the encoder, with an extra [CLS] entry.
  old = {k: v for k, v in params.items() if k != 'pos_embedding'}
  cls_pe = np.full((1, 1, 8), 0.5, np.float32)
  old['Transformer'] = {**params['Transformer'], 'posembed_input': {
      'pos_embedding': np.concatenate([cls_pe, params['pos_embedding']], axis=1)}}
  old['cls'] = params['cls'] - cls_pe
  for name, flat in (('plain', plain), ('siglip', siglip), ('vit_jax', _flatten(old))):
    path = str(tmp_path / f'{name}.npz')
    np.savez(path, **flat)
    loaded = priors.load_big_vision_npz(path, abstract)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), loaded, params)
  # As a prior: same features as the original model.
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 28, 28, 1)), jnp.float32)
  prior_cfg = dict(kind='big_vision_npz', path=str(tmp_path / 'siglip.npz'), model_name='vit',
                   model=dict(width=8, depth=2, mlp_dim=16, num_heads=2, patch_size=(7, 7),
                              pool_type='tok'))
  prior_model, prior_params, _ = priors.load(prior_cfg, (1, 28, 28, 1))
  np.testing.assert_allclose(priors.features_fn(prior_model)(prior_params, {'image': images}),
                             model.apply({'params': params}, images)[1]['pre_logits'], atol=1e-5)
  # A file that does not fit the configured model says what is wrong.
  np.savez(str(tmp_path / 'wide.npz'), **_flatten({**params, 'pos_embedding': np.zeros(
      (1, 16, 4))}))
  with pytest.raises(ValueError, match='does not fit config.rela.prior.model'):
    priors.load_big_vision_npz(str(tmp_path / 'wide.npz'), abstract)


def test_digits_and_class_subset_sources():
  train_split = datasets.get_source({'name': 'sklearn_digits'}, 'train')
  test_split = datasets.get_source({'name': 'sklearn_digits'}, 'test')
  assert len(train_split) + len(test_split) == 1797 and len(test_split) == 359
  assert not set(train_split.ids) & set(test_split.ids)
  ex = train_split[0]
  assert ex['image'].shape == (28, 28, 1) and ex['image'].dtype == np.uint8
  assert ex['image'].max() > 128  # Scaled from 0..16 to 0..255.
  half = datasets.get_source({'name': 'sklearn_digits', 'classes': (0, 1, 2, 3, 4)}, 'train')
  labels = [int(half[i]['label']) for i in range(len(half))]
  assert set(labels) == {0, 1, 2, 3, 4} and 0.4 < len(half) / len(train_split) < 0.6
  assert set(half.ids) <= set(train_split.ids)


# ----- The trainer: a trained prior, its targets, students -----
@pytest.fixture(scope='module')
def prior_setup(tmp_path_factory):
  """A tiny trained prior (digits), and its targets for the 1k-example training split."""
  root = str(tmp_path_factory.mktemp('rela'))
  train.train(prior_config.get_config('prior=digits,runlocal'), f'{root}/priors/digits')
  config = _student_config(root, 'prior=digits')
  ids, targets, meta = rela_targets.compute_targets(config)
  score_cache.save(config.rela.targets, ids, targets, meta)
  return root, ids, targets, meta


def test_targets_cover_the_training_split_by_id(prior_setup):
  root, ids, targets, meta = prior_setup
  config = _student_config(root, 'prior=digits')
  source = datasets.get_source(config.data, 'train')
  assert sorted(ids.tolist()) == sorted(source.ids.tolist()) and len(ids) == TRAIN_SIZE
  assert targets.shape == (TRAIN_SIZE, meta['dim']) and meta['dim'] <= 16  # Student width 16.
  np.testing.assert_allclose(targets.mean(0), 0, atol=1e-4)
  # The one-off embedding pass is measured, and the prior's training FLOPs come along.
  assert meta['flops'] > 0 and meta['prior_train_flops'] > 0
  attached = rela.with_targets(source, rela.load_targets(config.rela.targets))
  row = attached[7]
  np.testing.assert_array_equal(row[rela.TARGET_KEY], targets[list(ids).index(row['id'])])


def test_prior_never_changes(prior_setup):
  root, ids, targets, _ = prior_setup
  prior_dir = f'{root}/priors/digits'
  before, _ = checkpointing.load_trained_params(prior_dir)
  # Embedding again gives bit-identical targets (the prior is only read) ...
  config = _student_config(root, 'prior=digits')
  ids2, targets2, _ = rela_targets.compute_targets(config)
  np.testing.assert_array_equal(ids2, ids)
  np.testing.assert_array_equal(targets2, targets)
  # ... and a supervised ReLA student trains without the prior in its state or touching it.
  final, state = train.train(_student_config(root, 'prior=digits,objective=supervised',
                                             evals={}), f'{root}/supervised')
  assert set(state) == {'learner', 'rela'} and final['rela/switch_step'] == 4
  after, _ = checkpointing.load_trained_params(prior_dir)
  jax.tree.map(np.testing.assert_array_equal, before, after)
  # The supervised student's head trained during the ReLA phase, its encoder too.
  rows = _rows(f'{root}/supervised')
  assert 'rela/loss' in rows[0] and 'train/loss' in rows[-1] and 'rela/loss' not in rows[-1]


def test_byol_with_rela_resumes_bit_exactly_across_the_switch(prior_setup):
  root, _, _, meta = prior_setup
  config = _student_config(root, 'prior=digits')  # BYOL; switch at step 4 of 8 (runlocal).
  with config.unlocked():
    config.evals = {k: v for k, v in config.evals.items() if k == 'probe'}
  _, uninterrupted = train.train(config, f'{root}/a')
  no_evals = _student_config(root, 'prior=digits', evals={})
  partial, partial_state = train.train(no_evals, f'{root}/b', stop_after_step=3)
  assert partial['step'] == 3 and not bool(partial_state['rela']['switched'])  # Before it.
  _, resumed = train.train(no_evals, f'{root}/b')
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(uninterrupted),
               jax.device_get(resumed))
  assert int(resumed['rela']['switch_step']) == 4 and bool(resumed['rela']['switched'])
  rows_a, rows_b = _rows(f'{root}/a'), _rows(f'{root}/b')
  assert [r['step'] for r in rows_a] == [r['step'] for r in rows_b] == [2, 4, 6, 8]
  for ra, rb in zip(rows_a, rows_b):
    for key in rb:
      if key != 'wall_s':
        assert ra[key] == rb[key], key
  # The switch step is logged; ReLA steps then BYOL steps, each costed by its own program.
  assert [r.get('rela/switch_step') for r in rows_a] == [None, 4, 4, 4]
  assert 'rela/loss' in rows_a[1] and 'train/momentum' in rows_a[3]
  rela_step = (rows_a[1]['flops/learner_train'] - rows_a[0]['flops/learner_train']) / 2
  byol_step = (rows_a[3]['flops/learner_train'] - rows_a[2]['flops/learner_train']) / 2
  assert 0 < rela_step < byol_step  # BYOL adds the target's forwards and the predictor.
  assert rows_a[-1]['flops/prior_embedding'] == pytest.approx(meta['flops'])
  assert rows_a[-1]['flops/prior_train'] == pytest.approx(meta['prior_train_flops'])
  assert 0.1 < rows_a[-1]['eval/probe/accuracy'] <= 1.0


def test_label_free_prior_is_the_encoder_of_a_byol_run(tmp_path):
  """prior=byol_holdout: a BYOL run on the held-out split, whose online encoder alone embeds."""
  root = str(tmp_path)
  config = prior_config.get_config('prior=byol_holdout,runlocal')
  assert config.objective == 'byol' and config.input.split == 'holdout'
  assert 'label_smoothing' not in config  # BYOL's loss takes no labels.
  full = prior_config.get_config('prior=byol_holdout')
  assert full.model.width == common.LOCAL_PRIOR_MODEL['width'] and full.total_epochs == 60
  assert full.optax.lr == 4e-3
  train.train(config, f'{root}/priors/byol_holdout')
  student = _student_config(root, 'prior=byol_holdout')
  assert student.rela.prior.params_key == 'encoder'
  trained, _ = checkpointing.load_trained_params(f'{root}/priors/byol_holdout')
  assert {'encoder', 'projector', 'predictor', 'classifier'} <= set(trained)
  _, params, meta = priors.load(student.rela.prior, (1, 28, 28, 1))
  jax.tree.map(np.testing.assert_array_equal, params,
               {k: v for k, v in trained['encoder'].items() if k not in priors._HEADS})
  assert meta['train_flops'] > 0  # Its BYOL training counts as the prior's cost.
  ids, targets, _ = rela_targets.compute_targets(student)
  assert len(ids) == TRAIN_SIZE and np.isfinite(targets).all()
  with pytest.raises(KeyError, match="params_key='backbone'"):
    priors.load({**student.rela.prior, 'params_key': 'backbone'}, (1, 28, 28, 1))


def test_bad_inputs_fail_clearly(prior_setup, tmp_path):
  root, ids, targets, meta = prior_setup
  with pytest.raises(FileNotFoundError, match='No checkpoint under'):
    priors.load(dict(kind='checkpoint', workdir=str(tmp_path / 'nowhere'), model_name='cnn',
                     model=dict(widths=(4,), hidden=16)), (1, 28, 28, 1))
  with pytest.raises(ValueError, match='config.rela.prior.kind'):
    priors.load(dict(kind='clip', model_name='cnn'), (1, 28, 28, 1))
  for ratio in (0.0, 1.5):
    with pytest.raises(ValueError, match=r'data_ratio=.* must be in \(0, 1\]'):
      train.train(_student_config(root, f'ratio={ratio}'), str(tmp_path / 'ratio'))
  # Targets computed for other examples than the training split's.
  partial = str(tmp_path / 'partial.npz')
  score_cache.save(partial, ids[:-10], targets[:-10], meta)
  with pytest.raises(KeyError, match='10 example ids .* not in the ReLA target file'):
    train.train(_student_config(root, 'prior=digits', rela=dict(
        targets=partial, switch=dict(rule='fraction', fraction=0.5))), str(tmp_path / 'p'))
  with pytest.raises(FileNotFoundError, match='No ReLA target file .*python -m big_vision_style.rela_targets'):
    rela.load_targets(str(tmp_path / 'missing.npz'))
  with pytest.raises(ValueError, match='config.rela.switch.fraction'):
    rela.config_of({'rela': {'targets': partial, 'switch': {'fraction': 0.0}}})
