"""experiments/sweep.py: run or resume every run, skip the finished ones, parallel workers that
share one queue (longest first, atomic claims), worker command lines, wall-time records."""
import argparse
import json
import os
import sys
import textwrap

import pytest

from experiments import sweep
from experiments.bad_students import reproduce_compute_scaling as scaling
from experiments.bad_students import reproduce_policy_comparison as bad_students
from experiments.rela import reproduce_table1 as rela

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_train(calls):
  """A train_fn like train.train_once: writes the marker and returns the final row."""
  def train_fn(config, workdir):
    calls.append(config['name'])
    os.makedirs(workdir, exist_ok=True)
    final = {'step': 10, 'eval/test/accuracy': config['acc']}
    with open(os.path.join(workdir, sweep.MARKER), 'w') as f:
      json.dump(final, f)
    return final
  return train_fn


def _runs(tmp_path, n=4):
  return [sweep.Run(f'run{k}', str(tmp_path / f'run{k}'),
                    lambda k=k: {'name': f'run{k}', 'acc': k / 10}, cost=k % 3)
          for k in range(n)]


def _train_once_skipping_finished(calls):
  train = _fake_train(calls)
  def train_fn(config, workdir):
    return sweep.final_row(workdir) or train(config, workdir)
  return train_fn


def test_run_all_trains_every_run_in_order_and_skips_finished_ones(tmp_path):
  calls, reported = [], []
  train_fn = _train_once_skipping_finished(calls)
  finals = sweep.run_all(_runs(tmp_path), train_fn=train_fn,
                         report=lambda run, final, s: reported.append(run.name))
  assert calls == reported == ['run0', 'run1', 'run2', 'run3']  # Given order, no queue.
  assert finals['run2'] == {'step': 10, 'eval/test/accuracy': 0.2}
  assert sweep.is_finished(str(tmp_path / 'run3'))
  assert sweep.final_row(str(tmp_path / 'run3'))['eval/test/accuracy'] == 0.3
  assert sweep.final_row(str(tmp_path / 'missing')) is None
  # A rerun trains nothing again and returns the same finals.
  again = sweep.run_all(_runs(tmp_path), train_fn=train_fn, report=lambda *a: None)
  assert calls == ['run0', 'run1', 'run2', 'run3'] and again == finals
  with pytest.raises(ValueError, match='unique'):
    sweep.run_all(_runs(tmp_path) * 2, train_fn=train_fn)
  with pytest.raises(ValueError, match='worker'):
    sweep.run_all(_runs(tmp_path), parallel=2)


def test_default_training_is_train_once_with_its_finished_marker(tmp_path, monkeypatch):
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  trained = []

  def fake_train(config, workdir):
    trained.append(workdir)
    os.makedirs(workdir)  # As train() does.
    return {'step': 3, 'eval/test/accuracy': 0.5}, None

  monkeypatch.setattr(train, 'train', fake_train)
  run = sweep.Run('a', str(tmp_path / 'a'), {'unused': True})
  first = sweep.run_all([run], report=lambda *a: None)['a']
  assert first['step'] == 3 and 'run_wall_s' in first
  assert sweep.final_row(run.workdir) == first
  assert sweep.run_all([run], report=lambda *a: None)['a'] == first and len(trained) == 1


def test_queue_workers_claim_each_run_once_longest_first(tmp_path):
  runs = _runs(tmp_path, 6)
  assert [r.cost for r in sweep.longest_first(runs)] == [2, 2, 1, 1, 0, 0]
  assert [r.name for r in sweep.longest_first(runs)][:2] == ['run2', 'run5']  # Stable.
  queue = tmp_path / 'queue'
  queue.mkdir()
  # Both workers try every run, in turn first; each run goes to exactly one of them.
  for i, run in enumerate(sweep.longest_first(runs)):
    order = (0, 1) if i % 2 else (1, 0)
    wins = [k for k in order if sweep.claim(str(queue), run.name)]
    assert wins == [order[0]]
  calls = []
  assert sweep.run_all(runs, queue=str(queue), train_fn=_fake_train(calls)) == {}
  assert not calls  # All claimed already.
  # A new queue (a new sweep) may claim them again: a killed sweep's runs resume.
  fresh = tmp_path / 'fresh'
  fresh.mkdir()
  sweep.run_all(runs, queue=str(fresh), train_fn=_fake_train(calls), report=lambda *a: None)
  assert calls == ['run2', 'run5', 'run1', 'run4', 'run0', 'run3']


WORKER = textwrap.dedent('''
    import json, os, sys, time
    sys.path.insert(0, sys.argv[3])
    from experiments import sweep
    queue, out = sys.argv[1], sys.argv[2]

    def train_fn(config, workdir):
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(out, 'log'), 'a') as f:
        f.write(json.dumps([config['name'], os.getpid(),
                            sorted(os.sched_getaffinity(0))]) + '\\n')
      time.sleep(0.3)
      return {'step': 1}

    sweep.run_all([sweep.Run(f'r{k}', os.path.join(out, f'r{k}'), {'name': f'r{k}'}, cost=k)
                   for k in range(6)], queue=queue, train_fn=train_fn,
                  report=lambda *a: None)
''')


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs 2 CPUs')
@pytest.mark.filterwarnings('ignore:os.fork')  # The test process has JAX loaded (conftest).
def test_parallel_workers_share_one_queue_each_on_its_own_cpus(tmp_path):
  script = tmp_path / 'worker.py'
  script.write_text(WORKER)
  out = tmp_path / 'out'
  out.mkdir()

  def worker(queue):
    return [sys.executable, str(script), queue, str(out), ROOT]

  assert sweep.run_all([], parallel=2, worker=worker, queue_root=str(tmp_path / 'q')) == {}
  log = [json.loads(line) for line in (out / 'log').read_text().splitlines()]
  assert sorted(name for name, _, _ in log) == [f'r{k}' for k in range(6)]  # Each once.
  cpus = {pid: set(mine) for _, pid, mine in log}  # Two workers, on disjoint shares of the CPUs.
  assert len(cpus) == 2 and set.union(*cpus.values()) == os.sched_getaffinity(0)
  assert not set.intersection(*cpus.values())
  assert len(os.listdir(tmp_path / 'q')) == 1  # One fresh queue directory per invocation.
  # A worker that fails stops the sweep with a clear message.
  with pytest.raises(SystemExit, match=r'exited with \[3, 3\]: rerun'):
    sweep.run_parallel(lambda q: [sys.executable, '-c', 'raise SystemExit(3)'], 2,
                       str(tmp_path / 'q'))
  with pytest.raises(SystemExit, match='exceeds'):
    sweep.run_parallel(worker, 10_000, str(tmp_path / 'q'))


def _parser():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', default='w')
  parser.add_argument('--out', default='results')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--ratio', type=float, default=None)
  parser.add_argument('--reuse', action='store_true')
  sweep.add_options(parser)
  return parser


def _parse(argv):
  args = _parser().parse_args(argv)
  args.seeds = [int(s) for s in args.seeds.split(',')]
  return args


def test_worker_command_carries_every_run_shaping_option_and_no_sweep_option():
  args = _parse(['--workdir', 'x', '--out', 'o', '--seeds', '3,4', '--steps', '9', '--ratio',
                 '0.5', '--reuse', '--parallel', '2', '--analyze_only'])
  cmd = sweep.worker_command('some.module', _parser(), args, 'Q', exclude=('out',))
  assert cmd[:3] == [sys.executable, '-m', 'some.module'] and cmd[-3:] == ['--queue', 'Q',
                                                                            '--runs_only']
  assert '--out' not in cmd and '--parallel' not in cmd and '--analyze_only' not in cmd
  parsed = _parse(cmd[3:])
  for key in ('workdir', 'seeds', 'steps', 'ratio', 'reuse'):
    assert getattr(parsed, key) == getattr(args, key)
  assert parsed.queue == 'Q' and parsed.runs_only and parsed.parallel == 1
  # Defaults (None, a store_true left off) parse back as defaults.
  plain = _parse([])
  assert sweep.forward_options(_parser(), plain) == [
      '--workdir', 'w', '--out', 'results', '--seeds', '0,1,2', '--steps', '800']


def test_timed_intervals_and_their_wall_time(tmp_path):
  path = str(tmp_path / 'timing.jsonl')
  with sweep.timed(path, 'a'):
    pass
  with sweep.timed(None, 'not recorded'):
    pass
  assert [json.loads(line)['part'] for line in open(path)] == ['a']
  with open(path, 'w') as f:
    for part, start, end in (('a', 0, 10), ('b', 5, 20), ('a', 30, 31), ('c', 30.5, 30.7)):
      f.write(json.dumps({'part': part, 'start': start, 'end': end}) + '\n')
  got = sweep.wall_seconds(path)
  assert got['total'] == pytest.approx(21.0)  # The union: [0, 20] and [30, 31].
  assert got['parts'] == {'a': 11.0, 'b': 15.0, 'c': pytest.approx(0.2)}


# ----- The reproducers on the sweep -----

@pytest.fixture
def fake_train_once(monkeypatch):
  """big_vision_style.train.train_once recording (workdir, config) instead of training."""
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  trained = []

  def train_once(config, workdir):
    trained.append((workdir, config))
    return {'step': 1, 'eval/test/accuracy': 0.5, 'eval/probe/accuracy': 0.5}

  monkeypatch.setattr(train, 'train_once', train_once)
  return trained


def test_phases_are_built_in_turn_and_a_worker_trains_only_its_phase(tmp_path, monkeypatch,
                                                                     fake_train_once):
  built = []

  def phase(name):
    def runs(args):  # Built only when the phases before it are trained.
      built.append((name, args.phase, len(fake_train_once)))
      return [sweep.Run(f'{name}{i}', str(tmp_path / name / str(i)), {'i': i}) for i in (0, 1)]
    return runs

  phases = {'tune': phase('tune'), 'main': phase('main')}
  parser = _parser()
  parser.add_argument('--phase', default='all')
  args = argparse.Namespace(workdir=str(tmp_path), phase='all', queue='', parallel=1)
  sweep.run_phases(args, phases, module='m', parser=parser)
  assert built == [('tune', 'tune', 0), ('main', 'main', 2)]
  assert [os.path.relpath(w, tmp_path) for w, _ in fake_train_once] == [
      'tune/0', 'tune/1', 'main/0', 'main/1']
  assert args.phase == 'all'  # The caller's namespace is not changed.
  # A --parallel parent starts workers of each phase in turn, each told its --phase.
  commands = []
  monkeypatch.setattr(sweep, 'run_parallel',
                      lambda worker, n, root: commands.append((n, worker('Q'))))
  parsed = parser.parse_args(['--workdir', str(tmp_path), '--phase', 'main', '--parallel', '2'])
  sweep.run_phases(parsed, phases, module='m', parser=parser)
  assert [(n, c[c.index('--phase') + 1], c[c.index('--queue') + 1]) for n, c in commands] == [
      (2, 'main', 'Q')]
  # A worker trains its own phase's runs only.
  queue = tmp_path / 'queue'
  queue.mkdir()
  del fake_train_once[:]
  sweep.run_phases(argparse.Namespace(workdir=str(tmp_path / 'w2'), phase='tune',
                                      queue=str(queue), parallel=1), phases, module='m',
                   parser=parser)
  assert sorted(os.path.basename(os.path.dirname(w)) for w, _ in fake_train_once) == ['tune'] * 2


def test_bad_students_sweep_trains_the_reference_then_every_run_seeds_outermost(
    tmp_path, fake_train_once):
  # As big_vision_style/tools/demo.py calls it: a namespace without the sweep's options.
  args = argparse.Namespace(workdir=str(tmp_path), seeds=[0, 1], noise=[0.0, 0.3],
                            policies=['uniform', 'rho'], steps=300, eval_every=50)
  bad_students.run_all(args)
  workdirs = [os.path.relpath(w, tmp_path) for w, _ in fake_train_once]
  assert workdirs == ['reference_holdout'] + [
      f'noise{n}/{p}_s{s}' for s in (0, 1) for n in ('0', '0.3') for p in ('uniform', 'rho')]
  config = fake_train_once[-1][1]
  assert (config.seed, config.total_steps, config.evals.test.log_steps) == (1, 300, 50)
  assert config.selection.policy == 'rho' and config.data.label_noise == 0.3
  assert config.selection.reference_workdir == str(tmp_path / 'reference_holdout')
  # A --parallel worker gets every option but where the results go.
  parsed = bad_students.parse_args(['--workdir', 'w', '--noise', '0.3', '--policies',
                                    'uniform,rho', '--out', 'o'])
  worker = sweep.worker_command(bad_students.MODULE, bad_students.build_parser(), parsed, 'q',
                                exclude=('out',))
  assert vars(bad_students.parse_args(worker[3:])) == {
      **vars(parsed), 'out': 'results/bad_students', 'queue': 'q', 'runs_only': True}


def test_rela_sweep_trains_every_run_longest_budget_first_in_a_queue(tmp_path, monkeypatch,
                                                                      fake_train_once):
  monkeypatch.setattr(rela, 'prepare_priors', lambda args: pytest.fail('a worker prepares'))
  queue = tmp_path / 'queue'
  queue.mkdir()
  args = rela.parse_args(['--workdir', str(tmp_path), '--seeds', '0', '--priors',
                          'none,holdout', '--budgets', '0.1,1.0', '--objectives', 'byol',
                          '--queue', str(queue)])
  rela.run_all(args)
  assert [os.path.relpath(w, tmp_path) for w, _ in fake_train_once] == [
      'byol/none/r1_s0', 'byol/none/r0.1_s0', 'byol/holdout/r0.1_s0']
  assert fake_train_once[-1][1].rela.targets.startswith(str(tmp_path))
  assert sorted(os.listdir(queue)) == ['byol_holdout_r0.1_s0', 'byol_none_r0.1_s0',
                                       'byol_none_r1_s0']


def test_bad_students_strong_reference_option_names_its_model_and_workdir(tmp_path):
  args = bad_students.parse_args(['--workdir', str(tmp_path), '--reference', 'B_30ep',
                                  '--seeds', '3', '--noise', '0.3', '--policies',
                                  'uniform,learnability'])
  config = bad_students.learner_runs(args)[-1].build_config()
  assert config.selection.reference_workdir == str(tmp_path / 'reference_B_30ep')
  assert dict(config.reference_model) == dict(bad_students.REFERENCES['B_30ep'][2])
  assert bad_students.strong_reference_config().total_epochs == 30


def test_compute_scaling_tunes_on_its_own_seed_then_trains_at_each_learners_best_rate(
    tmp_path, monkeypatch):
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  best = {'w32d2': 0.003, 'w96d4': 0.001}
  trained = []

  def train_once(config, workdir):  # Held-out accuracy highest at each learner's `best`.
    trained.append((os.path.relpath(workdir, tmp_path), config))
    learner = 'w32d2' if config.model.get('width') == 32 else 'w96d4'  # (Or the reference.)
    row = {'step': 1, 'eval/test/accuracy': 0.5,
           'eval/val/accuracy': 0.9 - abs(config.optax.lr - best[learner])}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, sweep.MARKER), 'w') as f:
      json.dump(row, f)
    return row

  monkeypatch.setattr(train, 'train_once', train_once)
  monkeypatch.setattr(sys, 'argv', ['x'])
  argv = ['--workdir', str(tmp_path), '--out', str(tmp_path / 'out'), '--learners',
          'w32d2,w96d4', '--seeds', '0,1', '--lrs', '0.001,0.003', '--steps', '40',
          '--eval_every', '20', '--runs_only']
  scaling.main(argv)
  names = [w for w, _ in trained]
  assert names[0] == 'reference_holdout'
  assert names[1:5] == ['tune/w32d2_lr0.001_s10', 'tune/w32d2_lr0.003_s10',
                        'tune/w96d4_lr0.001_s10', 'tune/w96d4_lr0.003_s10']
  tune = dict(trained)['tune/w32d2_lr0.001_s10']
  assert tune.seed == 10 and tune.evals.val.split == 'holdout'  # Never the test split.
  main = {w: c for w, c in trained[5:]}
  assert sorted(main) == sorted(f'{l}/{p}_s{s}' for l in best for p in ('uniform',
                                                                           'learnability')
                                for s in (0, 1))
  for workdir, config in main.items():
    learner = workdir.split('/')[0]
    assert config.optax.lr == best[learner] and 'val' not in config.evals
    assert config.seed in (0, 1) and config.total_steps == 40


def _fake_run(workdir, accs, flops_per_step):
  """A finished run's metrics: test accuracy `accs` every 50 steps, FLOPs linear in steps."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for k, acc in enumerate(accs):
      step = 50 * (k + 1)
      f.write(json.dumps({'step': step, bad_students.ACC: acc,
                          **{key: flops_per_step * step for key in bad_students.LEVELS.values()}})
              + '\n')


def test_actor_size_and_rho_vs_classact_train_their_references_first_and_share_runs(
    tmp_path, monkeypatch, fake_train_once):
  from experiments.bad_students import reproduce_actor_size as actor_size
  from experiments.bad_students import reproduce_rho_vs_classact as rho
  monkeypatch.setattr(rho, 'prepare_score_cache', lambda args: prepared.append(args.noise))
  prepared = []
  common = ['--workdir', str(tmp_path), '--seeds', '3', '--steps', '40', '--eval_every', '20']
  actor_size.train_runs(actor_size.parse_args(common + ['--actors', 'S,Ti']))
  rho.train_runs(sweep.parse(rho.build_parser(), common))
  trained = [(os.path.relpath(w, tmp_path), c) for w, c in fake_train_once]
  names = [w for w, _ in trained]
  assert names[:2] == ['reference_holdout_S', 'reference_holdout']
  assert names[2:7] == ['noise0.3/uniform_s3', 'noise0.3/learnability_S_s3',
                        'noise0.3/easy_reference_S_s3', 'noise0.3/learnability_Ti_s3',
                        'noise0.3/easy_reference_Ti_s3']
  # RHO vs ClassAct: its references, the score cache, then its arms; ClassAct-HO is the actor
  # sweep's learnability_Ti (one workdir: a real sweep skips it, finished).
  assert names[7:9] == ['reference_holdout', 'reference_train_noise0.3'] and prepared == [0.3]
  assert names[9:] == ['noise0.3/uniform_s3', 'noise0.3/learnability_Ti_s3',
                       'noise0.3/ClassAct-in-domain_s3', 'noise0.3/ClassAct-Online_s3',
                       'noise0.3/RHO-HO_s3', 'noise0.3/ClassAct-HO-cached_s3']
  configs = dict(trained)
  assert configs['reference_holdout_S'].model.width == 64  # The reference has the actor's size.
  in_domain = configs['reference_train_noise0.3']
  assert (in_domain.input.split, in_domain.data.label_noise) == ('train', 0.3)
  run = configs['noise0.3/learnability_S_s3']
  assert run.selection.reference_workdir == str(tmp_path / 'reference_holdout_S')
  assert dict(run.actor_model) == dict(run.reference_model) and run.actor_model.width == 64
  assert (run.seed, run.total_steps, run.evals.test.log_steps, run.data.label_noise) == (
      3, 40, 20, 0.3)
  assert (configs['noise0.3/ClassAct-in-domain_s3'].selection.reference_workdir ==
          str(tmp_path / 'reference_train_noise0.3'))
  assert configs['noise0.3/ClassAct-Online_s3'].selection.reference == 'online'
  assert configs['noise0.3/RHO-HO_s3'].selection.policy == 'rho'
  cached = configs['noise0.3/ClassAct-HO-cached_s3'].selection
  assert cached.reference == 'cached' and cached.score_cache == rho.score_cache_path(
      sweep.parse(rho.build_parser(), common))


def test_arms_compare_pairs_every_arm_with_uniform_by_seed(tmp_path):
  from experiments.bad_students import arms
  from experiments.bad_students import reproduce_actor_size as actor_size
  args = actor_size.parse_args(['--workdir', str(tmp_path), '--seeds', '3,4', '--steps', '200',
                                '--actors', 'S', '--policies', 'learnability'])
  built = actor_size.build_arms(args)
  uniform = {3: [0.5, 0.6, 0.7, 0.8], 4: [0.5, 0.6, 0.7, 0.76]}
  selected = {3: [0.6, 0.8, 0.82, 0.84], 4: [0.5, 0.78, 0.7, 0.8]}  # 1.5x FLOPs per step.
  for seed in (3, 4):
    _fake_run(arms.run_dir(args, built[0], seed), uniform[seed], 1e9)
    _fake_run(arms.run_dir(args, built[1], seed), selected[seed], 1.5e9)
  result = arms.compare(args, built)
  s = result['summary']
  assert s['target_accuracy'] == pytest.approx(0.78)
  entry = s['arms']['learnability_S']
  assert entry['flops_per_step_over_uniform'] == pytest.approx(1.5)
  assert entry['final_accuracy_minus_uniform']['mean'] == pytest.approx(0.04)
  assert entry['final_accuracy_minus_uniform']['seeds'] == ['3', '4']
  # Seed-mean curves: uniform first reaches 0.78 at step 200, learnability at 100 (0.79).
  assert entry['steps_to_target_ratio'] == pytest.approx(0.5)
  assert entry['flops_to_target_ratio'] == pytest.approx(0.75)
  per_seed = entry['per_seed_ratios']['per_seed']
  assert per_seed['3']['steps_to_target_ratio'] == pytest.approx(0.5)  # 0.8: 100 vs 200.
  assert per_seed['4']['steps_to_target_ratio'] == pytest.approx(0.5)  # 0.76: 100 vs 200.
  actor_size.analyze(argparse.Namespace(**{**vars(args), 'out': str(tmp_path / 'out')}))
  assert os.path.exists(tmp_path / 'out' / 'actor_size.png')
  assert 'learnability' in (tmp_path / 'out' / 'table.md').read_text()


def test_rela_strong_baseline_tunes_on_the_held_out_split_then_trains_the_best_longer(
    tmp_path, monkeypatch):
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  from experiments.rela import reproduce_strong_baseline as strong
  monkeypatch.setattr(strong, 'floors', lambda args: {})
  trained = []

  def train_once(config, workdir):  # Held-out accuracy: best at lr 2e-3, mild views, 12 epochs.
    trained.append((os.path.relpath(workdir, tmp_path), config))
    mild = 'views' in config.byol
    row = {'step': 1, 'eval/val/accuracy': 0.8 - abs(config.optax.lr - 0.002) + 0.01 * mild +
           (0.02 if config.total_epochs == 12 else 0.0), 'eval/probe/accuracy': 0.5}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, sweep.MARKER), 'w') as f:
      json.dump(row, f)
    return row

  monkeypatch.setattr(train, 'train_once', train_once)
  strong.main(['--workdir', str(tmp_path), '--seeds', '0,1', '--lrs', '0.001,0.002',
               '--long_epochs', '12,24', '--runs_only'])
  names = [w for w, _ in trained]
  assert names == ['tune/lr0.001_byol_e6_s10', 'tune/lr0.001_mild_e6_s10',
                   'tune/lr0.002_byol_e6_s10', 'tune/lr0.002_mild_e6_s10',
                   'tune/lr0.002_mild_e12_s10', 'tune/lr0.002_mild_e24_s10',
                   'tune/lr0.004_mild_e6_s10',  # 2e-3 was the grid's edge: 2x it is tried.
                   'strong/s0', 'strong/s1']
  configs = dict(trained)
  tune = configs['tune/lr0.001_byol_e6_s10']
  assert tune.seed == 10 and tune.evals.val.split == 'holdout' and 'probe' not in tune.evals
  final = configs['strong/s1']
  assert (final.seed, final.optax.lr, final.total_epochs) == (1, 0.002, 12)
  assert final.byol.views.crop_scale == (0.5, 1.0)  # ReLA's mild views won.
  assert final.evals.probe.split == 'test' and 'val' not in final.evals
  assert {(e.split, e.l2) for k, e in final.evals.items() if k != 'probe'} == {
      (split, l2) for split in ('holdout', 'test') for l2 in strong.PROBE_L2}
  # The validated probe: per seed, the test accuracy at the best held-out L2 weight.
  assert strong.validated({'0.0001': {'holdout': {'0': 0.7, '1': 0.9}, 'test': {'0': 1, '1': 2}},
                           '0.01': {'holdout': {'0': 0.8, '1': 0.5}, 'test': {'0': 3, '1': 4}}}
                          ) == {'0': 3, '1': 2}
