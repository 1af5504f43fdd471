r"""Run or resume a list of training runs: the sweep loop of every reproducer.

A run is a name, a workdir and a config (`Run`). `run_all` trains every run that has not
finished and skips those that have: `big_vision_style.train.train_once` writes
`<workdir>/final.json` (`MARKER`) atomically when, and only when, a run reaches its end, so
rerunning an interrupted sweep skips the finished runs and resumes the others from their last
checkpoint. A preempted run (SIGTERM) stops the sweep without a marker.

`parallel=n` starts n worker processes instead, each pinned to its share of the CPUs, that take
the runs from one queue, longest first (`Run.cost`), which keeps their finishing times close:
a sweep's wall time is its last worker's. A worker claims a run by creating a file named after
it in the queue directory (O_CREAT | O_EXCL: exactly one worker wins). Each invocation makes a
fresh queue directory, so the runs a killed sweep had claimed are claimable again, and resume.
A worker is the reproducer's own command line with `--queue DIR --runs_only` added
(`forward_options` passes on every option that shapes a run; `add_options` adds the sweep's).

Small models use two cores poorly within one XLA process: two single-core workers train more
runs per hour than one process using both.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

MARKER = 'final.json'  # big_vision_style.train.FINAL_MARKER (not imported: it loads JAX).
# Options of add_options: how this invocation sweeps, not what a run is.
SWEEP_OPTIONS = ('help', 'analyze_only', 'parallel', 'queue', 'runs_only')


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep. `config`: a ConfigDict, or a function of no arguments building one
  (called only when the run is trained). `cost`: relative; orders a queue, longest first."""
  name: str
  workdir: str
  config: Any
  cost: float = 1.0

  def build_config(self):
    return self.config() if callable(self.config) else self.config


def final_row(workdir: str) -> dict | None:
  """The final metrics row of a finished run (its marker), None if it has not finished."""
  path = os.path.join(workdir, MARKER)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def is_finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, MARKER))


def train_once(config, workdir: str, train_fn: Callable | None = None) -> dict:
  """Trains or resumes the run unless it has finished; returns its final row.
  `train_fn(config, workdir)` defaults to big_vision_style.train.train_once (imported here:
  it loads JAX, which a sweep's parent process need not)."""
  if train_fn is None:
    from big_vision_style import train  # pylint: disable=g-import-not-at-top
    train_fn = train.train_once
  return train_fn(config, workdir)


def longest_first(runs: Sequence[Run]) -> list[Run]:
  """`runs` by decreasing cost (stable: equal costs keep their order)."""
  return sorted(runs, key=lambda run: -run.cost)


def claim(queue: str, name: str) -> bool:
  """True for exactly one of the workers sharing `queue`: creating a file is atomic."""
  try:
    os.close(os.open(os.path.join(queue, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    return True
  except FileExistsError:
    return False


@contextlib.contextmanager
def timed(path: str | None, part: str):
  """Appends `part`'s wall-clock interval to the record at `path` (None: records nothing);
  parallel workers append to the same record."""
  start = time.time()
  yield
  if path:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'a') as f:
      f.write(json.dumps({'part': part, 'start': start, 'end': time.time()}) + '\n')


def wall_seconds(path: str) -> dict:
  """Wall time of the recorded intervals: their union (parallel workers overlap), and per part."""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  total, end = 0.0, float('-inf')
  for r in sorted(rows, key=lambda r: r['start']):
    total += max(0.0, r['end'] - max(r['start'], end))
    end = max(end, r['end'])
  parts = {}
  for r in rows:
    parts[r['part']] = parts.get(r['part'], 0.0) + r['end'] - r['start']
  return {'total': total, 'parts': parts}


def _log_run(run: Run, final: dict, seconds: float):
  logging.info('%s done (%.0fs): %s', run.name, seconds, {
      k: v for k, v in final.items() if k.startswith('eval/')})


def run_phases(args: argparse.Namespace, phases: dict[str, Callable[[argparse.Namespace], list]],
               *, module: str, parser: argparse.ArgumentParser, exclude: Sequence[str] = ('out',)):
  """Trains the runs of each phase in turn (`phases`: name -> args -> runs; a phase's runs may
  depend on an earlier phase's results, e.g. the lr its tuning chose, so a phase is built only
  once the phases before it are done). `args.phase`: 'all' or one phase's name. With --parallel
  each phase gets its own workers and queue: a worker is the reproducer's command line (`module`,
  `parser`) with that --phase; a worker (`args.queue`) trains the runs of its --phase."""
  timing = os.path.join(args.workdir, 'timing.jsonl')
  if args.queue:
    run_all(phases[args.phase](args), queue=args.queue, timing=timing)
    return
  for phase, runs in phases.items():
    if args.phase not in ('all', phase):
      continue
    mine = copy.copy(args)
    mine.phase = phase
    run_all(runs(mine), parallel=args.parallel,
            worker=lambda q, mine=mine: worker_command(module, parser, mine, q, exclude=exclude),
            queue_root=os.path.join(args.workdir, 'queue'), timing=timing)


def run_all(runs: Iterable[Run], *, parallel: int = 1, queue: str = '',
            worker: Callable[[str], list[str]] | None = None, queue_root: str = '',
            timing: str | None = None, report: Callable[[Run, dict, float], None] | None = None,
            train_fn: Callable | None = None) -> dict[str, dict]:
  """Trains or resumes every run of `runs`; returns name -> final row of those this process
  went through (all of them, or with `queue` those it claimed).

  parallel > 1: starts that many `worker(queue_dir)` processes on a fresh queue under
    `queue_root` and waits for them (returns {}).
  queue: this process is one of the workers: it tries every run, longest first, and trains
    those it claims.
  timing: a record (`timed`) of every run's interval. report(run, final, seconds): called after
    each run (default: logs its evaluations).
  """
  runs = list(runs)
  names = [run.name for run in runs]
  if len(set(names)) != len(names):
    raise ValueError(f'Run names must be unique: {names}.')
  if parallel > 1:
    if worker is None or not queue_root:
      raise ValueError('parallel > 1 needs worker (a command line per queue) and queue_root.')
    run_parallel(worker, parallel, queue_root)
    return {}
  finals = {}
  for run in (longest_first(runs) if queue else runs):
    if queue and not claim(queue, run.name):
      continue
    t = time.time()
    with timed(timing, run.name):
      finals[run.name] = train_once(run.build_config(), run.workdir, train_fn)
    (report or _log_run)(run, finals[run.name], time.time() - t)
  return finals


def run_parallel(worker: Callable[[str], list[str]], parallel: int, queue_root: str):
  """`parallel` processes `worker(queue)`, each pinned to its share of this process's CPUs,
  sharing one fresh queue directory under `queue_root`."""
  cpus = sorted(os.sched_getaffinity(0))
  if parallel > len(cpus):
    raise SystemExit(f'--parallel {parallel} exceeds the {len(cpus)} CPUs available.')
  # A fresh queue per invocation: runs a killed sweep claimed are claimable again (and resume).
  queue = os.path.join(queue_root, str(time.time_ns()))
  os.makedirs(queue)
  procs = []
  for k in range(parallel):
    mine = set(cpus[k::parallel])
    procs.append(subprocess.Popen(worker(queue),
                                  preexec_fn=lambda mine=mine: os.sched_setaffinity(0, mine)))
  codes = [p.wait() for p in procs]
  if any(codes):
    raise SystemExit(f'Worker processes exited with {codes}: rerun the same command, finished '
                     'runs are skipped and the others resume.')


def drive(args: argparse.Namespace, train_runs: Callable[[argparse.Namespace], None],
          analyze: Callable[[argparse.Namespace], object]):
  """A reproducer's main: script logging, then `train_runs(args)` unless --analyze_only and
  `analyze(args)` unless --runs_only (a --parallel worker's)."""
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  train.setup_script_logging()
  if not args.analyze_only:
    train_runs(args)
  if not args.runs_only:
    analyze(args)


def make_parser(doc: str, *, workdir: str, out: str) -> argparse.ArgumentParser:
  """A reproducer's command line: --workdir (its runs), --out (its results), --seeds (comma-
  separated; `parse` splits them) and the sweep's own options (`add_options`). Its description
  is the first line of `doc`."""
  parser = argparse.ArgumentParser(description=doc.split('\n')[0])
  parser.add_argument('--workdir', default=workdir)
  parser.add_argument('--out', default=out)
  parser.add_argument('--seeds', default='0,1,2')
  add_options(parser)
  return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None):
  """`parser`'s arguments, with --seeds as a list of ints."""
  args = parser.parse_args(argv)
  args.seeds = [int(s) for s in args.seeds.split(',')]
  return args


def add_options(parser: argparse.ArgumentParser):
  """The sweep options every reproducer takes: --analyze_only, --parallel, --queue, --runs_only."""
  parser.add_argument('--analyze_only', action='store_true',
                      help='Redo the analysis from existing workdirs; train nothing.')
  parser.add_argument('--parallel', type=int, default=1,
                      help='Processes sharing the runs, each pinned to its share of the CPUs.')
  parser.add_argument('--queue', default='', help='A directory of claims shared by the '
                      'workers of one --parallel sweep (set by --parallel).')
  parser.add_argument('--runs_only', action='store_true', help='Train, skip the analysis.')


def forward_options(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    exclude: Sequence[str] = ()) -> list[str]:
  """The command-line options that give `args` back when parsed by `parser`: every option of
  the parser but the sweep's own (SWEEP_OPTIONS) and `exclude` (e.g. where results go). Lists
  (options a reproducer splits on commas) are joined with commas; None is left out (default)."""
  argv = []
  for action in parser._actions:  # pylint: disable=protected-access
    if not action.option_strings or action.dest in SWEEP_OPTIONS or action.dest in exclude:
      continue
    value = getattr(args, action.dest)
    flag = action.option_strings[0]
    if isinstance(action, argparse._StoreTrueAction):  # pylint: disable=protected-access
      argv += [flag] if value else []
    elif value is not None:
      argv += [flag, ','.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
  return argv


def worker_command(module: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                   queue: str, exclude: Sequence[str] = ()) -> list[str]:
  """The command line of one worker of `python -m module`: its run-shaping options, the queue,
  and --runs_only (the parent analyses once every worker is done)."""
  return [sys.executable, '-m', module, *forward_options(parser, args, exclude),
          '--queue', queue, '--runs_only']
