"""The runs of the local JEST reproduction (reproduce.py): names, configs, costs, references.

1. References (experiments/jest/reference.py): curated (the clean `holdout` pool) and uncurated
   (the learner's noisy `train` pool), same steps; each one's embeddings of the train pool are
   cached once (tools/reference_embeddings.py): every selecting run uses the cache.
2. Learner runs (experiments/jest/filter_ratio.py), per seed: the i.i.d. baseline; filter
   ratios f in {0.5, 0.8, 0.9} x joint / independent x learnability / easy-reference; at
   f = 0.8 Flexi-JEST and JEST with the uncurated reference; and `uniform_3x`, the i.i.d.
   baseline trained 3x as long (its own cosine schedule), the target of the issue's goal: a
   run that reaches its final accuracy within `--steps` needs at most 1/3 of its iterations.
   `--runs core` keeps the uniform baseline and f = 0.8 (joint and independent learnability,
   joint easy-reference, Flexi, the uncurated reference). The variant runs (variants.py) are
   trained by name only.
A run's workdir is `<workdir>/runs/<name>_s<seed>`.
"""
from __future__ import annotations

import logging
import os

from big_vision_style import embedding_cache
from big_vision_style.tools import reference_embeddings
from experiments import sweep
from experiments.jest import filter_ratio
from experiments.jest import reference

METRIC = 'eval/zeroshot/accuracy'
REFERENCES = ('curated', 'uncurated')


def all_runs() -> dict[str, str]:
  """Run name -> filter_ratio.py args (without seed, reference and cache)."""
  runs = {'uniform': 'policy=uniform', 'uniform_3x': 'policy=uniform'}
  for f in (0.5, 0.8, 0.9):
    for policy in ('learnability', 'easy_reference'):
      for method in ('joint', 'independent'):
        runs[f'{policy}_{method}_f{f}'] = f'policy={policy},method={method},filter_ratio={f}'
  runs['flexi_learnability_joint_f0.8'] = 'policy=learnability,filter_ratio=0.8,flexi=True'
  runs['uncurated_ref_learnability_joint_f0.8'] = 'policy=learnability,filter_ratio=0.8'
  return runs


def variant_runs() -> dict[str, str]:
  """The paper's variant studies (experiments/jest/variants.py): trained by name only, not
  part of 'all' (the main sweep's 2-hour budget), analysed by variants.py."""
  runs = {f'hard_learner_joint_f{f}': f'policy=hard_learner,method=joint,filter_ratio={f}'
          for f in (0.5, 0.8, 0.9)}
  runs['uniform_softmax'] = 'policy=uniform,loss=softmax'
  for method in ('joint', 'independent'):
    runs[f'softmax_learnability_{method}_f0.8'] = (
        f'policy=learnability,method={method},filter_ratio=0.8,loss=softmax')
  for b2 in (0.95, 0.999):  # Adam's beta2, with every step's training loss logged.
    runs[f'learnability_joint_f0.8_b2_{b2}'] = (
        f'policy=learnability,method=joint,filter_ratio=0.8,b2={b2},log_every=1')
  return runs


def known_runs() -> dict[str, str]:
  return {**all_runs(), **variant_runs()}


# Runs longer than --steps, by this factor.
STEPS_MULTIPLIER = {'uniform_3x': 3}

CORE = ('uniform', 'learnability_joint_f0.8', 'learnability_independent_f0.8',
        'easy_reference_joint_f0.8', 'flexi_learnability_joint_f0.8',
        'uncurated_ref_learnability_joint_f0.8')


def reference_dir(args, pool):
  return os.path.join(args.workdir, f'reference_{pool}')


def cache_path(args, pool):
  return os.path.join(args.workdir, f'reference_{pool}', 'train_embeddings.npz')


def run_dir(workdir, name, seed):
  return os.path.join(workdir, 'runs', f'{name}_s{seed}')


def benchmark(args) -> str:
  """The config arg of the sweep's benchmark version (--benchmark)."""
  return f'benchmark={args.benchmark}'


def run_config(args, name, seed, steps=None):
  """The config of run `name` at `seed` under the sweep's options (`args`: workdir, steps,
  eval_every, gain, reuse)."""
  arg = known_runs()[name]
  pool = 'uncurated' if name.startswith('uncurated_ref') else 'curated'
  if name != 'uniform':
    arg += (f',reference=cached,reference_workdir={reference_dir(args, pool)},'
            f'embedding_cache={cache_path(args, pool)}')
  if args.reuse and 'flexi' not in arg and 'uniform' not in arg:
    arg += ',reuse=true'  # Flexi-JEST cannot reuse; uniform scores nothing.
  if args.gain is not None and 'uniform' not in arg:
    arg += f',gain={args.gain}'
  steps = steps or args.steps * STEPS_MULTIPLIER.get(name, 1)
  config = filter_ratio.get_config(f'{arg},seed={seed},steps={steps},{benchmark(args)}')
  for ev in config.evals.values():
    ev.log_steps = args.eval_every
  return config


def relative_cost(name: str) -> float:
  """Rough cost of a run in i.i.d. runs: the learner's scoring forward is about a third of a
  train step per pair scored, the rest of a pair's selection (reading it, the cached reference,
  the sampler) about a tenth. Orders the parallel queue only, longest first."""
  arg = dict(kv.split('=') for kv in known_runs()[name].split(','))
  if arg['policy'] == 'uniform':
    per_step = 1.0
  else:
    pairs = 1 / (1 - float(arg['filter_ratio']))  # Scored per pair trained on.
    learner_scores = arg['policy'] in ('learnability', 'hard_learner')
    per_pair = 0.1 + (0.33 if learner_scores else 0.0)
    per_step = 1.0 + pairs * per_pair * (0.25 if arg.get('flexi') == 'True' else 1.0)
  return per_step * STEPS_MULTIPLIER.get(name, 1)


def learner_runs(args) -> list[sweep.Run]:
  """Every (seed, run name) of args.seeds x args.runs, seeds outermost: an interrupted
  sequential sweep still has whole seeds (a --parallel queue takes them longest first)."""
  return [sweep.Run(f'{name}_s{seed}', run_dir(args.workdir, name, seed),
                    lambda name=name, seed=seed: run_config(args, name, seed),
                    relative_cost(name))
          for seed in args.seeds for name in args.runs]


def prepare_references(args):
  """Trains the references the runs need and caches each one's embeddings of the train pool."""
  for pool in REFERENCES:
    if pool == 'uncurated' and not any(r.startswith('uncurated') for r in args.runs):
      continue
    final = sweep.train_once(reference.get_config(
        f'pool={pool},epochs={args.ref_epochs},{benchmark(args)}'), reference_dir(args, pool))
    logging.info('Reference %s: zero-shot %.4f.', pool, final[METRIC])
    if not os.path.exists(cache_path(args, pool)):
      config = filter_ratio.get_config(
          f'reference_workdir={reference_dir(args, pool)},{benchmark(args)}')
      embedding_cache.save(cache_path(args, pool), reference_embeddings.compute(config))
