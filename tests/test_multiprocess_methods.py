"""Every method in 2 processes x 2 CPU devices against 1 process x 4 devices
(tests/multiprocess.py runs the underscore-prefixed functions below; preemption across hosts
is in test_multiprocess_preemption.py).

Methods: Bad Students with a pretrained, an online and a cached reference (score cache
computed in the same layout), JEST joint and independent, Flexi-JEST, BYOL with ReLA (prior,
targets, then the two phases), and Divide and Contrast through its stage runner (MoCLR base,
embeddings, sharded k-means, two experts, distillation). Each run is a few steps of its `:runlocal` config; references,
priors and caches are made in the layout under test. Expected: the same losses (the
gradient all-reduce adds the 4 devices in another order across processes, so float32 sums can
differ in the last bit; measured differences are asserted tight, see the test).
"""
import jax
import numpy as np
import pytest

from tests import multiprocess
from tests.helpers import few_steps as _tiny
from tests.helpers import read_rows

STEPS = 3


def _sync(name):
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _train_methods(root):
  """Every method's few-step run (module doc); returns each run's per-step losses and final
  learner parameters."""
  # pylint: disable=g-import-not-at-top
  from big_vision_style import config_utils
  from big_vision_style import embedding_cache
  from big_vision_style import id_table
  from big_vision_style import rela_targets
  from big_vision_style import score_cache
  from big_vision_style import train
  from big_vision_style.tools import reference_embeddings
  # pylint: enable=g-import-not-at-top
  load = config_utils.load_config
  out = {}

  def run(name, config_arg):
    _, state = train.train(_tiny(load(config_arg)), f'{root}/{name}')
    out[name] = _record(f'{root}/{name}', state['learner']['params'])

  bs = f'experiments/bad_students/policy_comparison.py:runlocal,reference_workdir={root}/bs_ref'
  run('bs_ref', 'experiments/bad_students/reference.py:runlocal')
  run('bs_pretrained', f'{bs},policy=learnability')
  run('bs_online', f'{bs},policy=learnability,reference=online')
  ids, scores, meta = score_cache.compute_reference_scores(load(bs))
  if jax.process_index() == 0:
    score_cache.save(f'{root}/scores.npz', ids, scores, meta)
  _sync('score cache written')
  out['score_cache'] = scores[np.argsort(ids)]
  run('bs_cached', f'{bs},policy=learnability,reference=cached,score_cache={root}/scores.npz')

  jest = f'experiments/jest/filter_ratio.py:runlocal,reference_workdir={root}/jest_ref'
  run('jest_ref', 'experiments/jest/reference.py:runlocal')
  run('jest_joint', f'{jest},method=joint')
  run('jest_independent', f'{jest},method=independent')
  run('jest_flexi', f'{jest},flexi=True')
  cache = reference_embeddings.compute(load(jest))
  if jax.process_index() == 0:
    embedding_cache.save(f'{root}/embeddings.npz', cache)
  _sync('embedding cache written')
  out['embedding_cache'] = cache.lookup(cache.ids)

  rela = f'experiments/rela/table1.py:runlocal,root={root}/rela,prior=holdout,objective=byol'
  run('rela/priors/holdout', 'experiments/rela/prior.py:runlocal,prior=holdout')
  config = load(rela)
  ids, targets, meta = rela_targets.compute_targets(config)
  if jax.process_index() == 0:
    id_table.save(config.rela.targets, ids, targets, meta)
  _sync('targets written')
  out['rela_targets'] = targets[np.argsort(ids)]
  run('byol_rela', rela)

  out.update(_train_dnc(root))
  return out


def _record(workdir, params):
  """A run's per-step losses (process 0 reads the log) and its final learner parameters."""
  rows = read_rows(workdir) if jax.process_index() == 0 else None
  # ReLA's phase logs its own loss; the method's steps train/loss.
  losses = [r['rela/loss'] if 'rela/loss' in r else r['train/loss'] for r in rows or []]
  return {'losses': losses or None, 'params': params}


def _train_dnc(root):
  """Divide and Contrast's tiny pipeline (tests/test_dnc.py), then the same command again:
  every host must skip every finished stage."""
  # pylint: disable=g-import-not-at-top
  from big_vision_style import checkpointing
  from big_vision_style import id_table
  from big_vision_style import train
  from big_vision_style.methods import dnc
  from tests import test_dnc
  # pylint: enable=g-import-not-at-top
  out = {}
  done = dnc.run(test_dnc.pipeline_config(), f'{root}/dnc', train_fn=train.train)
  runs = {'dnc/base': done['base'], 'dnc/distill': done['distill'],
          **{f'dnc/{k}': r for k, r in done['experts']['runs'].items()}}
  for name, stage in runs.items():
    out[name] = _record(stage['workdir'],
                        checkpointing.load_trained_params(stage['workdir'])[0])
  clusters = id_table.load(done['cluster']['table'], what='DnC clusters', how='rerun')
  out['dnc_clusters'] = clusters.lookup(clusters.ids)  # ids sorted.
  out['dnc_flops'] = done['total_flops']
  again = dnc.run(test_dnc.pipeline_config(), f'{root}/dnc', train_fn=train.train)
  out['dnc_rerun'] = {name: again[name] for name in ('base', 'cluster', 'distill')}
  out['dnc_done'] = {name: done[name] for name in ('base', 'cluster', 'distill')}
  return out


@pytest.fixture(scope='module')
def methods_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('methods')
  multi, single = multiprocess.run_layouts(
      'tests.test_multiprocess_methods:_train_methods', (str(root / 'two'),),
      single_args=(str(root / 'one'),), num_processes=2, devices_per_process=2, timeout=900)
  return multi, single


RUNS = ('bs_ref', 'bs_pretrained', 'bs_online', 'bs_cached', 'jest_ref', 'jest_joint',
        'jest_independent', 'jest_flexi', 'rela/priors/holdout', 'byol_rela', 'dnc/base',
        'dnc/expert_0', 'dnc/expert_1', 'dnc/distill')


@pytest.mark.parametrize('name', RUNS)
def test_every_method_in_two_processes_matches_one(methods_runs, name):
  """Same batches and programs; only the order in which cross-device sums add the 4 devices
  differs (XLA's in-process all-reduce vs gloo's ring; tests/test_multiprocess.py measures
  it), so float32 results can differ in their last bits. Measured here after 3 steps:
  losses equal to 1e-6 relative (bit-identical at step 1 for every classification run; the
  contrastive loss sums a b x b logit matrix across devices, so JEST's can differ by an ulp);
  parameters within a few ulps of each leaf's scale for at least 99% of the entries of every
  leaf (all 13 runs: at most 1 entry of 512 beyond), and every entry within Adam's bound of
  lr per step; attention key biases, whose true gradient is zero (a key bias shifts all of a
  query's logits equally, which the softmax cancels), are Adam-amplified rounding noise in
  either layout, so for them only their size is checked."""
  multi, single = methods_runs
  got, want = multi[0][name], single[name]
  steps = len(want['losses'])
  assert steps == STEPS or name.startswith('dnc/'), (name, steps)  # DnC: its stages' steps.
  assert len(got['losses']) == steps, name
  # Step 1: the same parameters, the same batch. Contrastive losses (JEST's, MoCLR's) sum a
  # logit matrix across devices, so they can differ by an ulp; DnC's distillation targets are
  # its experts' outputs, and each layout trained its own experts (measured once: 2e-7
  # relative, on a loaded machine).
  if not name.startswith(('jest', 'dnc/')):
    assert got['losses'][0] == want['losses'][0], name
  np.testing.assert_allclose(got['losses'], want['losses'], rtol=1e-6, err_msg=name)
  # Both processes hold the same replicated parameters, bit for bit.
  jax.tree.map(np.testing.assert_array_equal, multi[0][name]['params'],
               multi[1][name]['params'])
  leaves = jax.tree_util.tree_flatten_with_path(want['params'])[0]
  adam_bound = steps * 2.5e-3  # |one Adam update| <= lr (at most 2e-3 here), whatever g is.
  for (path, b), a in zip(leaves, jax.tree.leaves(got['params'])):
    where = f'{name} {jax.tree_util.keystr(path)}'
    assert np.abs(a - b).max() < adam_bound, where
    if "['key']['bias']" in where:  # Zero true gradient: Adam-amplified rounding noise.
      assert np.abs(a).max() < adam_bound and np.abs(b).max() < adam_bound, where
      continue
    # A few float32 ulps of the leaf's scale for all but a rare element whose gradient was
    # near zero, where Adam's normalisation can turn an ulp into a visible update
    # (measured: 1 of 512 entries, 5.8e-6, in one JEST run).
    close = np.abs(a - b) <= 2e-6 * np.abs(b).max() + 1e-7
    assert close.mean() >= 0.99, (where, close.mean())


@pytest.mark.parametrize('name', ['score_cache', 'embedding_cache', 'rela_targets'])
def test_offline_tools_in_two_processes_give_the_one_process_tables(methods_runs, name):
  """Each layout trained its own reference or prior, so the tables differ by the models'
  float noise (measured: JEST's unit-norm embeddings at most 2.9e-6 apart, 133 of 1.6M entries
  beyond 1e-6; the bad-students scores far less); ReLA's targets are z-scored PCA components
  (unit variance), whose weakest directions amplify it (measured: at most 4e-6). A wrong row or
  id would be off by the entries' own size, O(0.1)."""
  multi, single = methods_runs
  for result in multi:
    np.testing.assert_allclose(result[name], single[name], rtol=1e-5,
                               atol={'rela_targets': 2e-5, 'embedding_cache': 1e-5}.get(name, 1e-6),
                               err_msg=name)


def test_divide_and_contrast_in_two_processes_makes_the_one_process_clusters(methods_runs):
  """The same cluster of every example (k-means on embeddings of base models that agree to a
  few ulps), and the same FLOPs counted over all stages."""
  multi, single = methods_runs
  for result in multi:
    np.testing.assert_array_equal(result['dnc_clusters'], single['dnc_clusters'])
    assert result['dnc_flops'] == single['dnc_flops'] > 0
    assert result['dnc_rerun'] == result['dnc_done']  # The rerun skipped every stage.
