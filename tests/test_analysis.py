"""experiments/analysis.py on hand-made values and synthetic run logs."""
import numpy as np
import pytest
from scipy import stats

from experiments import analysis
from tests import synthetic_runs


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


def test_paired_difference_is_the_mean_difference_with_a_t_interval():
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
  analysis.errorbar(ax, [1, 2], [{'mean': 0.1, 'std': 0.01}, {'mean': 0.2, 'std': 0.02}],
                    scale=100, capsize=3)
  analysis.save_figure(fig, str(tmp_path / 'plot.png'), dpi=50)
  assert (tmp_path / 'plot.png').read_bytes()[:4] == b'\x89PNG'
  with pytest.raises(ValueError, match='band'):
    analysis.plot_seeds(plt.subplots()[1], [1], [[1]], band='bands')

