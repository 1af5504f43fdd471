"""2 processes x 2 CPU devices (jax.distributed, gloo) against 1 process x 4 devices: the same
global batches, the same evaluator numbers, the same baseline training run.

Each layout runs in fresh subprocesses (tests/multiprocess.py); the functions they run are the
underscore-prefixed ones below. The module-scoped fixtures run each worker function once in
both layouts at the same time, and the tests assert on parts of the results.
"""
import math
import time

import jax
import numpy as np
import pytest

from tests import idx_fixtures
from tests import multiprocess
from tests.helpers import override
from tests.helpers import read_rows

NUM_PROCESSES, DEVICES_PER_PROCESS = 2, 2
GLOBAL_BATCH = 16  # 4 rows per device, 8 per process.
NUM_TRAIN, HOLDOUT, NUM_TEST = 200, 40, 50  # 160 train examples: 10 batches per epoch.
STREAMS = {'augment': 12, 'batched': 12, 'subsets': 10}  # Global batches read per path.
RESUME_AFTER, RESUMED = 7, 3


# ----- Functions the subprocesses run -----


class _BatchReading:
  """A source that also reads stacked batches (the pipeline's batched path)."""

  def __init__(self, source):
    self.source, self.num_classes, self.ids = source, source.num_classes, source.ids

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return self.source[i]

  def get_batch(self, indices):
    records = [self.source[int(i)] for i in indices]
    return {key: np.stack([r[key] for r in records]) for key in records[0]}


def _replicate(tree, mesh):
  """Global arrays -> copies on every device (one program), readable by every process."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(lambda t: t, out_shardings=replicated)(tree)


def _pipeline(data_dir):
  """Per path: the global batches (assembled by to_global from each process's rows), this
  process's local batches, and the local batches of an iterator restored mid-stream."""
  from big_vision_style import input_pipeline  # pylint: disable=g-import-not-at-top
  from big_vision_style import preprocess  # pylint: disable=g-import-not-at-top
  from big_vision_style import sharding  # pylint: disable=g-import-not-at-top
  from big_vision_style.datasets import fashion_mnist  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  train = fashion_mnist.make_source('train', data_dir=data_dir, holdout_size=HOLDOUT)
  pp_kwargs = dict(image_size=28, mean=(0.286,), std=(0.353,))
  augment = preprocess.make(augment=('flip', 'crop'), **pp_kwargs)
  plain = preprocess.make(**pp_kwargs)
  paths = {'augment': (train, augment, 1.0), 'batched': (_BatchReading(train), plain, 1.0),
           'subsets': (train, augment, 0.3)}
  out = {}
  for name, (source, pp, ratio) in paths.items():
    make = lambda: input_pipeline.make_train_iterator(  # pylint: disable=cell-var-from-loop
        source, global_batch_size=GLOBAL_BATCH, seed=7, preprocess_fn=pp, data_ratio=ratio)
    it = make()
    local = []
    for k in range(STREAMS[name]):
      local.append(next(it))
      if k + 1 == RESUME_AFTER:
        state = it.get_state()
    resumed = make()
    resumed.set_state(state)
    out[name] = {
        'reads_batches': input_pipeline.reads_batches(source, pp),
        'local': local,
        'resumed': [next(resumed) for _ in range(RESUMED)],
        'global': _replicate([input_pipeline.to_global(b, mesh) for b in local], mesh),
    }
  return out


class _EmbeddingSource:
  """Records whose image and text are noisy copies of their class's centre (16-d): the models
  below are random linear maps, so every evaluator gets non-trivial numbers to compare."""

  NUM_CLASSES, DIM = 10, 16

  def __init__(self, n, seed):
    rng = np.random.default_rng(seed)
    self.centres = np.random.default_rng(123).normal(size=(self.NUM_CLASSES, self.DIM))
    self.labels = (np.arange(n) % self.NUM_CLASSES).astype(np.int32)
    self.images = (self.centres[self.labels] + 1.2 * rng.normal(size=(n, self.DIM))).astype(
        np.float32)
    self.texts = (self.images + 1.0 * rng.normal(size=(n, self.DIM))).astype(np.float32)
    self.ids = np.arange(n, dtype=np.int64)
    self.num_classes = self.NUM_CLASSES

  def __len__(self):
    return len(self.ids)

  def __getitem__(self, i):
    return {'image': self.images[i], 'text': self.texts[i], 'label': self.labels[i],
            'id': self.ids[i]}


class _Tokenizer:
  """Prompt 'class k' -> class k's centre: the zero-shot class embedding is the model's map
  of it."""

  def batch(self, prompts):
    centres = _EmbeddingSource(1, 0).centres
    return np.stack([centres[int(p.split()[-1])] for p in prompts]).astype(np.float32)


def _evaluators():
  """Metrics of every evaluator, on splits of 50 (4 global batches of 16, the last holding 2
  examples: all in process 0's rows, process 1's are padding) and a probe fit set of 120."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from big_vision_style import evaluators  # pylint: disable=g-import-not-at-top
  from big_vision_style import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  dim, classes = _EmbeddingSource.DIM, _EmbeddingSource.NUM_CLASSES
  params = {'w': rng.normal(size=(dim, dim)).astype(np.float32),
            'head': rng.normal(size=(dim, classes)).astype(np.float32)}
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  norm = lambda x: None if x is None else x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  two_towers = lambda p, image, text: (norm(None if image is None else image @ p['w']),
                                       norm(None if text is None else text @ p['w']))
  classifier = lambda p, images: images @ p['head']
  features = lambda p, images: jnp.tanh(images @ p['w'])
  test, fit = _EmbeddingSource(NUM_TEST, 1), _EmbeddingSource(120, 2)
  common = dict(source=test, preprocess_fn=lambda ex: ex, mesh=mesh, batch_size=GLOBAL_BATCH)
  made = {
      'classification': evaluators.get_evaluator('classification').Evaluator(classifier,
                                                                             **common),
      'linear_probe': evaluators.get_evaluator('linear_probe').Evaluator(
          features, fit_source=fit, fit_examples=100, steps=40, l2=1e-3, **common),
      'zero_shot': evaluators.get_evaluator('zero_shot').Evaluator(
          two_towers, prompts=[[f'class {c}'] for c in range(classes)], tokenizer=_Tokenizer(),
          **common),
      'retrieval': evaluators.get_evaluator('retrieval').Evaluator(two_towers, **common),
  }
  return {name: dict(ev.run(params)) for name, ev in made.items()}


def _interleaved_mesh_error():
  """to_global on a mesh whose data axis alternates the processes' devices: the error."""
  from big_vision_style import input_pipeline  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  mesh = jax.sharding.Mesh(np.asarray([devices[i] for i in (0, 2, 1, 3)]), ('data',),
                           axis_types=(jax.sharding.AxisType.Auto,))
  try:
    input_pipeline.to_global({'x': np.zeros(8 // jax.process_count(), np.float32)}, mesh)
  except ValueError as e:
    return str(e)
  return None


def _data_and_evals(data_dir):
  return {'pipeline': _pipeline(data_dir), 'evals': _evaluators(),
          'interleaved_mesh_error': _interleaved_mesh_error()}


def _train_baseline(data_dir, workdir):
  """The runlocal baseline made tiny: 6 steps (across the 160-example epoch), every step's loss
  logged, the test split (50) evaluated at steps 3 and 6, over all devices."""
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  from experiments.baseline import fashion_mnist  # pylint: disable=g-import-not-at-top
  config = override(fashion_mnist.get_config('runlocal'), total_steps=6, log_training_steps=1,
                    ckpt_steps=1000, mesh_devices=None)
  config.data.update(data_dir=data_dir, holdout_size=HOLDOUT)
  config.input.batch_size = GLOBAL_BATCH * 2
  config.evals.test.update(log_steps=3, batch_size=GLOBAL_BATCH)
  final, state = train.train(config, workdir)
  return {'final': final, 'params': state['learner']['params'],
          'devices': (jax.process_count(), jax.device_count())}


def _crash_in_process_1():
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 1:
    raise ValueError('deliberate failure in process 1')
  multihost_utils.sync_global_devices('never reached by process 1')


def _sleep_forever():
  import time  # pylint: disable=g-import-not-at-top
  while True:
    time.sleep(1)


# ----- Fixtures: each worker function once, in both layouts at the same time -----


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('fashion_mnist'))
  idx_fixtures.write_fake_fashion_mnist(directory, num_train=NUM_TRAIN, num_test=NUM_TEST)
  return directory


@pytest.fixture(scope='module')
def data_and_evals(data_dir):
  multi, single = multiprocess.run_layouts(
      'tests.test_multiprocess:_data_and_evals', (data_dir,), num_processes=NUM_PROCESSES,
      devices_per_process=DEVICES_PER_PROCESS, timeout=240)
  return multi, single


@pytest.fixture(scope='module')
def baseline(data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('baseline')
  multi_dir, single_dir = str(root / 'two_processes'), str(root / 'one_process')
  multi, single = multiprocess.run_layouts(
      'tests.test_multiprocess:_train_baseline', (data_dir, multi_dir),
      single_args=(data_dir, single_dir), num_processes=NUM_PROCESSES,
      devices_per_process=DEVICES_PER_PROCESS, timeout=400)
  return multi, single, read_rows(multi_dir), read_rows(single_dir)


# ----- Tests -----


def _assert_same_batches(got, want, what, check_dtype=True):
  assert len(got) == len(want), what
  for k, (a, b) in enumerate(zip(got, want)):
    assert a.keys() == b.keys(), what
    for key in b:
      assert not check_dtype or a[key].dtype == b[key].dtype, (what, k, key)
      np.testing.assert_array_equal(a[key], b[key], err_msg=f'{what}: batch {k}, {key}')


@pytest.mark.parametrize('path', sorted(STREAMS))
def test_two_processes_assemble_the_one_process_global_batches(data_and_evals, path):
  multi, single = data_and_evals
  one = single['pipeline'][path]
  assert one['reads_batches'] == (path == 'batched')
  assert len(one['global']) == STREAMS[path]
  # The 1-process global batch is its local batch; both processes assemble exactly it: ids,
  # labels and augmented pixels, row for row.
  # (Global arrays hold ids as int32: jax without x64.)
  _assert_same_batches(one['global'], one['local'], '1 process: global vs local',
                       check_dtype=False)
  for p, result in enumerate(multi):
    _assert_same_batches(result['pipeline'][path]['global'], one['global'],
                         f'process {p} of 2: global batches vs 1 process')
  # Process p fed the contiguous rows [8p, 8p + 8) of each global batch.
  local = GLOBAL_BATCH // NUM_PROCESSES
  for p, result in enumerate(multi):
    _assert_same_batches(result['pipeline'][path]['local'],
                         [{k: v[p * local:(p + 1) * local] for k, v in b.items()}
                          for b in one['global']], f'process {p}: local rows',
                         check_dtype=False)
  ids = np.concatenate([b['id'] for b in one['global']])
  if path != 'subsets':  # The first epoch (10 batches) covers the 160 examples once.
    assert len(set(ids[:160])) == 160
  else:  # 48 examples per epoch (30%), a fresh subset each epoch.
    assert len(set(ids[:48])) == 48 and set(ids[:48]) != set(ids[48:96])


@pytest.mark.parametrize('path', sorted(STREAMS))
def test_each_process_resumes_its_rows_exactly(data_and_evals, path):
  multi, single = data_and_evals
  for result in multi + [single]:
    stream = result['pipeline'][path]
    _assert_same_batches(stream['resumed'], stream['local'][RESUME_AFTER:RESUME_AFTER + RESUMED],
                         f'{path}: restored iterator')


def test_a_mesh_that_interleaves_processes_is_a_clear_error(data_and_evals):
  multi, single = data_and_evals
  assert single['interleaved_mesh_error'] is None  # One process holds every row.
  for p, result in enumerate(multi):
    assert f'Process {p} feeds rows [{4 * p}, {4 * p + 4}) of each global batch of 8' in (
        result['interleaved_mesh_error'] or ''), result['interleaved_mesh_error']


@pytest.mark.parametrize('name', ['classification', 'linear_probe', 'zero_shot', 'retrieval'])
def test_evaluators_give_the_one_process_numbers(data_and_evals, name):
  multi, single = data_and_evals
  want = dict(single['evals'][name])
  # The classification loss is a float32 sum over devices: the order of the all-reduce's
  # additions differs (see the trainer test below); measured equal here, allowed 1e-6.
  want_loss = want.pop('loss') if name == 'classification' else None
  for p, result in enumerate(multi):
    got = dict(result['evals'][name])
    if want_loss is not None:
      assert got.pop('loss') == pytest.approx(want_loss, rel=1e-6)
    # Counts, accuracies, recalls, the probe (fitted on the same gathered features): exact.
    assert got == want, f'process {p}: {got} vs {want}'
  # Numbers worth comparing: neither trivial nor perfect.
  for metric, value in want.items():
    if metric in ('accuracy', 'i2t_recall_at_1', 't2i_recall_at_1'):
      assert 0.05 < value < 1.0, (metric, value)


def test_baseline_trainer_two_processes_match_one(baseline):
  """Same batches, same program: equal up to the order in which the gradient all-reduce adds
  the 4 devices' contributions. XLA's in-process all-reduce (1 process) adds devices 0, 1, 2, 3
  in turn; gloo's ring all-reduce (2 processes) adds them in a rotated order that depends on
  the element's quarter of the buffer (measured: ((d2+d3)+d1)+d0 for the first quarter,
  ((d0+d3)+d2)+d1 for the second, ...), so about a quarter of float32 gradient entries differ
  in their last bit, and Adam carries that into the parameters. Measured after 6 steps: losses
  bit-identical, grad norms within 6e-8 relative, parameters within 7e-7 of each leaf's largest
  entry, except the attention key biases: their true gradient is zero (a key bias adds the
  same q.b to all of a query's logits, which the softmax cancels), so Adam turns the rounding
  noise of their gradient into updates of its own (|b| < 1e-6, differences up to 9e-7)."""
  multi, single, rows2, rows1 = baseline
  assert single['devices'] == (1, 4) and all(r['devices'] == (2, 4) for r in multi)
  assert [r['step'] for r in rows2] == [r['step'] for r in rows1] == list(range(1, 7))
  curve = lambda rows, key: np.asarray([r[key] for r in rows])
  assert curve(rows1, 'train/loss')[0] == pytest.approx(math.log(10), abs=0.05)  # Zero head.
  # Step 1: the same parameters on the same batch; the mean loss is itself a cross-device sum,
  # added in gloo's order in one layout and XLA's in the other, so it may differ by an ulp
  # (bit-identical in the measurement above, at XLA's default -O2; 1 ulp apart at the tests'
  # -O0, whose per-device partial sums round differently: tests/conftest.py).
  first2, first1 = np.float32(rows2[0]['train/loss']), np.float32(rows1[0]['train/loss'])
  assert abs(first2 - first1) <= np.spacing(first1), (first2, first1)
  for key in ('train/loss', 'train/grad_norm'):
    np.testing.assert_allclose(curve(rows2, key), curve(rows1, key), rtol=1e-6, atol=0, err_msg=key)
  for key in ('examples_seen', 'flops/total', 'eval/test/accuracy'):
    assert rows2[-1][key] == rows1[-1][key], key
  assert rows2[-1]['eval/test/loss'] == pytest.approx(rows1[-1]['eval/test/loss'], rel=1e-6)
  # Both processes hold the same replicated parameters, bit for bit.
  jax.tree.map(np.testing.assert_array_equal, multi[0]['params'], multi[1]['params'])
  for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(single['params'])[0],
                               jax.tree.leaves(multi[0]['params'])):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" in name:  # Zero true gradient: rounding noise, tiny in both.
      assert np.abs(want).max() < 1e-5 and np.abs(got).max() < 1e-5, name
      np.testing.assert_allclose(got, want, rtol=0, atol=2e-6, err_msg=name)
    else:  # A few float32 ulps of the leaf's scale.
      np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max(), err_msg=name)


def test_harness_reports_which_process_failed():
  with pytest.raises(multiprocess.ProcessesFailed) as failure:
    multiprocess.run_processes('tests.test_multiprocess:_crash_in_process_1', timeout=60,
                               grace=1.0, keep_logs=False)
  message = str(failure.value)
  # The process that failed comes first, with its exit code and its traceback's last line.
  first = message.split('\n', 1)[1]
  assert first.startswith('  2x2 process 1: exit code 1;'), message
  assert 'ValueError: deliberate failure in process 1' in message
  assert '2x2 process 0: killed by the harness' in message


def test_harness_kills_every_process_of_a_run_past_its_timeout():
  start = time.monotonic()
  with pytest.raises(multiprocess.ProcessesFailed) as failure:
    multiprocess.run_processes('tests.test_multiprocess:_sleep_forever', timeout=6,
                               keep_logs=False)
  assert time.monotonic() - start < 20
  for p in range(NUM_PROCESSES):
    assert (f'2x2 process {p}: killed by the harness (still running after the 6 s timeout)'
            in str(failure.value)), str(failure.value)
