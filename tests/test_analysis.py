"""experiments/analysis.py, and the reproducers' analyses built on it, on synthetic run logs.

The numbers below were produced by the reproducers as they were before experiments/analysis.py
and experiments/sweep.py (commit f4dc0de: experiments/jest/reproduce.py,
bad_students/reproduce_policy_comparison.py and rela/reproduce_table1.py, each with its own
analysis), run on the same synthetic logs (tests/synthetic_runs.py): the rebuilt reproducers
must give them back to the digit. Those reported the population std (ddof=0); the reproducers
now report the sample std (ddof=1), checked here as the old value times sqrt(n / (n - 1)). The
expected tables in tests/expected_analysis/ were rewritten by the reproducers when they switched
to sample stds with paired intervals (and, for Bad Students, per-seed ratios): every mean and
ratio in them is the one the old tables had.
"""
import argparse
import json
import math
import os

import numpy as np
import pytest

from experiments import analysis

from experiments.bad_students import reproduce_policy_comparison as bad_students
from experiments.jest import reproduce as jest_reproduce
from experiments.rela import reproduce_table1 as rela
from tests import synthetic_runs

EXPECTED = os.path.join(os.path.dirname(__file__), 'expected_analysis')


def _expected(name):
  with open(os.path.join(EXPECTED, name)) as f:
    return f.read()


# ----- The shared functions -----

def test_read_rows_keeps_one_row_per_step_the_last_logged(tmp_path):
  rows = [{'step': 1, 'a': 1.0}, {'step': 2, 'b': 0.0}, {'step': 2, 'a': 2.0},
          {'step': 3, 'a': 3.0}, {'step': 3, 'a': 4.0}]
  synthetic_runs.write_log(tmp_path, rows)
  assert len(analysis.read_rows(str(tmp_path))) == 5  # Unfiltered: as logged.
  got = analysis.read_rows(str(tmp_path), where='a')
  assert [(r['step'], r['a']) for r in got] == [(1, 1.0), (2, 2.0), (3, 4.0)]
  c = analysis.curve(str(tmp_path), {'step': 'step', 'a': 'a', 'b': 'b'}, where='a')
  assert c == {'step': [1, 2, 3], 'a': [1.0, 2.0, 4.0]}  # 'b' is not in every row.


def test_first_reach_reach_and_ratio():
  values = [0.1, 0.2999999999, 0.5]
  assert analysis.first_reach(values, 0.3, tol=1e-9) == 1
  assert analysis.first_reach(values, 0.3, tol=1e-12) == 2
  assert analysis.first_reach(values, 0.6, tol=1e-9) is None
  assert analysis.reach(values, 0.2, [10, 20, 30], [1e9, 2e9, 3e9], tol=0) == (20, 2e9)
  assert analysis.reach(values, 0.9, [10, 20, 30], tol=0) is None
  assert analysis.ratio(3, 4) == 0.75
  assert analysis.ratio(None, 4) is None and analysis.ratio(3, None) is None


def test_seed_stat_takes_ddof_explicitly_and_counts_the_seeds_that_reached():
  values = [0.1, None, 0.3, 0.5]
  population = analysis.seed_stat(values, ddof=0)
  assert population == {'mean': pytest.approx(0.3), 'std': pytest.approx(np.std([.1, .3, .5])),
                        'n': 3, 'of': 4}
  assert analysis.seed_stat(values, ddof=1)['std'] == pytest.approx(0.2)
  assert analysis.seed_stat([None, None], ddof=0) == {'mean': None, 'std': None, 'n': 0, 'of': 2}
  with pytest.raises(TypeError):
    analysis.seed_stat([1.0], 0)  # pylint: disable=too-many-function-args
  assert analysis.mean_std([1.0, 3.0], ddof=0) == (2.0, 1.0)


SQRT2 = math.sqrt(2)  # ddof=1 / ddof=0 std ratio for two seeds.


def test_seed_stat_sample_std_is_numpys_ddof_1():
  rng = np.random.default_rng(0)
  for n in (2, 3, 5, 8):
    values = rng.normal(size=n).tolist()
    s = analysis.seed_stat(values, ddof=analysis.SAMPLE)
    assert s['std'] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert analysis.sample_std_from_population(np.std(values), n) == pytest.approx(s['std'],
                                                                                  rel=1e-12)
  # One seed has no sample std (not NaN); nor a population std to convert.
  assert analysis.seed_stat([0.5, None], ddof=1) == {'mean': 0.5, 'std': None, 'n': 1, 'of': 2}
  assert analysis.sample_std_from_population(0.0, 1) is None


def test_t_quantile_table_matches_known_values_and_scipy():
  # Known two-sided 95% quantiles of Student's t (any printed t table).
  assert analysis.T_975[1] == pytest.approx(12.706, abs=1e-3)
  assert analysis.T_975[2] == pytest.approx(4.303, abs=1e-3)
  assert analysis.T_975[10] == pytest.approx(2.228, abs=1e-3)
  assert analysis.T_975[30] == pytest.approx(2.042, abs=1e-3)
  assert all(a > b for a, b in zip(list(analysis.T_975.values()),
                                   list(analysis.T_975.values())[1:]))
  try:
    from scipy import stats  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for df, q in analysis.T_975.items():
    assert q == pytest.approx(stats.t.ppf(0.975, df), abs=1e-6)
    assert analysis.t_quantile(0.95, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-12)
  assert analysis.t_quantile(0.9, 4) == pytest.approx(stats.t.ppf(0.95, 4), rel=1e-12)


def test_t_quantile_without_scipy_uses_the_table(monkeypatch):
  import builtins  # pylint: disable=g-import-not-at-top
  real_import = builtins.__import__

  def no_scipy(name, *args, **kw):
    if name == 'scipy' or name.startswith('scipy.'):
      raise ImportError(name)
    return real_import(name, *args, **kw)

  monkeypatch.setattr(builtins, '__import__', no_scipy)
  assert analysis.t_quantile(0.95, 3) == analysis.T_975[3]
  with pytest.raises(ValueError, match='Without scipy'):
    analysis.t_quantile(0.9, 3)
  # The interval of [1, 2, 3]: mean 2, std 1, half-width t(0.975, 2) / sqrt(3).
  got = analysis.mean_interval([1.0, 2.0, 3.0])
  half = 4.302653 / math.sqrt(3)
  assert (got['low'], got['high']) == (pytest.approx(2 - half), pytest.approx(2 + half))


def test_paired_by_seed_pairs_the_common_seeds_that_have_values():
  a = {'0': 0.15, '1': 0.14, '2': None, '10': 0.2}
  b = {'0': 0.13, '1': 0.135, '2': 0.14, '3': 0.1, '10': 0.18}
  got = analysis.paired_by_seed(a, b)
  assert got['seeds'] == ['0', '1', '10'] and got['n'] == 3
  assert got['mean'] == pytest.approx(np.mean([0.02, 0.005, 0.02]))
  assert got == {**analysis.paired_difference([0.15, 0.14, 0.2], [0.13, 0.135, 0.18]),
                 'seeds': ['0', '1', '10']}
  assert analysis.fmt_interval(got, 100) == (
      f'{100 * got["mean"]:+.2f} [{100 * got["low"]:+.2f}, {100 * got["high"]:+.2f}]')
  assert analysis.fmt_interval(analysis.paired_by_seed({'0': 0.2}, {'0': 0.1}), 100) == (
      '+10.00 (n=1, no interval)')


def test_paired_difference_is_the_mean_difference_with_a_t_interval():
  stats = pytest.importorskip('scipy.stats')
  a, b = [0.15, 0.14, 0.16, 0.155], [0.13, 0.135, 0.14, 0.15]
  got = analysis.paired_difference(a, b)
  d = np.subtract(a, b)
  half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
  assert got['mean'] == pytest.approx(d.mean()) and got['std'] == pytest.approx(d.std(ddof=1))
  assert (got['low'], got['high']) == (pytest.approx(d.mean() - half),
                                       pytest.approx(d.mean() + half))
  # The same interval as scipy's one-sample t-test of the differences.
  ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
  assert (got['low'], got['high']) == (pytest.approx(ci.low), pytest.approx(ci.high))
  assert got['n'] == 4 and got['confidence'] == 0.95
  one = analysis.paired_difference([0.2], [0.1])
  assert one['mean'] == pytest.approx(0.1) and one['low'] is None and one['std'] is None
  with pytest.raises(ValueError, match='same seeds'):
    analysis.paired_difference([0.1, 0.2], [0.1])


def test_mean_curve_truncates_to_the_shortest_seed():
  curves = [{'step': [1, 2, 3], 'a': [1.0, 2.0, 3.0]}, {'step': [1, 2], 'a': [3.0, 4.0]}]
  got = analysis.mean_curve(curves, {'a': 'a', 'twice': lambda c: [2 * v for v in c['a']]})
  assert got['step'] == [1, 2]
  np.testing.assert_allclose(got['a'], [2.0, 3.0])
  np.testing.assert_allclose(got['twice'], [4.0, 6.0])


def test_formatting_and_markdown_tables():
  s = analysis.seed_stat([0.1234, 0.1434, None], ddof=0)
  assert analysis.fmt_stat(s, 100) == '13.34 ± 1.00 (2/3)'
  full = analysis.seed_stat([0.5, 0.7], ddof=1)
  assert analysis.fmt_stat(full, always_count=True) == f'0.60 ± {full["std"]:.2f} (2/2)'
  assert analysis.fmt_stat(analysis.seed_stat([0.5, None], ddof=1), always_count=True) == (
      '0.50 ± - (1/2)')
  assert analysis.fmt_stat(analysis.seed_stat([0.5, 0.5], ddof=0), 1, 1) == '0.5 ± 0.0'
  assert analysis.fmt_stat(analysis.seed_stat([None], ddof=0)) == 'never (1 seeds)'
  assert analysis.fmt(None) == '-' and analysis.fmt(1.234) == '1.23'
  assert analysis.fmt(1.234, 1) == '1.2'
  assert analysis.markdown_table(['a', 'b'], [[1, 'x'], ['y', 2.5]], 'lr') == [
      '| a | b |', '|---|---:|', '| 1 | x |', '| y | 2.5 |']
  with pytest.raises(ValueError, match='columns'):
    analysis.markdown_table(['a', 'b'], [], 'l')


@pytest.mark.parametrize('band', [None, 'std', 'points'])
def test_plot_helpers_draw_means_bands_and_points(tmp_path, band):
  plt = analysis.pyplot()
  fig, ax = plt.subplots()
  line = analysis.plot_seeds(ax, [1, 2, 3], [[1, 2, 3], [2, 3, 5]], scale=100, band=band,
                             label='run')
  np.testing.assert_allclose(line.get_ydata(), [150, 250, 400])
  assert len(ax.lines) == (3 if band == 'points' else 1)
  assert len(ax.collections) == (1 if band == 'std' else 0)
  analysis.errorbar(ax, [1, 2], [{'mean': 0.1, 'std': 0.01}, {'mean': 0.2, 'std': None}],
                    scale=100, capsize=3)  # A missing std (one seed): no bar.
  before = len(ax.lines)
  analysis.seed_points(ax, [1, 2], [[0.1, None, 0.2], [0.3]], scale=100)
  assert len(ax.lines) == before + 1
  np.testing.assert_allclose(ax.lines[-1].get_ydata(), [10, 20, 30])
  np.testing.assert_allclose(ax.lines[-1].get_xdata(), [1, 1, 2])
  analysis.save_figure(fig, str(tmp_path / 'plot.png'), dpi=50)
  assert (tmp_path / 'plot.png').read_bytes()[:4] == b'\x89PNG'
  with pytest.raises(ValueError, match='band'):
    analysis.plot_seeds(plt.subplots()[1], [1], [[1]], band='bands')


# ----- The reproducers' analyses: the same tables and numbers as before -----

def test_jest_analysis_gives_the_previous_tables_and_numbers(tmp_path):
  synthetic_runs.jest_grid(str(tmp_path / 'w'))
  args = jest_reproduce.parse_args(['--workdir', str(tmp_path / 'w'), '--out',
                                    str(tmp_path / 'out'), '--seeds', '0,1'])
  summary = jest_reproduce.analyze(args)
  assert (tmp_path / 'out' / 'table.md').read_text() == _expected('jest_table.md')
  assert summary['seeds'] == ['0', '1']
  assert summary['wall_seconds'] == {'total': 230.0, 'parts': {
      'references': 60.0, 'uniform_s0': 100.0, 'uniform_s1': 100.0, 'fig2_and_fig4': 30.0}}
  runs = summary['runs']
  assert 'flexi_learnability_joint_f0.8' not in runs  # Never trained.
  joint, independent = runs['learnability_joint_f0.8'], runs['learnability_independent_f0.8']
  # The duplicated last step counts once, with its last value.
  assert joint['final'] == {'mean': 0.15625, 'std': pytest.approx(0.00235 * SQRT2, abs=1e-15),
                            'n': 2, 'of': 2}
  assert joint['corrupted_selected']['mean'] == pytest.approx(0.22065, abs=1e-15)
  assert joint['flops_fraction_vs_3x'] == {'mean': pytest.approx(0.7115384615384616, abs=1e-15),
                                           'std': 0.0, 'n': 2, 'of': 2}
  assert joint['flops_ratio']['mean'] == pytest.approx(1.4375, abs=1e-15)
  assert joint['iterations_ratio_retrieval']['mean'] == 0.875
  assert independent['iterations_fraction_vs_3x'] == {  # One seed: no sample std.
      'mean': pytest.approx(1 / 3, abs=1e-15), 'std': None, 'n': 1, 'of': 2}
  assert runs['uniform_3x']['iterations_ratio_retrieval'] == {
      'mean': 2.75, 'std': pytest.approx(0.125 * SQRT2), 'n': 2, 'of': 2}
  # Paired by seed, and the 95% interval of a ratio over the seeds that reached.
  paired = summary['paired']['vs_uniform']['learnability_joint_f0.8']['final']
  assert paired['seeds'] == ['0', '1'] and paired['low'] < paired['mean'] < paired['high']
  assert summary['paired']['joint_minus_independent']['learnability, f = 0.8']['final'][
      'mean'] == pytest.approx(joint['final']['mean'] - independent['final']['mean'])
  assert joint['intervals']['flops_ratio']['mean'] == pytest.approx(1.4375, abs=1e-15)
  # The unfinished seed-1 run is left out, as is a seed the uniform baseline lacks.
  assert runs['uncurated_ref_learnability_joint_f0.8']['final']['of'] == 1
  curves = json.loads((tmp_path / 'out' / 'curves.json').read_text())
  assert sorted(curves['learnability_joint_f0.8']) == ['0', '1']
  assert curves['learnability_joint_f0.8']['1']['step'] == list(range(100, 801, 100))
  for png in ('fig3_filter_ratio.png', 'fig3_curves.png'):
    assert (tmp_path / 'out' / png).stat().st_size > 10_000


@pytest.mark.filterwarnings('ignore:Mean of empty slice')  # No flipped labels: uniform.
def test_bad_students_analysis_gives_the_previous_table_and_numbers(tmp_path, capsys):
  synthetic_runs.bad_students_grid(str(tmp_path / 'w'))
  args = argparse.Namespace(workdir=str(tmp_path / 'w'), out=str(tmp_path / 'out'),
                            seeds=[0, 1], noise=[0.0, 0.3],
                            policies=list(synthetic_runs.BAD_STUDENTS_POLICIES), steps=400,
                            eval_every=100)
  summary = bad_students.analyze(args)
  assert capsys.readouterr().out == _expected('bad_students_table.md')
  assert summary['clean']['target_accuracy'] == pytest.approx(0.84045, abs=1e-15)
  learn = summary['clean']['policies']['learnability']
  assert learn['final_accuracy_std'] == pytest.approx(0.00285 * SQRT2, abs=1e-15)  # ddof=1.
  assert learn['final_accuracy_minus_uniform']['seeds'] == ['0', '1']
  # Per seed: each seed's first reach of its own uniform run's final accuracy.
  per_seed = learn['per_seed_ratios']
  assert per_seed['steps_to_target_ratio']['n'] == 2 and set(per_seed['per_seed']) == {'0', '1'}
  assert learn['final_accuracy_per_seed'] == {'0': 0.8707, '1': 0.865}
  assert (learn['steps_to_target'], learn['steps_to_target_ratio']) == (300, 0.75)
  assert learn['flops_to_target_ratio_by_level'] == {
      'all': pytest.approx(1.425), 'pretrained_reference': pytest.approx(1.125),
      'cached_reference_scores': pytest.approx(0.9), 'learner_only': pytest.approx(0.75)}
  noisy = summary['noise0.3']['policies']
  assert noisy['rho']['num_seeds'] == 1  # Seed 1 stopped at step 300.
  assert noisy['rho']['mean_fraction_flipped_selected'] == pytest.approx(0.095775, abs=1e-15)
  assert math.isnan(noisy['uniform']['mean_fraction_flipped_selected'])
  saved = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  assert saved['steps'] == 400 and saved['flops_to_target_ratio_level'] == 'pretrained_reference'
  curves = json.loads((tmp_path / 'out' / 'curves.json').read_text())
  assert curves['noise0.3']['rho']['acc'] == [0.8027, 0.8399, 0.8621, 0.878]
  for png in ('accuracy.png', 'amortisation.png'):
    assert (tmp_path / 'out' / png).stat().st_size > 10_000


def test_rela_analysis_gives_the_previous_table_and_numbers(tmp_path, capsys):
  synthetic_runs.rela_grid(str(tmp_path / 'w'))
  args = argparse.Namespace(workdir=str(tmp_path / 'w'), out=str(tmp_path / 'out'),
                            seeds=[0, 1], objectives=['byol', 'supervised'],
                            priors=['none', 'holdout'], budgets=[0.1, 1.0], epochs=6.0,
                            batch=128, lr=2e-3)
  summary = rela.analyze(args)
  assert (tmp_path / 'out' / 'table.md').read_text() == _expected('rela_table.md')
  assert capsys.readouterr().out == _expected('rela_table.md')
  holdout = summary['byol']['holdout']['0.1']
  paired = holdout.pop('minus_none_same_budget')
  assert paired['mean'] == pytest.approx(
      0.7311 - summary['byol']['none']['0.1']['mean'], abs=1e-15)
  assert holdout.pop('minus_none_full_data')['seeds'] == ['0', '1']
  assert holdout == {'mean': pytest.approx(0.7311, abs=1e-15),
                     'std': pytest.approx(0.0074 * SQRT2, abs=1e-15),
                     'per_seed': {'0': 0.7385, '1': 0.7237}, 'switch_step': {'0': 40, '1': 50},
                     'steps': 234, 'flops_total': 1.5e11, 'flops_total_free_prior': 7.5e10,
                     'num_seeds': 2}
  assert summary['supervised']['holdout']['0.1']['num_seeds'] == 1
  assert (tmp_path / 'out' / 'accuracy.png').stat().st_size > 10_000


def test_a_results_command_line_parses_back_to_its_arguments():
  """The provenance line of a result is runnable: parsed by the reproducer, it gives the same
  options (flags, comma lists, a value with a space), without the sweep's own."""
  import shlex  # pylint: disable=g-import-not-at-top
  from experiments.bad_students import reproduce_actor_size as actor_size  # pylint: disable=g-import-not-at-top
  args = actor_size.parse_args(['--workdir', 'w d', '--seeds', '3,4', '--parallel', '2'])
  line = analysis.command(actor_size.MODULE, args)
  argv = shlex.split(line)
  assert argv[:3] == ['python', '-m', actor_size.MODULE] and '--parallel' not in argv
  assert vars(actor_size.parse_args(argv[3:])) == {**vars(args), 'parallel': 1}
