"""tools/aot: TPU topologies, and compiling train-like steps for TPU slices with libtpu on CPU.

The compile tests need the libtpu package (the wheel `jax[tpu]` pins) and skip without it; the
spelling tests run everywhere. Each compile is of a small step for a 4-chip slice: seconds.
"""
import json

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax
import pytest

from big_vision_style.tools import aot

needs_libtpu = pytest.mark.skipif(
    not aot.libtpu_available(),
    reason="libtpu is not installed; pip install 'jax[tpu]==<jax version>' (the aot extra) to "
           'compile for TPU topologies on this host')

D, H, PER_CHIP = 256, 1024, 64  # The toy MLP: D -> H -> D, and examples per chip.


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def mlp_builder(config, mesh, width=H):
  """A data-parallel train step: 2-layer MLP, Adam, batch over 'data', parameters replicated."""
  del config
  tx = optax.adam(1e-3)
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))

  def init(rng):
    k1, k2 = jax.random.split(rng)
    return {'w1': jax.random.normal(k1, (D, width)), 'w2': jax.random.normal(k2, (width, D))}

  def step(state, batch):
    def loss(params):
      hidden = jax.nn.relu(batch['x'] @ params['w1'])
      return jnp.mean((hidden @ params['w2'] - batch['y']) ** 2)

    value, grads = jax.value_and_grad(loss)(state['params'])
    updates, opt = tx.update(grads, state['opt'], state['params'])
    return {'params': optax.apply_updates(state['params'], updates), 'opt': opt}, value

  params = jax.eval_shape(init, jax.random.key(0))
  state = _abstract({'params': params, 'opt': jax.eval_shape(tx.init, params)}, replicated)
  examples = jax.ShapeDtypeStruct((PER_CHIP * mesh.size, D), jnp.float32)
  batch = _abstract({'x': examples, 'y': examples}, sharded)
  fn = jax.jit(step, donate_argnums=(0,), out_shardings=(replicated, replicated))
  return aot.StepProgram('mlp_adam', fn, (state, batch))


def oversized_builder(config, mesh):
  """80 GiB per chip (a replicated 40 GiB array in, its double out): more than any v4 holds.
  (Its shape is a multiple of the TPU's (8, 128) tiles: a [10, N] array would take 16 rows.)"""
  del config
  big = jax.ShapeDtypeStruct((1024, 10 * 2**20), jnp.float32, sharding=NamedSharding(mesh, P()))
  return aot.StepProgram('oversized', jax.jit(lambda a: a * 2), (big,))


@pytest.mark.parametrize('spec,name,chips,devices', [
    ('v5p:8x8x4', 'v5p:8x8x4', 256, 256),
    ('V5P:2x2x1', 'v5p:2x2x1', 4, 4),
    ('v5:4x4x4', 'v5p:4x4x4', 64, 64),
    ('v5p-128', 'v5p:4x4x4', 64, 64),      # Accelerator types count TensorCores on v5p...
    ('v5p-2048', 'v5p:8x8x16', 1024, 1024),
    ('v4-8', 'v4:2x2x1', 4, 4),
    ('v4:2x2x4', 'v4:2x2x4', 16, 16),
    ('v5litepod-256', 'v5e:16x16', 256, 256),  # ...and chips on v5e / v6e.
    ('v5e:16x16', 'v5e:16x16', 256, 256),
    ('v6e-64', 'v6e:8x8', 64, 64),
    ('v3-32', 'v3:4x4', 16, 32),             # v3: a device is a TensorCore, 2 per chip.
    ('v5p:2x2x1*2', 'v5p:2x2x1*2', 8, 8),
])
def test_topology_spellings(spec, name, chips, devices):
  topo = aot.parse_topology(spec)
  assert (topo.name, topo.num_chips, topo.num_devices) == (name, chips, devices)


def test_topology_arguments_follow_maxtexts_table():
  kw = aot.parse_topology('v5p-128').topology_desc_kwargs()
  assert kw == dict(topology_name='v5:4x4x4', platform='tpu', chip_config_name='megacore',
                    chips_per_host_bounds=(2, 2, 1), wrap=(True, True, True))
  assert aot.parse_topology('v4:2x4x4').topology_desc_kwargs()['wrap'] == (False,) * 3
  assert aot.parse_topology('v5e:8x16').topology_desc_kwargs()['wrap'] == (False, True, False)


@pytest.mark.parametrize('spec,match', [
    ('v7:2x2', 'Unknown TPU generation'), ('v5p:2x2', '3 dimensions'),
    ('v5p-7', 'even'), ('v5e-48', 'No default'), ('tpu', 'Cannot read topology')])
def test_bad_topologies_say_what_to_write(spec, match):
  with pytest.raises(ValueError, match=match):
    aot.parse_topology(spec)


def test_list_and_a_bad_builder(capsys):
  assert aot.main(['--list']) == 0
  assert 'v5litepod' in capsys.readouterr().out
  assert aot.main(['--config', 'experiments/jest/filter_ratio.py:tpu', '--topology',
                   'v5p:2x2x1', '--builder', 'big_vision_style.hlo_stats:no_such']) == 2
  assert "cannot import 'no_such'" in capsys.readouterr().err


@needs_libtpu
@pytest.mark.parametrize('spec,kind,devices', [
    ('v5p:2x2x1', 'TPU v5', 4), ('v4:2x2x1', 'TPU v4', 4), ('v3:2x2', 'TPU v3', 8)])
def test_topology_mesh_is_made_of_abstract_tpu_devices(spec, kind, devices):
  mesh = aot.topology_mesh(spec)
  assert mesh.axis_names == ('data',) and mesh.size == devices
  assert {d.device_kind for d in mesh.devices.flat} == {kind}
  mesh2 = aot.topology_mesh('v5p:2x2x2', ('data', 'model'), (4, 2))
  assert dict(mesh2.shape) == {'data': 4, 'model': 2}


@needs_libtpu
def test_train_step_report_is_sane():
  report = aot.compile_on('v5p:2x2x1', lambda mesh: mlp_builder(None, mesh))
  n, params = 4, 2 * D * H
  batch_bytes = 2 * PER_CHIP * D * 4  # x and y, this device's rows.
  state_bytes = 3 * params * 4 + 4    # Parameters, Adam's mu and nu (f32), Adam's step count.
  mem = report.memory
  assert mem['argument_bytes'] == pytest.approx(state_bytes + batch_bytes, abs=1024)
  assert mem['alias_bytes'] == pytest.approx(state_bytes, abs=1024)  # The donated state.
  assert report.needed_bytes > mem['argument_bytes'] > 0
  assert report.fits and report.margin_bytes > 90 * aot.GIB
  assert (report.num_chips, report.num_devices, report.generation) == (n, n, 'v5p')

  # FLOPs. The usual 6 x params x examples counts the input's gradient too; here the first
  # layer's is not computed (x is data), so the matmuls cost 10 (not 12) x B x D x H. On top,
  # Adam's update (about 14 FLOPs a parameter, measured) runs on every chip, as the state is
  # replicated: 14 x 2DH x n / (10 x 64n x DH) = 4.4%; ReLU and the loss are under 1%.
  examples = PER_CHIP * n
  matmuls = 10 * examples * D * H
  assert report.flops_total == pytest.approx(report.flops_per_device * n)  # No loops here.
  assert matmuls <= report.flops_total <= 1.07 * matmuls
  assert 0.8 <= report.flops_total / (6 * params * examples) <= 0.9

  # The gradient all-reduce: one (tuple-shaped) all-reduce of both weight gradients, over all
  # 4 chips (the scalar loss may ride along in the same tuple).
  summary = report.collectives['summary']
  assert set(summary) == {'all-reduce'}
  assert summary['all-reduce']['raw_bytes'] == pytest.approx(params * 4, abs=8)
  [op] = report.collectives['ops']
  assert op['group_size'] == n
  assert report.moved_bytes_per_chip == pytest.approx(2 * (n - 1) / n * params * 4, abs=16)
  assert report.compile_s > 0 and report.lower_s > 0


@needs_libtpu
def test_oversized_program_does_not_fit(tmp_path, capsys):
  report = aot.compile_on('v4:2x2x1', lambda mesh: oversized_builder(None, mesh))
  assert not report.fits and report.compiler_oom  # libtpu's compiler refused it.
  assert report.needed_bytes == pytest.approx(80 * aot.GIB, rel=0.01)
  assert report.usable_hbm_bytes == pytest.approx(30.75 * aot.GIB, rel=0.01)
  message = report.not_fit_message()
  assert 'does not fit: needs 80.00 GiB per chip of 30.75 GiB HBM on v4' in message
  assert 'v4:2x2x2' in message  # The next slice up is suggested.

  out = tmp_path / 'aot.json'
  rc = aot.main(['--builder', 'tests.test_aot:oversized_builder', '--topology', 'v4-8',
                 '--out', str(out)])
  assert rc == 1
  assert 'does not fit' in capsys.readouterr().err
  [saved] = json.loads(out.read_text())
  assert saved['fits'] is False and saved['topology'] == 'v4:2x2x1'


@needs_libtpu
def test_cli_writes_a_row_and_json(tmp_path, capsys):
  out = tmp_path / 'aot.json'
  assert aot.main(['--builder', 'tests.test_aot:mlp_builder', '--topology', 'v5e:2x2',
                   '--out', str(out), '--collectives']) == 0
  printed = capsys.readouterr().out
  assert 'mlp_adam' in printed and 'v5e:2x2' in printed and 'all-reduce x1' in printed
  [saved] = json.loads(out.read_text())
  assert saved['fits'] and saved['num_chips'] == 4 and saved['flops_total'] > 0


@needs_libtpu
def test_program_digest_names_the_compiled_program(tmp_path, capsys):
  build = lambda mesh: mlp_builder(None, mesh)
  first = aot.lower_on('v5p:2x2x1', build)
  assert aot.lower_on('v5p:2x2x1', build)['lowered_digest'] == first['lowered_digest']
  # Another width or another slice is another program.
  assert aot.lower_on('v5p:2x2x1', lambda mesh: mlp_builder(None, mesh, width=2 * H))[
      'lowered_digest'] != first['lowered_digest']
  assert aot.lower_on('v5p:2x2x2', build)['lowered_digest'] != first['lowered_digest']
  # What a compile reports is what --lower_only prints, without compiling.
  assert aot.compile_on('v5p:2x2x1', build).lowered_digest == first['lowered_digest']
  out = tmp_path / 'lowered.json'
  assert aot.main(['--builder', 'tests.test_aot:mlp_builder', '--topology', 'v5p:2x2x1',
                   '--lower_only', '--out', str(out)]) == 0
  assert first['lowered_digest'] in capsys.readouterr().out
  [saved] = json.loads(out.read_text())
  assert saved['lowered_digest'] == first['lowered_digest']


def test_sweep_keeps_a_report_whose_program_is_unchanged(tmp_path):
  from big_vision_style.tools import aot_sweep  # pylint: disable=g-import-not-at-top

  class FakeLowerings:  # Stands in for lowering the current code.
    def __init__(self, digest):
      self.calls, self.value = 0, digest

    def digest(self, entry, topology, config_digest):
      self.calls += 1
      return self.value

  entry = aot_sweep.ENTRIES[0]
  rec = {'topology': 'v4:2x2x2', 'config_digest': 'c1', 'code_digest': 'old',
         'lowered_digest': 'p1'}
  same, other = FakeLowerings('p1'), FakeLowerings('p2')
  assert aot_sweep.is_current({**rec, 'code_digest': 'new'}, entry, 'c1', 'new', other)
  assert other.calls == 0  # Same code: nothing lowered.
  assert aot_sweep.is_current(rec, entry, 'c1', 'new', same)  # Code edited, same program.
  assert not aot_sweep.is_current(rec, entry, 'c1', 'new', other)  # The step changed.
  assert not aot_sweep.is_current(rec, entry, 'c2', 'new', same)  # The config changed.
  no_digest = {k: v for k, v in rec.items() if k != 'lowered_digest'}
  assert not aot_sweep.is_current(no_digest, entry, 'c1', 'new', same)
  # A digest inside the report (as compile_one writes it) counts too.
  assert aot_sweep.is_current({**no_digest, 'report': {'lowered_digest': 'p1'}}, entry, 'c1',
                              'new', same)


def test_every_tpu_config_names_the_slice_results_aot_found():
  """Each `:tpu` config's docstring names (in a paragraph with "TPU slice") the smallest slice that
  results/aot/aot.json found its step fits on, so the two cannot drift apart."""
  import importlib  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), '..', 'results', 'aot', 'aot.json')
  with open(path) as f:
    entries = json.load(f)
  checked = 0
  for e in entries:
    if not e['minimum']:
      continue
    module = e['spec'].split(':')[0][:-len('.py')].replace('/', '.')
    doc = importlib.import_module(module).__doc__ or ''
    paragraphs = [p for p in doc.split('\n\n') if 'TPU slice' in p]
    named = set(re.findall(r'\bv\d[a-z]*-\d+\b', ' '.join(paragraphs)))
    want = aot.parse_topology(e['minimum']).accelerator_type
    assert want in named, (f'{module}: its docstring should name {want} in a "TPU slice" paragraph '
                           f'(results/aot: {e["spec"]} fits on {e["minimum"]}); names {named}')
    checked += 1
  assert checked >= 20


def test_dnc_distill_stage_builds_from_placeholders():
  """`stage=distill` is the DnC pipeline's distillation config (dnc.distill_config) with K + 1
  placeholder teachers; its program reads the batch's cluster column and stacks the teachers."""
  from big_vision_style import config_utils  # pylint: disable=g-import-not-at-top
  from big_vision_style import programs  # pylint: disable=g-import-not-at-top
  from experiments.dnc import common  # pylint: disable=g-import-not-at-top
  config = config_utils.load_config('experiments/dnc/dnc_vs_moclr.py:runlocal,stage=distill,k=3')
  assert config.objective == 'distill' and 'dnc' not in config
  assert len(config.distill.teachers) == 4 and config.distill.cluster_table.startswith(
      common.PLACEHOLDER)
  with config.unlocked():
    config.num_classes = 10
  program = programs.build_program(config, jax.sharding.Mesh(jax.devices()[:1], ('data',)))
  batch = program.args[2]
  assert batch['cluster'].shape == batch['label'].shape and batch['cluster'].dtype == jnp.int32
  assert {x.shape[0] for x in jax.tree.leaves(program.args[1]['teachers'])} == {4}
  program.fn.trace(*program.args).lower()  # The step reads the cluster column.
  with pytest.raises(ValueError, match='stage'):
    config_utils.load_config('experiments/dnc/dnc_vs_moclr.py:method=moclr,stage=distill')
