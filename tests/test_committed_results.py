"""The committed results regenerate from their committed raw numbers: the run workdirs are not
in the repository, but results/ keeps enough of them (JEST: every run's curve; ReLA: every
run's final row, its FLOPs as their seed mean; Bad Students: the seed-mean curves and every
seed's final accuracy) to rebuild run logs that the reproducers' analyses turn back into the
committed tables and summaries. A change to an analysis that moves a committed number fails
here: rerun the sweep's analysis and commit its results with the change."""
import json
import math
import os

from experiments.bad_students import reproduce_policy_comparison as bad_students
from experiments.jest import reproduce as jest_reproduce
from experiments.rela import reproduce_table1 as rela
from tests import synthetic_runs

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'results')


def _load(*path):
  with open(os.path.join(RESULTS, *path)) as f:
    return json.load(f)


def _read(*path):
  with open(os.path.join(*path)) as f:
    return f.read()


def test_jest_summary_and_table_regenerate_from_the_committed_curves(tmp_path):
  curves, committed = _load('jest', 'curves.json'), _load('jest', 'summary.json')
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
  assert summary['runs'] == committed['runs']
  assert json.loads(_read(tmp_path, 'out', 'curves.json')) == curves
  # The table, but for the sweep's wall time (its timing record is not committed).
  table = _read(RESULTS, 'jest', 'table.md').replace(
      f'Wall time of the sweep on this machine: {committed["wall_seconds"]["total"] / 60:.1f} '
      'min.\n\n', '')
  assert _read(tmp_path, 'out', 'table.md') == table


def test_rela_summary_and_table_regenerate_from_the_committed_finals(tmp_path):
  committed = _load('rela', 'summary.json')
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
  assert _read(tmp_path, 'out', 'table.md') == _read(RESULTS, 'rela', 'table.md')
  assert json.loads(_read(tmp_path, 'out', 'summary.json')) == committed


def test_bad_students_summary_regenerates_from_the_committed_curves(tmp_path):
  curves, committed = _load('bad_students', 'curves.json'), _load('bad_students', 'summary.json')
  for variant, per_policy in curves.items():
    noise = committed[variant]['label_noise']
    for policy, c in per_policy.items():
      # Seed k: the seed-mean curve, ending at seed k's own final accuracy.
      for k, seed in enumerate(c['seeds']):
        rows = [{'step': step, 'eval/test/accuracy': acc,
                 **{key: c['flops'][level][i] for level, key in bad_students.LEVELS.items()}}
                for i, (step, acc) in enumerate(zip(c['steps'], c['acc']))]
        rows[-1]['eval/test/accuracy'] = c['finals'][k]
        if not math.isnan(c['flipped_selected'][k]):
          for row in rows:
            row[bad_students.FLIPPED] = c['flipped_selected'][k]
        synthetic_runs.write_log(tmp_path / 'w' / f'noise{noise:g}' / f'{policy}_s{seed}', rows)
  args = bad_students.parse_args(['--workdir', str(tmp_path / 'w'),
                                  '--out', str(tmp_path / 'out')])
  bad_students.analyze(args)
  saved = json.loads(_read(tmp_path, 'out', 'summary.json'))

  def nan_to_none(x):  # NaN != NaN: compare the clean runs' NaN flipped fractions as None.
    if isinstance(x, dict):
      return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
      return [nan_to_none(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x

  assert nan_to_none(saved) == nan_to_none(committed)
  assert nan_to_none(json.loads(_read(tmp_path, 'out', 'curves.json'))) == nan_to_none(curves)
