r"""Runs the `:runlocal` smoke variant of every trainer path and records each run's final row.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
      python -m big_vision_style.tools.smoke_all --root /tmp/smoke --out /tmp/smoke.json
  python -m big_vision_style.tools.smoke_all --compare before.json after.json

For refactors that must preserve behaviour: run it before and after, then `--compare` lists,
per run, every metric that moved and by how much (FLOP counters, losses, accuracies). Wall
times and other timing fields are ignored. The offline tools (score cache, reference
embeddings, ReLA targets) run through their command lines, as a user would run them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

IGNORED = ('wall_s', 'run_wall_s', 'steps_per_s', 'examples_per_s')


def runs(root: str):
  """(name, config arg, tools to run first as [module, args...]) in dependency order."""
  bs_ref = f'{root}/bs_reference'
  jest_ref = f'{root}/jest_reference'
  bs = f'experiments/bad_students/policy_comparison.py:runlocal,reference_workdir={bs_ref}'
  jest = f'experiments/jest/filter_ratio.py:runlocal,reference_workdir={jest_ref}'
  yield 'baseline', 'experiments/baseline/fashion_mnist.py:runlocal', []
  yield 'bs_reference', 'experiments/bad_students/reference.py:runlocal', []
  for policy in ('uniform', 'hard_learner', 'easy_reference', 'learnability', 'rho'):
    yield f'bs_{policy}', f'{bs},policy={policy}', []
  yield 'bs_online', f'{bs},reference=online', []
  cache = f'{root}/bs_scores.npz'
  yield 'bs_cached', f'{bs},reference=cached,score_cache={cache}', [
      ['big_vision_style.score_cache', '--config', bs, '--out', cache]]
  yield 'jest_reference', 'experiments/jest/reference.py:runlocal', []
  for method in ('joint', 'independent'):
    yield f'jest_{method}', f'{jest},method={method}', []
  yield 'jest_flexi', f'{jest},flexi=True', []
  emb = f'{root}/jest_embeddings.npz'
  yield 'jest_cached', f'{jest},reference=cached,embedding_cache={emb}', [
      ['big_vision_style.tools.reference_embeddings', '--config', jest, '--out', emb]]
  yield 'active_clip', (f'experiments/bad_students/active_clip.py:runlocal,'
                        f'reference_workdir={jest_ref}'), []
  # ReLA finds its prior and targets under root= (experiments/rela/common.py).
  yield 'rela/priors/holdout', 'experiments/rela/prior.py:runlocal,prior=holdout', []
  yield 'byol', 'experiments/rela/table1.py:runlocal,prior=none', []
  for objective in ('byol', 'supervised'):
    arg = f'experiments/rela/table1.py:runlocal,root={root}/rela,prior=holdout,objective={objective}'
    yield f'rela_{objective}', arg, [['big_vision_style.rela_targets', '--config', arg]]


def run_all(root: str, out: str, only: list[str] | None):
  from big_vision_style import train  # pylint: disable=g-import-not-at-top
  train.setup_script_logging()
  results = {}
  if os.path.exists(out):
    with open(out) as f:
      results = json.load(f)
  for name, config_arg, tools in runs(root):
    if (only and name not in only) or name in results:
      continue
    for tool in tools:
      subprocess.run([sys.executable, '-m', *tool], check=True)
    final = train.train_once(train.load_config(config_arg), f'{root}/{name}')
    results[name] = {k: v for k, v in final.items() if k not in IGNORED}
    with open(out + '.tmp', 'w') as f:
      json.dump(results, f, indent=1, sort_keys=True)
    os.replace(out + '.tmp', out)
    print(f'{name}: ' + ', '.join(f'{k}={v:.6g}' for k, v in sorted(results[name].items())
                                  if isinstance(v, float) and ('loss' in k or 'eval' in k)))


def compare(before: str, after: str) -> int:
  with open(before) as f:
    a = json.load(f)
  with open(after) as f:
    b = json.load(f)
  worst = 0.0
  for name in sorted(set(a) | set(b)):
    if name not in a or name not in b:
      print(f'{name}: only in {"before" if name in a else "after"}')
      continue
    moved = []
    for key in sorted(set(a[name]) | set(b[name])):
      x, y = a[name].get(key), b[name].get(key)
      if x == y:
        continue
      if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        rel = abs(x - y) / max(abs(x), abs(y), 1e-12)
        worst = max(worst, rel)
        moved.append(f'{key}: {x:.7g} -> {y:.7g} (rel {rel:.1e})')
      else:
        moved.append(f'{key}: {x!r} -> {y!r}')
    print(f'{name}: ' + ('identical' if not moved else '; '.join(moved)))
  print(f'largest relative change: {worst:.2e}')
  return 0


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', default='/tmp/smoke_all')
  parser.add_argument('--out', default=None)
  parser.add_argument('--only', nargs='*')
  parser.add_argument('--compare', nargs=2, metavar=('BEFORE', 'AFTER'))
  args = parser.parse_args()
  if args.compare:
    sys.exit(compare(*args.compare))
  run_all(args.root, args.out or f'{args.root}/final_rows.json', args.only)


if __name__ == '__main__':
  main()
