"""Fault and bad-input hardening (issue 16): one test per case of its table, CPU, seconds each.

Runs are the baseline's runlocal config cut to a few steps, without evaluations."""
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_style import checkpointing
from big_vision_style import datasets
from big_vision_style import metrics_writer
from big_vision_style import nonfinite
from big_vision_style import train
from big_vision_style import workdir_lock
from experiments.baseline import fashion_mnist as baseline_config
from tests.helpers import override
from tests.helpers import read_rows


def _config(**overrides):
  config = baseline_config.get_config('runlocal')
  with config.unlocked():
    config.evals = {}
  return override(config, **{'total_steps': 6, 'log_training_steps': 2, 'ckpt_steps': 2,
                             'ckpt_keep': 3, **overrides})


def _lr(config, lr):
  with config.unlocked():
    config.optax.lr = lr
  return config


def _strict_rows(workdir):
  """metrics.jsonl parsed as strict JSON (bare NaN / Infinity raise)."""
  def refuse(name):
    raise ValueError(f'non-strict JSON constant {name}')
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line, parse_constant=refuse) for line in f]


def _params(state):
  return jax.device_get(state['learner']['params'])


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """The reference run: 6 steps, never interrupted (params and metrics rows)."""
  workdir = tmp_path_factory.mktemp('uninterrupted')
  _, state = train.train(_config(), str(workdir))
  return _params(state), read_rows(workdir)


def _assert_same_run(workdir, state, uninterrupted):
  params, rows = uninterrupted
  jax.tree.map(np.testing.assert_array_equal, params, _params(state))
  got = read_rows(workdir)
  assert [r['step'] for r in got] == [r['step'] for r in rows]
  for a, b in zip(rows, got):
    assert {k: v for k, v in a.items() if k != 'wall_s'} == {
        k: v for k, v in b.items() if k != 'wall_s'}


# ----- learning rate 1e6: non-finite guard -----
def test_a_diverging_run_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
  with pytest.raises(nonfinite.NonFiniteError, match=r'Step (\d+) gave a non-finite') as err:
    train.train(_lr(_config(total_steps=12), 1e6), str(tmp_path))
  bad = int(err.value.args[0].split()[1])
  assert 'The last good checkpoint is' in str(err.value)
  saved = checkpointing.saved_steps(str(tmp_path))
  assert all(s < bad for s in saved), (saved, bad)  # Nothing at or after the bad step.
  if saved:
    assert f'step {saved[-1]}' in str(err.value)
  assert all(r['step'] < bad for r in _strict_rows(tmp_path))  # The bad step is not logged.
  if saved:  # The newest checkpoint is finite (load_trained_params refuses non-finite ones).
    checkpointing.load_trained_params(str(tmp_path))


def test_skip_nonfinite_steps_keeps_the_state_and_counts_them(tmp_path):
  final, state = train.train(_lr(_config(skip_nonfinite_steps=True), 1e6), str(tmp_path))
  rows = _strict_rows(tmp_path)  # Strict JSON: the skipped steps' NaN losses are null.
  assert final['train/nonfinite_skipped'] > 0
  assert rows[-1]['train/nonfinite_skipped'] == final['train/nonfinite_skipped']
  assert any(r['train/loss'] is None for r in rows)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(_params(state)))
  params, _ = checkpointing.load_trained_params(str(tmp_path))  # Saved, and finite.
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_runs_without_bad_steps_log_no_new_keys(tmp_path, uninterrupted):
  _, rows = uninterrupted
  assert not any(k.startswith('train/nonfinite') for r in rows for k in r)


def test_metrics_files_are_strict_json(tmp_path):
  writer = metrics_writer.MetricsWriter(str(tmp_path), total_steps=2)
  writer.write(1, {'train/loss': float('nan'), 'x': float('inf'), 'ok': 1.5})
  assert _strict_rows(tmp_path) == [{'step': 1, 'train/loss': None, 'x': None, 'ok': 1.5}]


def test_a_diverged_checkpoint_is_refused_as_a_reference_or_prior(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  state = {'learner': {'params': {'w': jnp.array([1.0, jnp.nan])}}}
  ckpt.save(3, state, {'it': 1}, {'step': 3, 'flops': {}, 'wall_s': 0.0})
  ckpt.close()
  with pytest.raises(ValueError, match=r"non-finite parameters .*\['w'\].*diverged"):
    checkpointing.load_trained_params(str(tmp_path))


# ----- resume with another config: run identity -----
def test_a_resume_that_changes_the_run_is_refused_with_the_changed_fields(tmp_path,
                                                                          monkeypatch):
  train.train(_config(), str(tmp_path), stop_after_step=2)
  record = json.loads((tmp_path / 'run.json').read_text())
  assert record['config']['total_steps'] == 6 and record['versions']['jax'] == jax.__version__
  changed = _lr(_config(), 3e-3)
  with changed.unlocked():
    changed.input.batch_size = 16
    changed.model.width = 48
  # Refused before any data is read (so before any compilation).
  monkeypatch.setattr(datasets, 'get_source', lambda *a: pytest.fail('data was loaded'))
  with pytest.raises(ValueError) as err:
    train.train(changed, str(tmp_path))
  for field in ('optax.lr: 0.001 -> 0.003', 'input.batch_size: 32 -> 16', 'model.width'):
    assert field in str(err.value)
  assert 'allow_config_change' in str(err.value)


def test_safe_changes_and_the_override_are_allowed(tmp_path):
  train.train(_config(), str(tmp_path), stop_after_step=2)
  # Logging / checkpoint frequency and a longer run: the same run, continued.
  final, _ = train.train(_config(log_training_steps=3, ckpt_steps=3, total_steps=8),
                         str(tmp_path), stop_after_step=4)
  assert final['step'] == 4
  with pytest.raises(ValueError, match='total_steps: 8 -> 5'):  # Shortening changes it.
    train.train(_config(total_steps=5), str(tmp_path))
  final, _ = train.train(_lr(_config(total_steps=8, allow_config_change=True), 2e-3),
                         str(tmp_path), stop_after_step=5)
  assert final['step'] == 5
  record = json.loads((tmp_path / 'run.json').read_text())
  assert record['config']['optax']['lr'] == 2e-3
  assert ['optax.lr', 1e-3, 2e-3] in record['changes'][-1]['fields']


# ----- newest checkpoint damaged -----
def _damage(step_dir, how):
  if how == 'truncated_array':  # Every array data file of the state, cut to half its size.
    for root, _, files in os.walk(os.path.join(step_dir, 'state')):
      for name in files if os.path.basename(root) == 'd' else ():
        with open(os.path.join(root, name), 'r+b') as f:
          f.truncate(os.path.getsize(os.path.join(root, name)) // 2)
  elif how == 'missing_metadata':
    os.remove(os.path.join(step_dir, 'state', '_METADATA'))
  elif how == 'empty_data_state':
    open(os.path.join(step_dir, 'data', 'metadata'), 'w').close()
  elif how == 'missing_state':
    shutil.rmtree(os.path.join(step_dir, 'state'))


@pytest.mark.parametrize('how', ['truncated_array', 'missing_metadata', 'empty_data_state',
                                 'missing_state'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, how, caplog,
                                                                    uninterrupted):
  train.train(_config(), str(tmp_path), stop_after_step=4)
  assert checkpointing.saved_steps(str(tmp_path)) == [2, 4]
  _damage(str(tmp_path / 'checkpoints' / '4'), how)
  with caplog.at_level(logging.WARNING):
    _, state = train.train(_config(), str(tmp_path))
  if how != 'missing_metadata':  # Orbax restores without _METADATA given the target tree.
    assert f'Checkpoint of step 4 at {tmp_path}/checkpoints/4 is damaged' in caplog.text
    assert os.listdir(tmp_path / 'checkpoints_damaged')
  _assert_same_run(tmp_path, state, uninterrupted)


def test_no_valid_checkpoint_says_what_to_delete(tmp_path):
  train.train(_config(), str(tmp_path), stop_after_step=4)
  for step in (2, 4):
    _damage(str(tmp_path / 'checkpoints' / str(step)), 'missing_state')
  with pytest.raises(RuntimeError, match=r'No valid checkpoint.*step 4 at .*step 2 at .*rm -r '):
    train.train(_config(), str(tmp_path))


def test_a_torn_last_metrics_line_is_repaired_with_a_warning(tmp_path, caplog, uninterrupted):
  train.train(_config(), str(tmp_path), stop_after_step=4)
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 6, "train/lo')  # Killed mid-write.
  with caplog.at_level(logging.WARNING):
    _, state = train.train(_config(), str(tmp_path))
  assert 'is torn' in caplog.text and 'metrics.jsonl' in caplog.text
  _assert_same_run(tmp_path, state, uninterrupted)


def test_a_bad_metrics_line_before_the_last_names_the_file_and_line(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl: line 2 is not a JSON metrics row'):
    metrics_writer.read_metrics(str(tmp_path))


# ----- two processes on one workdir -----
def test_a_live_owner_keeps_the_workdir(tmp_path, monkeypatch):
  with workdir_lock.WorkdirLock(str(tmp_path)):  # This process holds it.
    monkeypatch.setattr(datasets, 'get_source', lambda *a: pytest.fail('data was loaded'))
    with pytest.raises(RuntimeError, match=rf'in use by another trainer \(pid {os.getpid()}'):
      train.train(_config(), str(tmp_path))
  assert not (tmp_path / workdir_lock.FILE).exists()  # Released.


def test_a_dead_owners_lock_is_taken_over_with_a_warning(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  (tmp_path / workdir_lock.FILE).write_text(json.dumps(
      {'pid': dead.pid, 'host': workdir_lock.WorkdirLock(str(tmp_path)).me['host']}))
  with caplog.at_level(logging.WARNING):
    final, _ = train.train(_config(total_steps=2, ckpt_steps=2), str(tmp_path))
  assert final['step'] == 2 and 'stale lock' in caplog.text
  assert not (tmp_path / workdir_lock.FILE).exists()


def test_another_hosts_lock_is_refused(tmp_path):
  (tmp_path / workdir_lock.FILE).write_text(json.dumps({'pid': 1, 'host': 'elsewhere'}))
  with pytest.raises(RuntimeError, match=r'host elsewhere.*delete .*lock.json'):
    with workdir_lock.WorkdirLock(str(tmp_path)):
      pass


def test_a_second_trainer_process_is_refused(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)):
    out = subprocess.run(
        [sys.executable, '-m', 'big_vision_style.train', '--workdir', str(tmp_path),
         '--config', 'experiments/baseline/fashion_mnist.py:runlocal'],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and 'in use by another trainer' in out.stderr


# ----- total_steps 0 or negative, read-only workdir, values out of range: up front -----
@pytest.mark.parametrize('overrides,message', [
    (dict(total_steps=0), r'config.total_steps=0 must be a positive'),
    (dict(total_steps=-3), r'config.total_steps=-3 must be a positive'),
    (dict(total_steps=None, total_epochs=0.0), r'config.total_epochs=0.0 must be positive'),
    (dict(ckpt_steps=0), r'config.ckpt_steps=0 must be a positive'),
    (dict(log_training_steps=-1), r'config.log_training_steps=-1'),
])
def test_bad_step_counts_fail_before_any_data_is_loaded(tmp_path, monkeypatch, overrides,
                                                        message):
  monkeypatch.setattr(datasets, 'get_source', lambda *a: pytest.fail('data was loaded'))
  with pytest.raises(ValueError, match=message):
    train.train(_config(**overrides), str(tmp_path))


def test_values_out_of_range_fail_up_front(tmp_path, monkeypatch):
  monkeypatch.setattr(datasets, 'get_source', lambda *a: pytest.fail('data was loaded'))
  with pytest.raises(ValueError, match=r'config.optax.lr=-0.1 must be in \(0, inf\)'):
    train.train(_lr(_config(), -0.1), str(tmp_path))
  config = _config()
  with config.unlocked():
    config.data.label_noise = 1.5
  with pytest.raises(ValueError, match=r'config.data.label_noise=1.5 must be in \[0, 1\]'):
    train.train(config, str(tmp_path))


def test_an_unwritable_workdir_fails_up_front(tmp_path, monkeypatch):
  monkeypatch.setattr(datasets, 'get_source', lambda *a: pytest.fail('data was loaded'))
  (tmp_path / 'file').write_text('')
  with pytest.raises(PermissionError, match='is not writable'):  # A path under a file.
    train.train(_config(), str(tmp_path / 'file' / 'run'))
  if os.geteuid() != 0:  # root writes anywhere.
    (tmp_path / 'ro').mkdir(mode=0o500)
    with pytest.raises(PermissionError, match='is not writable'):
      train.train(_config(), str(tmp_path / 'ro'))


# ----- caches from another run; missing or wrong-format files -----
from big_vision_style import embedding_cache  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import id_table  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style.methods import contrastive  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style.methods import rela  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style.methods import supervised  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.bad_students import policy_comparison  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.jest import filter_ratio  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.rela import table1  # pylint: disable=g-import-not-at-top,wrong-import-position


def _cached_bs_config(path, **data):
  config = policy_comparison.get_config(
      f'runlocal,policy=easy_reference,reference=cached,score_cache={path}')
  with config.unlocked():
    config.data.update(data)
  return config


def _bs_table(path, config, *, extra_ids=0, **meta):
  source = datasets.get_source(config.data, 'train')
  ids = np.concatenate([source.ids, np.arange(extra_ids) + source.ids.max() + 1])
  meta = {**id_table.provenance(config, producer='test'), 'num_examples': len(ids), **meta}
  id_table.save(path, ids, np.zeros(len(ids), np.float32), meta)
  return source


def test_a_score_cache_for_other_data_is_refused(tmp_path):
  path = str(tmp_path / 'scores.npz')
  source = _bs_table(path, _cached_bs_config(path, label_noise=0.3, noise_seed=5))
  with pytest.raises(ValueError, match=r'computed for another run \(data.label_noise: 0.3 in '
                                       r'the table, 0.0 here; data.noise_seed: 5 .*score_cache'):
    supervised.prepare(_cached_bs_config(path), source)


def test_a_score_cache_of_another_size_is_refused(tmp_path):
  path = str(tmp_path / 'scores.npz')
  config = _cached_bs_config(path)
  source = _bs_table(path, config, extra_ids=10)
  with pytest.raises(ValueError, match=r'examples: 50010 in the table, 50000 here'):
    supervised.prepare(config, source)


def test_a_cache_without_provenance_gets_a_warning(tmp_path, caplog):
  path = str(tmp_path / 'scores.npz')
  config = _cached_bs_config(path)
  source = datasets.get_source(config.data, 'train')
  id_table.save(path, source.ids, np.zeros(len(source)), {'flops': 1.0})  # An older file.
  with caplog.at_level(logging.WARNING):
    supervised.prepare(config, source)
  assert 'records no provenance' in caplog.text


def test_a_cache_from_an_older_reference_checkpoint_is_refused(tmp_path):
  path, ref = str(tmp_path / 'scores.npz'), tmp_path / 'ref'
  (ref / 'checkpoints' / '600').mkdir(parents=True)  # The reference was trained on since.
  config = _cached_bs_config(path)
  with config.unlocked():
    config.selection.reference_workdir = str(ref)
  source = _bs_table(path, config, reference_workdir=str(ref), reference_step=300)
  with pytest.raises(ValueError, match='reference_step: 300 in the table, 600 here'):
    supervised.prepare(config, source)


def test_a_jest_embedding_cache_of_the_wrong_dimension_is_refused(tmp_path):
  path = str(tmp_path / 'emb.npz')
  config = filter_ratio.get_config(f'runlocal,reference=cached,embedding_cache={path}')
  source = datasets.get_source(config.data, 'train')
  n, d = len(source), config.reference_model.embed_dim // 2
  meta = {**id_table.provenance(config, producer='test'), 'num_examples': n}
  embedding_cache.save(path, embedding_cache.from_arrays(
      source.ids, np.zeros([n, d]), np.zeros([n, d]), 1.0, 0.0, meta))
  with pytest.raises(ValueError, match=rf'dim: {d} in the table, {2 * d} here'):
    contrastive.prepare(config, source)


def test_rela_targets_from_another_prior_are_refused(tmp_path):
  config = table1.get_config(f'runlocal,prior=random,root={tmp_path}')
  source = datasets.get_source(config.data, config.input.get('split', 'train'))
  meta = {**id_table.provenance(config, producer='test'), 'num_examples': len(source),
          'prior': {'kind': 'checkpoint', 'workdir': 'elsewhere'}}
  os.makedirs(os.path.dirname(config.rela.targets), exist_ok=True)
  id_table.save(config.rela.targets, source.ids, np.zeros([len(source), 4]), meta)
  with pytest.raises(ValueError, match=r"prior: \{'kind': 'checkpoint'.*rela_targets"):
    rela.prepare(config, source)


def test_cached_reference_without_a_path_or_with_a_non_npz_says_what_to_run(tmp_path):
  source = datasets.get_source(_cached_bs_config('').data, 'train')
  with pytest.raises(ValueError, match=r'No path given for the reference score cache: compute '
                                       r'it with `python -m big_vision_style.score_cache'):
    supervised.prepare(_cached_bs_config(''), source)
  with pytest.raises(ValueError, match='needs config.selection.embedding_cache.*reference_embed'):
    contrastive.prepare(filter_ratio.get_config('runlocal,reference=cached'), source)
  text = tmp_path / 'scores.npz'
  text.write_text('not an archive')
  with pytest.raises(ValueError, match=r'is not a reference score cache .*not an .npz file; '
                                       r'compute it with') as err:
    supervised.prepare(_cached_bs_config(str(text)), source)
  assert 'allow_pickle' not in str(err.value)
