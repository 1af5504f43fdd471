"""Divide and Contrast: MoCLR's loss and EMA, k-means (vs scikit-learn, 1 vs 8 devices, 1 vs 2
processes, errors), pools, the budget split, distillation, and the whole pipeline through the
stage runner (resume across a stage boundary, parallel experts == sequential, teachers
frozen, a missing stage output)."""
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_style import checkpointing
from big_vision_style import datasets
from big_vision_style import kmeans
from big_vision_style import methods
from big_vision_style import preprocess
from big_vision_style import sharding
from big_vision_style import stages
from big_vision_style import train
from big_vision_style.datasets import pools
from big_vision_style.methods import byol
from big_vision_style.methods import distill
from big_vision_style.methods import dnc
from big_vision_style.methods import moclr
from experiments.dnc import common
from tests import multiprocess


# ----- MoCLR -----

def test_info_nce_matches_a_dense_computation():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(6, 4)).astype(np.float32)
  k = rng.normal(size=(6, 4)).astype(np.float32)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  k /= np.linalg.norm(k, axis=1, keepdims=True)
  t = 0.3
  want = [-np.log(np.exp(q[i] @ k[i] / t) / sum(np.exp(q[i] @ k[j] / t) for j in range(6)))
          for i in range(6)]
  np.testing.assert_allclose(moclr.info_nce(jnp.asarray(q), jnp.asarray(k), t), want, rtol=1e-5)


def test_info_nce_uses_the_global_batch_when_sharded():
  rng = np.random.default_rng(1)
  q, k = (jnp.asarray(moclr.normalise(rng.normal(size=(16, 4)).astype(np.float32)))
          for _ in range(2))
  mesh = sharding.make_mesh()
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  sharded = jax.jit(lambda a, b: moclr.info_nce(a, b, 0.1))(jax.device_put(q, rows),
                                                            jax.device_put(k, rows))
  np.testing.assert_allclose(sharded, moclr.info_nce(q, k, 0.1), rtol=1e-5)


def test_ema_update_and_momentum_schedule():
  target, online = {'w': jnp.ones(3)}, {'w': jnp.zeros(3)}
  np.testing.assert_allclose(byol.ema(target, online, 0.9)['w'], 0.9)
  assert float(byol.momentum_at(1, 10, base=0.99, end=1.0, schedule='cosine')) == pytest.approx(
      0.99)
  assert float(byol.momentum_at(10, 10, base=0.99, end=1.0, schedule='cosine')) == 1.0


# ----- k-means -----

def _blobs(n=240, d=5, k=4, seed=0):
  rng = np.random.default_rng(seed)
  centres = 4 * rng.normal(size=(k, d))
  return (centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_kmeans_matches_scikit_learn_from_the_same_initial_centres():
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  x = _blobs()
  init = x[np.random.default_rng(3).choice(len(x), 4, replace=False)]
  ours = kmeans.kmeans(x, 4, mesh=sharding.make_mesh(), distance='euclidean', init=init)
  theirs = KMeans(4, init=init, n_init=1, algorithm='lloyd', tol=1e-4).fit(x.astype(np.float64))
  assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-5)
  np.testing.assert_array_equal(ours.assignments, theirs.labels_)
  np.testing.assert_allclose(ours.centres, theirs.cluster_centers_, atol=1e-4)
  assert ours.flops > 0 and ours.iterations <= theirs.n_iter_ + 1


def test_cosine_kmeans_8_devices_equal_1_and_a_direct_spherical_kmeans():
  x = _blobs(n=203)  # Not a multiple of 8: padding rows must not count.
  one = kmeans.kmeans(x, 4, mesh=sharding.make_mesh(1), seed=0)
  eight = kmeans.kmeans(x, 4, mesh=sharding.make_mesh(8), seed=0)
  np.testing.assert_array_equal(one.assignments, eight.assignments)
  assert one.inertia == pytest.approx(eight.inertia, rel=1e-5)
  # Direct spherical k-means from the same k-means++ centres.
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  c = kmeans.kmeans_plus_plus(xn, 4, seed=0)
  for _ in range(100):
    a = np.argmax(xn @ c.T, 1)
    new = np.stack([xn[a == j].mean(0) for j in range(4)])
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    if np.allclose(new, c):
      break
    c = new
  np.testing.assert_array_equal(one.assignments, np.argmax(xn @ c.T, 1))
  assert one.inertia == pytest.approx(np.sum(1 - np.max(xn @ c.T, 1)), rel=1e-4)


def test_kmeans_errors_and_empty_cluster_reseeding(caplog):
  x = _blobs(n=40)
  with pytest.raises(ValueError, match='K=41 clusters needs at least K points, but the pool has '
                                       '40: use fewer clusters'):
    kmeans.kmeans(x, 41, mesh=sharding.make_mesh())
  init = np.concatenate([x[:3], np.full((1, 5), 1e3, np.float32)])  # Nothing near the last.
  with caplog.at_level(logging.WARNING):
    result = kmeans.kmeans(x, 4, mesh=sharding.make_mesh(), distance='euclidean', init=init)
  assert 3 in result.reseeded and 'got no points; re-seeding' in caplog.text
  assert np.all(result.counts > 0)


def _kmeans_in_processes(seed):
  mesh = sharding.make_mesh()
  r = kmeans.kmeans(_blobs(n=101, seed=seed), 3, mesh=mesh, seed=seed)
  return r.assignments, r.inertia


def test_kmeans_two_processes_equal_one():
  multi, single = multiprocess.run_layouts('tests.test_dnc:_kmeans_in_processes', args=(2,),
                                           timeout=120)
  for assignments, inertia in multi:
    np.testing.assert_array_equal(assignments, single[0])
    assert inertia == pytest.approx(single[1], rel=1e-5)


# ----- Pools, budget, distillation loss -----

def test_pools_are_deterministic_same_size_and_curated_is_balanced():
  data = common.make_config(common.parse('method=moclr')).data
  un = datasets.get_source(data, 'train')
  with data.unlocked():
    data.pool.kind = 'curated'
  cu = datasets.get_source(data, 'train')
  assert len(un) == len(cu) > 14_000
  un_counts = np.sort(np.bincount(un.labels))[::-1]
  n_min = un_counts[0]  # The smallest class of the base split (about 5000), then Zipf(1).
  np.testing.assert_array_equal(un_counts, [n_min // r for r in range(1, 11)])
  assert np.bincount(cu.labels).max() - np.bincount(cu.labels).min() <= 1
  np.testing.assert_array_equal(datasets.get_source(data, 'train').ids, cu.ids)
  assert len(datasets.get_source(data, 'test')) == 10_000  # The balanced test split.
  with data.unlocked():
    data.pool.distractors = 50
  mixed = datasets.get_source(data, 'train')
  assert len(mixed) == len(cu) + 50 and (mixed.labels == -1).sum() == 50
  assert mixed.ids.max() >= pools.DISTRACTOR_ID_OFFSET


def test_budget_split_by_cluster_size():
  assert dnc.split_budget(100, [50, 30, 20]) == [50, 30, 20]
  assert dnc.split_budget(10, [1, 1, 1]) == [4, 3, 3]
  assert sum(dnc.split_budget(97, [13, 400, 7, 80])) == 97
  assert min(dnc.split_budget(10, [1000, 1, 1], minimum=2)) == 2
  with pytest.raises(ValueError, match='cannot give 3 experts 2 step'):
    dnc.split_budget(5, [1, 1, 1], minimum=2)


def test_distillation_loss_is_zero_when_the_student_reproduces_its_teachers():
  targets = moclr.normalise(jax.random.normal(jax.random.key(0), (3, 8, 4)))
  weights = jnp.asarray(np.random.default_rng(0).integers(0, 2, (3, 8)), jnp.float32)
  total, per_head = distill.distill_loss(targets, targets, weights)
  assert float(total) == 0.0 and np.all(np.asarray(per_head) == 0)
  total, _ = distill.distill_loss(targets + 1.0, targets, jnp.ones((3, 8)))
  assert float(total) == pytest.approx(3 * 0.5 * 4)  # 0.5 ||1||^2 per head, 3 heads.


# ----- The pipeline -----

def pipeline_config(**overrides):
  """The pipeline tests' tiny DnC run (also run in 2 processes, test_multiprocess_methods)."""
  return _config(**overrides)


def _config(tmp_path=None, **overrides):
  arg = 'runlocal,k=2,steps=24'
  config = common.make_config(common.parse(arg))
  with config.unlocked():
    config.data.pool.size = 96
    config.input.batch_size = 8
    config.evals = {}  # Evaluators are tested elsewhere; here they would only cost compiles.
    config.dnc.update(embed_batch_size=32, base_fraction=0.25, experts_fraction=0.25)
    for key, value in overrides.items():
      node = config
      *path, last = key.split('.')
      for p in path:
        node = node[p]
      node[last] = value
  return config


def _params(workdir):
  return jax.device_get(checkpointing.load_trained_params(workdir)[0])


# The pipeline tests share one uninterrupted run, on 4 of the 8 devices: the layout of each
# sub-mesh of the parallel-experts test, so its experts are comparable bit for bit.
DEVICES = 4


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('dnc') / 'straight')
  return dnc.run(_config(mesh_devices=DEVICES), workdir, train_fn=train.train)


def _copy_stages(straight, workdir, names=('base', 'embed', 'cluster')):
  """The straight run's finished stages, as a run that had got that far would hold them."""
  for name in names:
    shutil.copytree(os.path.join(os.path.dirname(straight['base']['workdir']), name),
                    os.path.join(workdir, name))


def test_resume_is_exact_across_a_stage_boundary(straight, tmp_path):
  workdir = str(tmp_path / 'split')
  config = _config(mesh_devices=DEVICES)
  # The first stages finished (the straight run's, copied: the runner skips them by their
  # markers), then a stop at the first step of the first expert, just past the boundary.
  _copy_stages(straight, workdir)
  stop = lambda config, w: train.train(config, w, stop_after_step=1 if w.endswith(
      'expert_0') else None)
  first = dnc.run(config, workdir, train_fn=stop)
  assert first == {'preempted': 'experts/expert_0'}
  assert os.path.exists(os.path.join(workdir, 'cluster', stages.MARKER))
  done = dnc.run(config, workdir, train_fn=train.train)
  jax.tree.map(np.testing.assert_array_equal, _params(done['distill']['workdir']),
               _params(straight['distill']['workdir']))
  assert done['total_flops'] == pytest.approx(straight['total_flops'])
  names = ('base', 'embed', 'cluster', 'experts', 'distill')
  assert done['total_flops'] == pytest.approx(sum(done[n]['flops'] for n in names))
  # Equal compute: the whole pipeline is within one distillation step of the MoCLR budget.
  budget = done['base']['flops'] / dnc.base_steps(_config()) * _config().total_steps
  per_distill_step = done['distill']['flops'] / done['distill']['final']['step']
  assert budget - per_distill_step <= done['total_flops'] <= budget
  assert sum(done['experts']['steps']) == 6 and len(done['experts']['steps']) == 2


def _experts(straight, workdir, config):
  """The experts stage of `config`, after the straight run's base, embed and cluster stages."""
  _copy_stages(straight, workdir)
  return stages.run_stages(dnc.pipeline(config, train.train)[:4], workdir,
                           train_fn=train.train)['experts']


def test_parallel_experts_equal_sequential_on_8_devices(straight, tmp_path):
  # Two experts at once on two disjoint 4-device sub-meshes of the 8, vs one after the other
  # on 4 devices (the straight run's: the same per-device layout, so the same numbers bit for
  # bit).
  assert dnc.device_groups(2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
  parallel = _experts(straight, str(tmp_path / 'parallel'),
                      _config(**{'dnc.experts_parallel': 2}))
  sequential = straight['experts']
  for k in range(2):
    jax.tree.map(np.testing.assert_array_equal,
                 _params(parallel['runs'][f'expert_{k}']['workdir']),
                 _params(sequential['runs'][f'expert_{k}']['workdir']))
  assert parallel['flops'] == sequential['flops'] > 0
  assert parallel['steps'] == sequential['steps'] == straight['experts']['steps']


def test_teachers_are_frozen_and_never_change_during_distillation(straight):
  config = dnc.distill_config(_config(), straight, steps=2)
  mesh = sharding.make_mesh()
  source, _ = methods.prepare(config, datasets.get_source(config.data, 'train'))
  pp = preprocess.make(**dict(config.input.pp))
  batch = pp.batched(source.get_batch(np.arange(8)))
  example = {k: jax.ShapeDtypeStruct(np.shape(v)[1:], np.asarray(v).dtype)
             for k, v in batch.items()}
  ctx, built = methods.standalone(config, mesh, example, num_classes=10, total_steps=2,
                                  abstract=False)
  assert 'teachers' in built.frozen and 'teachers' not in jax.eval_shape(built.init,
                                                                         jax.random.key(0))
  before = jax.device_get(built.frozen)
  state = jax.jit(built.init, out_shardings=ctx.replicated)(jax.random.key(0))
  step = methods.jit_step(built.phases[0], ctx)
  from big_vision_style import input_pipeline  # pylint: disable=g-import-not-at-top
  for i in (1, 2):
    state, m = step(state, built.frozen, input_pipeline.to_global(batch, mesh),
                    jnp.asarray(i, jnp.int32))
  assert np.isfinite(float(m['train/loss']))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(built.frozen), before)
  base = _params(straight['base']['workdir'])
  jax.tree.map(lambda t, b: np.testing.assert_array_equal(t[0], b), before['teachers'], base)


def test_clear_errors_for_a_missing_stage_output_and_bad_settings(straight, tmp_path):
  out = {'embed': {**straight['embed'], 'table': str(tmp_path / 'embed' / 'embeddings.npz')}}
  with pytest.raises(FileNotFoundError, match=r"Stage 'embed' is marked finished .* its output .*"
                                              r"embeddings.npz is missing: delete"):
    dnc.cluster_stage(_config()).fn(str(tmp_path / 'cluster'), out)
  with pytest.raises(ValueError, match='expert_init=.nope.: expected one of'):
    dnc.settings(_config(**{'dnc.expert_init': 'nope'}))
  with pytest.raises(ValueError, match='K=500 clusters needs at least K points'):
    dnc.cluster_stage(_config(**{'dnc.num_clusters': 500})).fn(str(tmp_path / 'c'), straight)
