"""The JEST sweep (experiments/jest/grid.py, reproduce.py): its runs' configs under the sweep's
options, --parallel workers that get every run-shaping option, variant runs by name only."""
import types

import pytest

from experiments import sweep
from experiments.jest import grid
from experiments.jest import reproduce


def _roles_needed(config) -> set[str]:
  """The models a contrastive run's selection reads (the library's own answer)."""
  from big_vision_style.methods import contrastive  # pylint: disable=g-import-not-at-top
  return contrastive.roles_needed(contrastive.selection_config(config))


def test_parallel_sweep_queue_hands_each_run_to_one_worker_longest_first(tmp_path):
  args = types.SimpleNamespace(seeds=[0, 1], runs=list(grid.all_runs()), workdir=str(tmp_path))
  runs = sweep.longest_first(grid.learner_runs(args))
  assert len(runs) == 2 * len(grid.all_runs())
  costs = [run.cost for run in runs]
  assert costs == sorted(costs, reverse=True)
  assert costs[0] == grid.relative_cost('learnability_joint_f0.9') > costs[-1] == 1.0
  assert runs[0].name == 'learnability_joint_f0.9_s0'
  assert runs[0].workdir == str(tmp_path / 'runs' / 'learnability_joint_f0.9_s0')
  # Both workers try every run, in turn first; each run goes to exactly one of them.
  queue = tmp_path / 'queue'
  queue.mkdir()
  taken = [[], []]
  for i, run in enumerate(runs):
    order = (0, 1) if i % 2 else (1, 0)
    wins = [k for k in order if sweep.claim(str(queue), run.name)]
    assert len(wins) == 1 and wins[0] == order[0]
    taken[wins[0]].append(run.name)
  assert sorted(taken[0] + taken[1]) == sorted(r.name for r in runs) and taken[0] and taken[1]
  # A new sweep (a new queue directory) may claim them again: a killed sweep resumes.
  (tmp_path / 'next').mkdir()
  assert sweep.claim(str(tmp_path / 'next'), runs[0].name)


def test_sweep_flags_reach_the_selecting_runs_only():
  args = types.SimpleNamespace(workdir='w', steps=800, eval_every=100, reuse=True, gain=10.0,
                               benchmark='v2')

  def sel(name):
    return grid.run_config(args, name, 0).selection

  assert sel('learnability_joint_f0.8').gain == 10.0
  assert sel('learnability_joint_f0.8').reuse_scoring_forward
  assert sel('flexi_learnability_joint_f0.8').gain == 10.0
  assert not sel('flexi_learnability_joint_f0.8').reuse_scoring_forward  # Cannot reuse.
  assert sel('uniform').policy == 'uniform' and 'gain' not in sel('uniform')
  default = types.SimpleNamespace(**{**vars(args), 'reuse': False, 'gain': None})
  plain = grid.run_config(default, 'learnability_joint_f0.8', 0).selection
  assert plain.gain == 1.0 and not plain.reuse_scoring_forward
  # --parallel workers get the same flags (they once ran every run at the default gain).
  for flags in (args, default):
    full = reproduce.parse_args(['--workdir', 'w', '--seeds', '0,1', '--runs', 'uniform'] +
                                (['--reuse'] if flags.reuse else []) +
                                (['--gain', str(flags.gain)] if flags.gain else []))
    worker = reproduce.worker_command(full, 'q')
    assert worker[-3:] == ['--queue', 'q', '--runs_only']
    assert ('--reuse' in worker) == flags.reuse
    assert (worker[worker.index('--gain') + 1] == '10.0') if flags.gain else '--gain' not in worker
    assert '--out' not in worker and '--bench_out' not in worker
    # The worker parses its command line into the same options, and the same run configs.
    parsed = reproduce.parse_args(worker[3:])
    assert {**vars(parsed), 'queue': '', 'runs_only': False} == vars(full)
    assert grid.run_config(parsed, 'learnability_joint_f0.8', 0).selection == (
        grid.run_config(full, 'learnability_joint_f0.8', 0).selection)


def test_variant_runs_are_trained_by_name_only_and_unknown_names_are_refused(capsys):
  args = types.SimpleNamespace(workdir='w', steps=800, eval_every=100, reuse=False, gain=None,
                               benchmark='v2')
  hard = grid.run_config(args, 'hard_learner_joint_f0.9', 0)
  assert hard.selection.policy == 'hard_learner' and hard.selection.filter_ratio == 0.9
  assert _roles_needed(hard) == {'learner'}
  soft = grid.run_config(args, 'softmax_learnability_independent_f0.8', 0)
  assert soft.contrastive_loss == 'softmax' and soft.selection.method == 'independent'
  assert grid.run_config(args, 'uniform_softmax', 0).contrastive_loss == 'softmax'
  # The beta2 runs are the main sweep's learnability run but for beta2 and every step logged.
  main = grid.run_config(args, 'learnability_joint_f0.8', 0).to_dict()
  assert main['optax'].pop('b2') == main['actor_optax'].pop('b2') == 0.95
  assert main.pop('log_training_steps') == 50
  for b2 in (0.95, 0.999):
    run = grid.run_config(args, f'learnability_joint_f0.8_b2_{b2}', 0).to_dict()
    assert run['optax'].pop('b2') == run['actor_optax'].pop('b2') == b2
    assert run.pop('log_training_steps') == 1
    assert run == main
  # Not in the main sweep ('all' keeps its 2-hour budget), but accepted by name.
  assert not set(grid.variant_runs()) & set(reproduce.parse_args([]).runs)
  assert reproduce.parse_args(['--runs', 'uniform_softmax']).runs == ['uniform_softmax']
  assert reproduce.parse_args(['--runs', 'core']).runs == list(grid.CORE)
  with pytest.raises(SystemExit):
    reproduce.parse_args(['--runs', 'hard_learner_f0.9'])
  assert "unknown run names ['hard_learner_f0.9']" in capsys.readouterr().err


def test_the_sweep_prepares_the_references_then_times_every_run(tmp_path, monkeypatch):
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  trained = []
  monkeypatch.setattr(train, 'train_once', lambda config, workdir: trained.append(
      (workdir, config)) or {grid.METRIC: 0.1})
  monkeypatch.setattr(grid, 'prepare_references', lambda args: trained.append('references'))
  args = reproduce.parse_args(['--workdir', str(tmp_path), '--seeds', '0,1', '--runs',
                               'uniform,learnability_joint_f0.9', '--steps', '20'])
  reproduce.run_all(args)
  assert trained[0] == 'references'
  assert [w for w, _ in trained[1:]] == [grid.run_dir(str(tmp_path), name, seed) for seed in (0, 1)
                                         for name in ('uniform', 'learnability_joint_f0.9')]
  assert trained[-1][1].total_steps == 20 and trained[-1][1].seed == 1
  timing = sweep.wall_seconds(reproduce.timing_path(args))
  assert set(timing['parts']) == {'references', 'uniform_s0', 'uniform_s1',
                                  'learnability_joint_f0.9_s0', 'learnability_joint_f0.9_s1'}
