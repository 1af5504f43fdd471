"""The method interface: a method registered from outside the library trains through the one
loop (FLOPs, evaluators, checkpoints, resume) without any change to train.py; the import graph
has no cycle and no library module imports the trainer."""
import ast
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from big_vision_style import id_table
from big_vision_style import losses
from big_vision_style import methods
from big_vision_style import train
from big_vision_style.methods import base
from experiments.baseline import fashion_mnist as baseline_config
from tests.helpers import override
from tests.helpers import read_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LinearSoftmax:
  """A toy method: multinomial logistic regression on raw pixels, plain SGD, defined here."""

  @staticmethod
  def build(ctx: base.Context) -> base.Built:
    dim = int(np.prod(ctx.example['image'].shape))
    tx = optax.sgd(ctx.config.optax.lr)

    def logits(params, images):
      return images.reshape(images.shape[0], -1) @ params['w'] + params['b']

    def init(rng):
      params = {'w': 0.01 * jax.random.normal(rng, (dim, ctx.num_classes)),
                'b': jnp.zeros([ctx.num_classes])}
      return {'learner': {'params': params, 'opt': tx.init(params)}}

    def step(state, frozen, batch, step):
      del frozen, step

      def loss_fn(params):
        return jnp.mean(losses.softmax_xent(logits(params, batch['image']), batch['label'],
                                            num_classes=ctx.num_classes))

      loss, grads = jax.value_and_grad(loss_fn)(state['learner']['params'])
      updates, opt = tx.update(grads, state['learner']['opt'])
      params = optax.apply_updates(state['learner']['params'], updates)
      return {'learner': {'params': params, 'opt': opt}}, {'train/loss': loss}

    return base.Built(init=init, phases=[base.Phase('train', step, base.all_learner_train)],
                      super_batch_size=ctx.batch_size, predict_fns={'predict': logits})


@pytest.fixture
def toy_method():
  methods.register('toy_linear', LinearSoftmax)
  yield 'toy_linear'
  methods.unregister('toy_linear')


def _config(**overrides):
  config = baseline_config.get_config('runlocal')
  with config.unlocked():
    config.objective = 'toy_linear'
    config.optax.lr = 0.5
  return override(config, **overrides)


def test_a_registered_method_trains_through_the_loop_and_resumes_exactly(toy_method, tmp_path):
  del toy_method
  final, state = train.train(_config(), str(tmp_path / 'full'))
  rows = read_rows(tmp_path / 'full')
  assert rows[-1]['train/loss'] < rows[0]['train/loss']
  assert final['eval/test/accuracy'] > 0.3  # Logistic regression on pixels; chance is 0.1.
  # FLOPs come from XLA's cost analysis of the toy step: about 2 * 3 * 784 * 10 per example.
  per_step = rows[0]['flops/learner'] / rows[0]['step']
  assert per_step == pytest.approx(6 * 784 * 10 * 32, rel=0.3)
  stopped, _ = train.train(_config(), str(tmp_path / 'split'), stop_after_step=7)
  assert stopped['preempted'] and stopped['step'] == 7
  _, resumed = train.train(_config(), str(tmp_path / 'split'))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state),
               jax.device_get(resumed))


def test_unknown_methods_and_missing_predictions_are_clear_errors(toy_method, tmp_path):
  with pytest.raises(ValueError, match="config.objective='nope': expected one of supervised"):
    train.train(override(_config(), objective='nope'), str(tmp_path / 'a'))
  config = _config()
  with config.unlocked():
    config.evals.probe = dict(type='linear_probe', split='test', fit_split='train', log_steps=5)
  with pytest.raises(ValueError, match=r"evaluates 'features', which the toy_linear method does "
                                       r"not provide; it provides \['predict'\]"):
    train.train(config, str(tmp_path / 'b'))
  del toy_method
  with pytest.raises(ValueError, match='built-in method'):
    methods.register('supervised', LinearSoftmax)


def _imports(path, modules):
  """The big_vision_style modules `path` imports (`from pkg import submodule` is the submodule,
  not the package)."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('big_vision_style'):
      for alias in node.names:
        sub = f'{node.module}.{alias.name}'
        out.add(sub if sub in modules else node.module)
    elif isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith('big_vision_style')}
  return out


def test_no_library_module_imports_the_trainer_and_the_import_graph_has_no_cycle():
  root = os.path.join(REPO, 'big_vision_style')
  paths = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(dirpath, name)
        module = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
        paths[module[:-len('.__init__')] if module.endswith('.__init__') else module] = path
  graph = {m: {d for d in _imports(p, paths) if d in paths and d != m} for m, p in paths.items()}
  importers = sorted(m for m, deps in graph.items() if 'big_vision_style.train' in deps)
  assert all(m.startswith('big_vision_style.tools.') for m in importers), importers
  # A package's __init__ re-exporting its own modules is not a cycle; anything else is.
  state = {}

  def visit(m, path):
    state[m] = 'open'
    for d in graph[m]:
      if d.startswith(m + '.'):
        continue
      if state.get(d) == 'open':
        raise AssertionError('import cycle: ' + ' -> '.join(path + [d]))
      if d not in state:
        visit(d, path + [d])
    state[m] = 'done'

  for module in graph:
    if module not in state:
      visit(module, [module])
  train_source = open(os.path.join(root, 'train.py')).read()
  assert "objective ==" not in train_source and 'from big_vision_style.methods import' not in (
      train_source)


def test_sweeps_read_the_marker_the_trainer_writes():
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  assert sweep.MARKER == train.FINAL_MARKER


class ClusterMasked(LinearSoftmax):
  """The toy method, trained only on the examples an earlier stage put in cluster 0: reads a
  per-example table (id_table) through `prepare`, as Divide and Contrast's experts would."""

  @staticmethod
  def prepare(config, source):
    table = id_table.load(config.cluster_table, what='cluster table', how='run the stage')
    return id_table.with_columns(source, {'cluster': table}), {}

  @staticmethod
  def build(ctx):
    built = LinearSoftmax.build(ctx)
    inner = built.phases[0].step

    def step(state, frozen, batch, step):
      weight = (batch['cluster'] == 0).astype(batch['image'].dtype)
      # Examples of other clusters become all-zero images with no gradient on w.
      return inner(state, frozen, {**batch, 'image': batch['image'] * weight[:, None, None, None]},
                   step)

    built.phases[0].step = step
    return built


def test_a_multi_stage_method_runs_through_the_stage_runner_and_resumes_by_stage(
    toy_method, tmp_path):
  from big_vision_style import checkpointing  # pylint: disable=g-import-not-at-top
  from big_vision_style import datasets  # pylint: disable=g-import-not-at-top
  from big_vision_style import stages  # pylint: disable=g-import-not-at-top
  methods.register('toy_expert', ClusterMasked)
  calls = []

  def cluster(stage_dir, out):  # "k-means": the base model's predicted class, by id.
    calls.append(stage_dir)
    params, _ = checkpointing.load_trained_params(out['base']['workdir'])
    source = datasets.get_source(_config().data, 'train')
    images = np.asarray(source.images, np.float32).reshape(len(source), -1) / 255
    assign = np.argmax(images @ params['w'] + params['b'], -1) % 2
    ids = np.asarray(source.ids)
    path = os.path.join(stage_dir, 'assign.npz')
    id_table.save(path, ids, assign, {'producer': 'test'})
    return {'table': path, 'flops': 2.0 * images.size * 10}

  def expert_config(out):
    config = override(_config(), objective='toy_expert')
    with config.unlocked():
      config.cluster_table = out['cluster']['table']
    return config

  pipeline = [stages.TrainStage('base', lambda out: _config()),
              stages.ComputeStage('cluster', cluster),
              stages.TrainStage('expert', expert_config)]
  stop_expert = lambda config, workdir: train.train(
      config, workdir, stop_after_step=4 if workdir.endswith('expert') else None)
  try:
    first = stages.run_stages(pipeline, str(tmp_path / 'split'), train_fn=stop_expert)
    assert first['preempted'] == 'expert' and len(calls) == 1
    done = stages.run_stages(pipeline, str(tmp_path / 'split'), train_fn=train.train)
    assert len(calls) == 1  # The finished stages were not run again...
    straight = stages.run_stages(pipeline, str(tmp_path / 'straight'), train_fn=train.train)
  finally:
    methods.unregister('toy_expert')
  # ... and the expert resumed exactly where it stopped.
  split, _ = checkpointing.load_trained_params(done['expert']['workdir'])
  whole, _ = checkpointing.load_trained_params(straight['expert']['workdir'])
  jax.tree.map(np.testing.assert_array_equal, split, whole)
  assert done['total_flops'] == pytest.approx(sum(done[n]['flops'] for n in
                                                  ('base', 'cluster', 'expert')))
  assert done['expert']['flops'] > 0 and done['cluster']['flops'] > 0
