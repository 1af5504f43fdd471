r"""Chaos run (not a test): kill a small training run K times, damage its newest checkpoint once,
and check it still ends exactly like an uninterrupted run.

  python -m big_vision_style.tools.chaos --name baseline --kills 30 \
      --config experiments/baseline/fashion_mnist.py:runlocal \
      --set total_steps=50 --set ckpt_steps=5 --set evals.test.log_steps=10 \
      --base /tmp/chaos --out results/reliability/baseline.json
  # A selection config, with its frozen reference trained first (skipped if done):
  python -m big_vision_style.tools.chaos --name bad_students --kills 30 \
      --prereq experiments/bad_students/reference.py:runlocal=/tmp/chaos/bs_reference \
      --config experiments/bad_students/policy_comparison.py:runlocal,reference_workdir=/tmp/chaos/bs_reference ...

What it does, each step a subprocess `python -m big_vision_style.train` on one workdir:
1. the uninterrupted run (its own workdir), whose final learner parameters and metrics rows
   are the expected result;
2. the chaos run: start the trainer, wait a random time, send SIGKILL, SIGTERM or SIGINT
   (drawn at random), restart; K times. Kills are aimed at three moments: while training
   (steps and evaluations: a random time after the first new metrics row), while a checkpoint
   is written (orbax's temporary directory is present), and during start-up (restore,
   compilation). Once, halfway, the newest checkpoint is damaged (an array file truncated)
   before the restart; the trainer must report it and fall back to the previous one. After the
   K kills the run is left to finish;
3. the check: the learner's final parameters equal the uninterrupted run's bit for bit, and
   the metrics rows are the same steps, none missing or duplicated, with equal values (wall
   time aside).

A run is lost when the trainer exits with anything but 0 or EXIT_PREEMPTED (75) when it was
not killed, or when the check fails. The script is resumable: its progress is in
`<base>/<name>/chaos.json`, so rerunning the same command continues where it stopped. The
summary (JSON) goes to --out. Set JAX_COMPILATION_CACHE_DIR so restarts do not recompile.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
MOMENTS = ('training', 'checkpoint_write', 'startup')


def _train_cmd(config, workdir, sets):
  return [sys.executable, '-m', 'big_vision_style.train', '--config', config, '--workdir',
          workdir] + [f'--config.{s}' for s in sets]


def _rows(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  out = []
  for line in open(path).read().splitlines():
    try:
      out.append(json.loads(line))
    except ValueError:
      pass  # A torn line: the trainer repairs it on resume.
  return out


def _tmp_dirs(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  return {n for n in os.listdir(directory) if 'tmp' in n} if os.path.isdir(directory) else set()


def _run_to_end(cmd, log, timeout=3600):
  with open(log, 'a') as f:
    return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode


def _corrupt_newest(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  steps = sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(
      directory) else []
  if len(steps) < 2:
    return None  # Keep a valid one to fall back to.
  state = os.path.join(directory, str(steps[-1]), 'state')
  files = [os.path.join(r, f) for r, _, fs in os.walk(state) for f in fs]
  victim = max(files, key=os.path.getsize)
  with open(victim, 'r+b') as f:
    f.truncate(os.path.getsize(victim) // 2)
  return {'step': steps[-1], 'file': victim}


def _one_kill(cmd, workdir, log, rng, moment, sig, startup_s):
  """Starts the trainer, kills it at `moment` with `sig`; returns what happened."""
  rows_before = len(_rows(workdir))
  stale = _tmp_dirs(workdir)  # Left by an earlier kill mid-save: not this run's writes.
  writing = lambda: bool(_tmp_dirs(workdir) - stale)
  with open(log, 'a') as f:
    f.write(f'\n===== start; will send {sig.name} during {moment} =====\n')
    f.flush()
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
  t0 = time.time()
  hit = None
  deadline = t0 + 600
  if moment == 'startup':
    time.sleep(rng.uniform(0.3, max(startup_s, 1.0)))
    hit = 'startup' if len(_rows(workdir)) <= rows_before else 'training'
  else:
    while proc.poll() is None and time.time() < deadline:  # Training under way.
      if len(_rows(workdir)) > rows_before:
        break
      time.sleep(0.02)
    if moment == 'checkpoint_write':
      while proc.poll() is None and time.time() < deadline and not writing():
        time.sleep(0.002)
      hit = 'checkpoint_write' if writing() else 'training'
    else:
      time.sleep(rng.uniform(0.0, 1.0))
      hit = 'checkpoint_write' if writing() else 'training'
  if proc.poll() is not None:  # Finished (or failed) before the signal.
    return {'moment': moment, 'hit': None, 'signal': sig.name, 'rc': proc.returncode,
            'sent': False}
  proc.send_signal(sig)
  try:
    rc = proc.wait(timeout=300)
  except subprocess.TimeoutExpired:
    proc.kill()
    rc = proc.wait()
  return {'moment': moment, 'hit': hit, 'signal': sig.name, 'rc': rc, 'sent': True,
          'after_s': round(time.time() - t0, 2)}


def _final_params(workdir):
  from big_vision_style import checkpointing  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  params, meta = checkpointing.load_trained_params(workdir)
  return jax.device_get(params), meta


def _compare(expected_dir, chaos_dir):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  (pa, ma), (pb, mb) = _final_params(expected_dir), _final_params(chaos_dir)
  leaves_a, leaves_b = jax.tree.leaves(pa), jax.tree.leaves(pb)
  same_params = (jax.tree.structure(pa) == jax.tree.structure(pb) and all(
      np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(leaves_a, leaves_b)))
  ra, rb = _rows(expected_dir), _rows(chaos_dir)
  steps_a, steps_b = [r['step'] for r in ra], [r['step'] for r in rb]
  strip = lambda r: {k: v for k, v in r.items() if k != 'wall_s'}
  differing = sorted({k for a, b in zip(ra, rb) for k in set(a) | set(b)
                      if k != 'wall_s' and a.get(k) != b.get(k)})
  return {'params_bit_identical': bool(same_params), 'final_step': mb['step'],
          'expected_final_step': ma['step'],
          'rows_expected': len(steps_a), 'rows_got': len(steps_b),
          'missing_steps': sorted(set(steps_a) - set(steps_b)),
          'duplicated_steps': sorted({s for s in steps_b if steps_b.count(s) > 1}),
          'extra_steps': sorted(set(steps_b) - set(steps_a)),
          'rows_equal': [strip(r) for r in ra] == [strip(r) for r in rb],
          'differing_metrics': differing}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--name', required=True)
  parser.add_argument('--config', required=True)
  parser.add_argument('--set', action='append', default=[], help='key=value config override')
  parser.add_argument('--prereq', action='append', default=[],
                      help='CONFIG=WORKDIR: train this first (skipped when finished)')
  parser.add_argument('--kills', type=int, default=30)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--base', default='/tmp/chaos')
  parser.add_argument('--out', default=None)
  args = parser.parse_args()
  base = os.path.join(args.base, args.name)
  os.makedirs(base, exist_ok=True)
  log = os.path.join(base, 'train.log')
  state_path = os.path.join(base, 'chaos.json')
  state = json.load(open(state_path)) if os.path.exists(state_path) else {
      'name': args.name, 'config': args.config, 'sets': args.set, 'kills': [],
      'corruptions': [], 'unexpected_exits': [], 'prereqs_done': [], 'expected_done': False}

  def persist():
    with open(state_path + '.tmp', 'w') as f:
      json.dump(state, f, indent=1)
    os.replace(state_path + '.tmp', state_path)

  for prereq in args.prereq:
    config, _, workdir = prereq.rpartition('=')
    if prereq not in state['prereqs_done']:
      rc = _run_to_end(_train_cmd(config, workdir, []), log)
      if rc != 0:
        raise SystemExit(f'Prerequisite {config} failed (rc {rc}); see {log}.')
      state['prereqs_done'].append(prereq)
      persist()
  expected_dir = os.path.join(base, 'uninterrupted')
  if not state['expected_done']:
    shutil.rmtree(expected_dir, ignore_errors=True)
    t0 = time.time()
    rc = _run_to_end(_train_cmd(args.config, expected_dir, args.set), log)
    if rc != 0:
      raise SystemExit(f'The uninterrupted run failed (rc {rc}); see {log}.')
    state['expected_done'], state['uninterrupted_wall_s'] = True, time.time() - t0
    persist()
  state.setdefault('rounds', [])
  rng = random.Random(args.seed * 1000 + len(state['kills']))
  startup_s = min(state['uninterrupted_wall_s'] / 3, 20.0)
  while True:
    chaos_dir = os.path.join(base, f'chaos_{len(state["rounds"])}')
    kills_before = len(state['kills'])
    _chaos_round(args, state, persist, chaos_dir, rng, startup_s, log)
    rc = 75
    while rc == 75:  # Let it finish.
      rc = _run_to_end(_train_cmd(args.config, chaos_dir, args.set), log)
    check = _compare(expected_dir, chaos_dir) if rc == 0 else {}
    lost = int(rc != 0 or not check.get('params_bit_identical') or not check.get('rows_equal')
               or bool(check.get('missing_steps') or check.get('duplicated_steps')))
    state['rounds'].append({'workdir': chaos_dir, 'final_rc': rc, 'check': check,
                            'kills': len(state['kills']) - kills_before, 'lost': lost})
    persist()
    print(f'[{args.name}] round {len(state["rounds"])}: {state["rounds"][-1]}', flush=True)
    if len(state['kills']) >= args.kills:
      break
  sent = [k for k in state['kills'] if k['sent']]
  lost = sum(r['lost'] for r in state['rounds'])
  survived_kills = sum(r['kills'] for r in state['rounds'] if not r['lost'])
  state['summary'] = {
      'kills_sent': len(sent),
      'by_signal': {s.name: sum(k['signal'] == s.name for k in sent) for s in SIGNALS},
      'by_moment': {m: sum(k['hit'] == m for k in sent) for m in MOMENTS},
      'corruptions': len(state['corruptions']),
      'corruptions_survived': sum(1 for c in state['corruptions'] if not any(
          r['lost'] for r in state['rounds'] if r['workdir'] == c.get('workdir'))),
      'kills_survived': survived_kills, 'rounds': len(state['rounds']),
      'unexpected_exits': len(state['unexpected_exits']), 'runs_lost': lost}
  persist()
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(state, f, indent=1)
  print(json.dumps(state['summary']), flush=True)
  raise SystemExit(1 if lost else 0)


def _chaos_round(args, state, persist, chaos_dir, rng, startup_s, log):
  """Kills the run in `chaos_dir` until K kills in all or until it finishes between two."""
  cmd = _train_cmd(args.config, chaos_dir, args.set)
  while len(state['kills']) < args.kills:
    i = len(state['kills'])
    if i >= args.kills // 2 and not state['corruptions']:
      damage = _corrupt_newest(chaos_dir)
      if damage:
        state['corruptions'].append({**damage, 'workdir': chaos_dir})
        persist()
    moment = MOMENTS[i % len(MOMENTS)]
    event = _one_kill(cmd, chaos_dir, log, rng, moment, rng.choice(SIGNALS), startup_s)
    event['rows'] = len(_rows(chaos_dir))
    if not event['sent']:
      if event['rc'] == 0:
        return  # Finished between two kills: this round is checked, the next one starts.
      state['unexpected_exits'].append(event)
    elif event['rc'] not in (0, 75, -signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT):
      state['unexpected_exits'].append(event)
    state['kills'].append(event)
    persist()
    print(f'[{args.name}] kill {len(state["kills"])}/{args.kills}: {event}', flush=True)


if __name__ == '__main__':
  main()
