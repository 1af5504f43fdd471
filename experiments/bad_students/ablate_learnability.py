r"""Why learnability does (not) reach the paper's speed-up here: single-seed variations of the
learnability run, against the uniform target of the main policy comparison.

  python -m experiments.bad_students.ablate_learnability \
      --workdir workdirs/bad_students --out results/bad_students

The target (the uniform baseline's final mean accuracy over 3 seeds, and the step and FLOPs at
which uniform's mean curve first reaches it) comes from the main comparison's finished uniform
runs in --workdir when they are there, else from its committed `--main_results` (curves.json),
so the ablation does not need the 30-run sweep to be rerun. Each variant changes one thing:
sampling (top-k, temperature), filter ratio, actor size, reference quality. The references
are trained here when missing (finished runs are skipped, unfinished ones resume). Writes
ablations.json and ablations.md to --out, including each reference's own test accuracy and
each run's evaluation curve ('curve': step, accuracy, headline FLOPs).

Statistics: one seed per variant, so there is no std over seeds and no paired interval; a ratio
moves by about one evaluation interval (50 steps, 0.06x) between seeds. Claims from this table
need the variant rerun on more seeds (the strong-reference result, for one).
"""
from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np

from big_vision_style import train
from experiments import analysis
from experiments import sweep
from experiments.bad_students import common
from experiments.bad_students import policy_comparison
from experiments.bad_students import reference
from experiments.bad_students import reproduce_policy_comparison as main_sweep

HEADLINE = main_sweep.LEVELS[main_sweep.HEADLINE_LEVEL]
ACC = main_sweep.ACC
TOL = main_sweep.REACH_TOL
# Reference workdirs (under --workdir) and how to train each.
REFERENCES = {
    'reference_holdout': ('ViT-mu/7 (the default reference), 10 epochs of the 10k holdout',
                          lambda: reference.get_config()),
    'reference_B_30ep': ('B-size (2x smaller than the learner), 30 epochs of the 10k holdout',
                         main_sweep.strong_reference_config),
}
# name: (config args, reference workdir name, description).
VARIANTS = {
    'default': ('', 'reference_holdout',
                'as in the main comparison: f=0.5, sampling at T=1, Ti actor and reference'),
    'topk': ('method=topk', 'reference_holdout', 'top-k instead of sampling'),
    'temp0.2': ('temperature=0.2', 'reference_holdout', 'sharper sampling (T=0.2)'),
    'f0.8': ('filter_ratio=0.8', 'reference_holdout', 'filter ratio 0.8 (super-batch 640)'),
    'actor_S': ('actor=S', 'reference_holdout',
                'an actor 4x larger (S, 8x smaller than the learner)'),
    'strong_ref': ('', 'reference_B_30ep', 'a stronger reference: B-size, 30 epochs'),
}


def uniform_target(workdir, main_results, noise, steps):
  """(target accuracy, uniform's step and FLOPs at first reaching it, where it came from)."""
  runs = [analysis.columns(rows, {'step': 'step', 'acc': ACC, 'flops': HEADLINE})
          for s in range(3)
          if (rows := main_sweep.finished_rows(main_sweep.run_dir(workdir, noise, 'uniform', s),
                                               steps))]
  if runs:
    mean = analysis.mean_curve(runs, {'acc': 'acc', 'flops': 'flops'})
    target = float(np.mean([c['acc'][-1] for c in runs]))
    reach = analysis.first_reach(mean['acc'], target, tol=TOL)
    return target, mean['step'][reach], float(mean['flops'][reach]), workdir
  path = os.path.join(main_results, 'curves.json')
  variant = 'clean' if noise == 0 else f'noise{noise:g}'
  if not os.path.exists(path):
    raise FileNotFoundError(f'No finished uniform runs for noise {noise} under {workdir} and no '
                            f'{path}: run reproduce_policy_comparison.py first.')
  with open(path) as f:
    u = json.load(f)[variant]['uniform']
  if u['steps'][-1] != steps:
    raise ValueError(f'{path} holds uniform runs of {u["steps"][-1]} steps, not --steps={steps}.')
  target = float(np.mean(u['finals']))
  reach = analysis.first_reach(u['acc'], target, tol=TOL)
  return target, u['steps'][reach], u['flops'][main_sweep.HEADLINE_LEVEL][reach], path


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='workdirs/bad_students')
  parser.add_argument('--main_results', default='results/bad_students')
  parser.add_argument('--out', default='results/bad_students')
  parser.add_argument('--noise', default='0,0.3')
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  train.setup_script_logging()
  noises = [float(n) for n in args.noise.split(',')]
  variants = args.variants.split(',')
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    parser.error(f'unknown variants {sorted(unknown)}; expected some of {", ".join(VARIANTS)}.')

  references = {}
  for name in sorted({VARIANTS[v][1] for v in variants}):
    description, make_config = REFERENCES[name]
    path = os.path.join(args.workdir, name)
    sweep.train_once(make_config(), path)  # Returns at once when already finished.
    references[name] = {'description': description,
                        'test_accuracy': analysis.read_rows(path, where=ACC)[-1][ACC]}
    logging.info('Reference %s: test accuracy %s', name, references[name]['test_accuracy'])

  results = {}
  for noise in noises:
    data = 'clean' if noise == 0 else f'noise{noise:g}'
    target, u_step, u_flops, source = uniform_target(args.workdir, args.main_results, noise,
                                                     args.steps)
    results[data] = {'target_accuracy': target, 'uniform_steps_to_target': u_step,
                     'uniform_flops_to_target': u_flops, 'target_from': source, 'variants': {}}
    for name in variants:
      extra, ref_name, description = VARIANTS[name]
      if name == 'default':  # The main comparison's own run when it is there.
        path = main_sweep.run_dir(args.workdir, noise, 'learnability', args.seed)
      else:
        path = os.path.join(args.workdir, 'ablations', f'noise{noise:g}', name)
      arg = (f'policy=learnability,seed={args.seed},label_noise={noise},steps={args.steps},'
             f'reference_workdir={os.path.join(args.workdir, ref_name)}')
      config = policy_comparison.get_config(arg + (',' + extra if extra else ''))
      with config.unlocked():
        config.evals.test.log_steps = 50
        if ref_name == 'reference_B_30ep':  # The model must match the checkpoint.
          config.reference_model = dict(common.LOCAL_ACTORS['B'], pool_type='gap')
      sweep.train_once(config, path)
      rows = main_sweep.finished_rows(path, args.steps)
      if rows is None:
        raise RuntimeError(f'{path} did not finish {args.steps} steps.')
      i = analysis.first_reach([r[ACC] for r in rows], target, tol=TOL)
      step, flops = (None, None) if i is None else (rows[i]['step'], rows[i][HEADLINE])
      results[data]['variants'][name] = {
          'description': description,
          'reference': ref_name,
          'final_accuracy': rows[-1][ACC],
          'steps_to_target': step,
          'steps_to_target_ratio': analysis.ratio(step, u_step),
          'flops_to_target_ratio': analysis.ratio(flops, u_flops),
          'flipped_selected': float(np.mean([r[main_sweep.FLIPPED] for r in rows
                                             if main_sweep.FLIPPED in r]))
                              if noise else None,
          'curve': {'step': [r['step'] for r in rows], 'accuracy': [r[ACC] for r in rows],
                    'flops': [r[HEADLINE] for r in rows]},
          'score_selected_minus_unselected': float(np.mean(
              [r['selection/score_selected'] - r['selection/score_unselected'] for r in rows
               if 'selection/score_selected' in r])),
      }
      logging.info('%s %s: %s', data, name, results[data]['variants'][name])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'ablations.json'), 'w') as f:
    json.dump({'seed': args.seed, 'steps': args.steps, 'flops_level': main_sweep.HEADLINE_LEVEL,
               'references': references, **results}, f, indent=1)
  table = _table(references, results)
  with open(os.path.join(args.out, 'ablations.md'), 'w') as f:
    f.write(f'Single seed ({args.seed}), learnability, {args.steps} learner steps; target = '
            'the uniform baseline\'s final mean accuracy over 3 seeds; FLOPs with reference '
            'training excluded.\n\n' + table + '\n')
  print(table)


def _table(references, results) -> str:
  fmt = analysis.fmt
  lines = analysis.markdown_table(
      ['reference', 'what', 'test accuracy'],
      [[name, r['description'], f'{100 * r["test_accuracy"]:.2f}']
       for name, r in references.items()], 'lll')
  rows = []
  for data, r in results.items():
    rows.append([data, 'uniform (target, 3 seeds)', f'{100 * r["target_accuracy"]:.2f}', '1.00',
                 '1.00', '-', '-'])
    for name, v in r['variants'].items():
      flipped = '-' if v['flipped_selected'] is None else f'{100 * v["flipped_selected"]:.1f}%'
      rows.append([data, f'{name}: {v["description"]}', f'{100 * v["final_accuracy"]:.2f}',
                   fmt(v['steps_to_target_ratio']), fmt(v['flops_to_target_ratio']),
                   f'{v["score_selected_minus_unselected"]:.3f}', flipped])
  lines += [''] + analysis.markdown_table(
      ['data', 'variant', 'final accuracy', 'steps to target ratio', 'FLOPs to target ratio',
       'score gap (selected - unselected)', 'flipped among selected'], rows, 'lllllll')
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
