"""The committed results regenerate from their committed raw numbers: the run workdirs are not
in the repository, but results/ keeps enough of them (JEST: every run's per-seed curve, the
per-seed rows of its follow-ups and variants; ReLA: every run's final row, its FLOPs as their
seed mean; Bad Students: the seed-mean curves and every seed's final accuracy) for the
reproducers' `regenerate` paths to rebuild every committed summary, table and figure (figures
compared pixel by pixel). A change to an analysis that moves a committed number or figure fails
here: regenerate the results with the change and commit them with it."""
import json
import math
import os
import shutil

import numpy as np
import pytest

from experiments.bad_students import reproduce_policy_comparison as bad_students
from experiments.jest import gain_sweep
from experiments.jest import joint_vs_independent
from experiments.jest import reference_strength
from experiments.jest import reproduce as jest_reproduce
from experiments.jest import variants
from experiments.rela import reproduce_table1 as rela
from tests import synthetic_runs

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'results')


def _load(*path):
  with open(os.path.join(*path)) as f:
    return json.load(f)


def _read(*path):
  with open(os.path.join(*path)) as f:
    return f.read()


def _nan_to_none(x):  # NaN != NaN: compare the clean runs' NaN flipped fractions as None.
  if isinstance(x, dict):
    return {k: _nan_to_none(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_nan_to_none(v) for v in x]
  return None if isinstance(x, float) and math.isnan(x) else x


def _same_files(out, committed, names):
  """Each of `names` in `out` as in `committed`: JSON by value, PNG by pixels, text by bytes."""
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  for name in names:
    got, want = os.path.join(out, name), os.path.join(committed, name)
    if name.endswith('.json'):
      assert _nan_to_none(_load(got)) == _nan_to_none(_load(want)), name
    elif name.endswith('.png'):
      a, b = image.imread(got), image.imread(want)
      assert a.shape == b.shape and np.array_equal(a, b), name
    else:
      assert _read(got) == _read(want), name


def test_jest_results_regenerate_from_the_committed_curves(tmp_path):
  jest_reproduce.regenerate(os.path.join(RESULTS, 'jest'), str(tmp_path))
  _same_files(str(tmp_path), os.path.join(RESULTS, 'jest'),
              ['summary.json', 'curves.json', 'table.md', 'fig2_sampler.png',
               'fig3_filter_ratio.png', 'fig3_curves.png', 'fig4_flops.png'])
  summary = _load(tmp_path, 'summary.json')
  assert summary['std_ddof'] == 1
  # The sample std of every run's final zero-shot, from its seeds' curves.
  curves = _load(RESULTS, 'jest', 'curves.json')
  for name, r in summary['runs'].items():
    finals = [c['zeroshot'][-1] for c in curves[name].values()]
    assert math.isclose(r['final']['std'], np.std(finals, ddof=1), rel_tol=1e-12)


def test_jest_v2_results_regenerate_from_the_committed_curves(tmp_path):
  folder = os.path.join(RESULTS, 'jest', 'v2')
  jest_reproduce.regenerate(folder, str(tmp_path))
  _same_files(str(tmp_path), folder, ['summary.json', 'curves.json', 'table.md',
                                      'fig2_sampler.png', 'fig3_filter_ratio.png',
                                      'fig3_curves.png', 'fig4_flops.png'])


def test_jest_joint_vs_independent_regenerates_from_its_committed_curves(tmp_path):
  folder = os.path.join(RESULTS, 'jest', 'v2', 'joint_vs_independent')
  joint_vs_independent.main(['--regenerate_from', folder, '--out', str(tmp_path)])
  _same_files(str(tmp_path), folder, ['summary.json', 'curves.json', 'table.md',
                                      'joint_vs_independent.png'])
  pair = _load(folder, 'summary.json')['pairs']['learnability_f0.8']
  diffs = [r['joint']['zeroshot'] - r['independent']['zeroshot']
           for r in pair['per_seed'].values()]
  assert pair['zeroshot']['seeds'] == [str(s) for s in range(3, 11)]
  assert math.isclose(pair['zeroshot']['std'], np.std(diffs, ddof=1), rel_tol=1e-12)


def test_jest_analysis_of_run_logs_gives_the_committed_summary(tmp_path):
  """The workdir path (run logs rebuilt from the committed curves) agrees with regenerate."""
  curves, committed = _load(RESULTS, 'jest', 'curves.json'), _load(RESULTS, 'jest',
                                                                   'summary.json')
  keys = {'zeroshot': 'eval/zeroshot/accuracy', 'i2t': 'eval/retrieval/i2t_recall_at_1',
          't2i': 'eval/retrieval/t2i_recall_at_1', 'flops': 'flops/total_pretrained_reference',
          'corrupted_selected': 'selection/corrupted_selected'}
  for name, per_seed in curves.items():
    for seed, c in per_seed.items():
      rows = [{'step': step, **{key: c[k][i] for k, key in keys.items() if k in c}}
              for i, step in enumerate(c['step'])]
      synthetic_runs.write_log(tmp_path / 'w' / 'runs' / f'{name}_s{seed}', rows, final=True)
  args = jest_reproduce.parse_args(['--workdir', str(tmp_path / 'w'),
                                    '--out', str(tmp_path / 'out')])
  summary = jest_reproduce.analyze(args, committed['fig2_sampler'],
                                   committed['fig4_flops_per_iteration'])
  assert summary['runs'] == committed['runs'] and summary['paired'] == committed['paired']
  assert _load(tmp_path, 'out', 'curves.json') == curves
  # The table, but for the sweep's wall time (its timing record is not committed).
  table = _read(RESULTS, 'jest', 'table.md').replace(
      f'Wall time of the sweep on this machine: {committed["wall_seconds"]["total"] / 60:.1f} '
      'min.\n\n', '')
  assert _read(tmp_path, 'out', 'table.md') == table


def test_jest_reuse_sweep_regenerates_with_sample_stds(tmp_path):
  committed = os.path.join(RESULTS, 'jest', 'reuse_sweep')
  jest_reproduce.regenerate(committed, str(tmp_path))
  _same_files(str(tmp_path), committed, ['summary.json', 'table.md'])
  # A population-std summary (as first committed) gives the committed sample stds.
  summary = _load(committed, 'summary.json')
  s = summary['runs']['learnability_joint_f0.8']['final']
  population = {**summary, 'runs': {'x': {'final': {**s, 'std': s['std'] * math.sqrt(2 / 3)}}}}
  del population['std_ddof']
  again = jest_reproduce.sample_stds(population)
  assert math.isclose(again['runs']['x']['final']['std'], s['std'], rel_tol=1e-12)


def test_jest_variants_and_follow_ups_regenerate_from_their_per_seed_rows(tmp_path):
  shutil.copytree(os.path.join(RESULTS, 'jest', 'variants'), tmp_path / 'variants')
  variants.regenerate(str(tmp_path / 'variants'))
  _same_files(str(tmp_path / 'variants'), os.path.join(RESULTS, 'jest', 'variants'),
              ['summary.json', 'table.md', 'variants.png'])
  for name, regenerate in (('gain_sweep.json', gain_sweep.regenerate),
                           ('gain_heldout.json', gain_sweep.regenerate),
                           ('reference_strength.json', reference_strength.regenerate)):
    shutil.copy(os.path.join(RESULTS, 'jest', name), tmp_path / name)
    regenerate(str(tmp_path / name))
    _same_files(str(tmp_path), os.path.join(RESULTS, 'jest'), [name])


def test_rela_summary_and_table_regenerate_from_the_committed_finals(tmp_path):
  committed = _load(RESULTS, 'rela', 'summary.json')
  # Through the workdir path: every run's final.json rebuilt from the committed finals.
  for objective in ('byol', 'supervised'):
    for prior, by_budget in committed[objective].items():
      for budget, e in by_budget.items():
        for seed, accuracy in e['per_seed'].items():
          workdir = tmp_path / 'w' / objective / prior / f'r{float(budget):g}_s{seed}'
          workdir.mkdir(parents=True)
          (workdir / 'final.json').write_text(json.dumps({
              'step': e['steps'], committed['metric'][objective]: accuracy,
              'rela/switch_step': e['switch_step'][seed], 'flops/total': e['flops_total'],
              'flops/total_free_prior': e['flops_total_free_prior']}))
  args = rela.parse_args(['--workdir', str(tmp_path / 'w'), '--out', str(tmp_path / 'out')])
  rela.analyze(args)
  _same_files(str(tmp_path / 'out'), os.path.join(RESULTS, 'rela'),
              ['summary.json', 'table.md', 'accuracy.png'])
  # And through regenerate, from summary.json alone.
  rela.regenerate(os.path.join(RESULTS, 'rela'), str(tmp_path / 'again'))
  _same_files(str(tmp_path / 'again'), os.path.join(RESULTS, 'rela'),
              ['summary.json', 'table.md', 'accuracy.png'])
  e = committed['byol']['holdout']['0.5']
  assert math.isclose(e['std'], np.std(list(e['per_seed'].values()), ddof=1), rel_tol=1e-12)


def test_bad_students_results_regenerate_from_the_committed_curves(tmp_path):
  bad_students.regenerate(os.path.join(RESULTS, 'bad_students'), str(tmp_path))
  _same_files(str(tmp_path), os.path.join(RESULTS, 'bad_students'),
              ['summary.json', 'curves.json', 'table.md', 'accuracy.png', 'amortisation.png'])
  summary = _load(tmp_path, 'summary.json')
  # Only seed-mean curves were committed: no per-seed ratios, and the summary says so.
  assert 'per_seed_ratios_note' in summary
  learn = summary['noise0.3']['policies']['learnability']
  assert learn['per_seed_ratios'] is None
  finals = list(learn['final_accuracy_per_seed'].values())
  assert math.isclose(learn['final_accuracy_std'], np.std(finals, ddof=1), rel_tol=1e-12)
  assert learn['final_accuracy_minus_uniform']['seeds'] == ['0', '1', '2']


def test_bad_students_strong_reference_results_regenerate_with_per_seed_ratios(tmp_path):
  folder = os.path.join(RESULTS, 'bad_students', 'strong_reference_heldout')
  bad_students.regenerate(folder, str(tmp_path))
  _same_files(str(tmp_path), folder,
              ['summary.json', 'curves.json', 'table.md', 'accuracy.png', 'amortisation.png'])
  learn = _load(tmp_path, 'summary.json')['noise0.3']['policies']['learnability']
  ratios = learn['per_seed_ratios']  # Per-seed curves committed: per-seed ratios, intervals.
  steps = [r['steps_to_target_ratio'] for r in ratios['per_seed'].values()]
  assert math.isclose(ratios['steps_to_target_ratio']['mean'], np.mean(steps), rel_tol=1e-12)
  assert learn['final_accuracy_minus_uniform']['seeds'] == ['3', '4', '5']


@pytest.mark.parametrize('folder', ['actor_size', 'rho_vs_classact'])
def test_bad_students_arm_studies_summaries_follow_from_their_committed_curves(folder):
  from experiments.bad_students import arms  # pylint: disable=g-import-not-at-top
  path = os.path.join(RESULTS, 'bad_students', folder)
  if not os.path.exists(os.path.join(path, 'curves.json')):
    pytest.skip(f'{folder} not committed yet')
  committed = json.loads(open(os.path.join(path, 'summary.json')).read())
  curves = json.loads(open(os.path.join(path, 'curves.json')).read())
  again = json.loads(json.dumps(arms.summarize(curves, committed['label_noise'],
                                               committed['steps'], committed['seeds'])))
  assert again == {k: committed[k] for k in again}
  for name, entry in committed['arms'].items():  # Every arm paired with uniform on all seeds.
    if name != 'uniform':
      assert entry['final_accuracy_minus_uniform']['seeds'] == [str(s) for s in committed['seeds']]
