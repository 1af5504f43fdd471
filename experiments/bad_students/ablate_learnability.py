r"""Why learnability does (not) reach the paper's speed-up here: single-seed variations of the
learnability run, against the uniform target of the main policy comparison.

  python -m experiments.bad_students.ablate_learnability \
      --workdir workdirs/bad_students --out results/bad_students

Needs the main comparison's uniform runs (reproduce_policy_comparison.py) in --workdir. Each
variant changes one thing: sampling (top-k, temperature), filter ratio, actor size, reference
quality. Writes ablations.json and ablations.md to --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np

from big_vision_style import metrics_writer
from big_vision_style import train
from experiments.bad_students import actor_size_sweep
from experiments.bad_students import policy_comparison
from experiments.bad_students import reproduce_policy_comparison as main_sweep

STRONG_REF = 'reference_B_30ep'
# name: (config args, description).
VARIANTS = {
    'default': ('', 'as in the main comparison: f=0.5, sampling at T=1, Ti actor and reference'),
    'topk': ('method=topk', 'top-k instead of sampling'),
    'temp0.2': ('temperature=0.2', 'sharper sampling (T=0.2)'),
    'f0.8': ('filter_ratio=0.8', 'filter ratio 0.8 (super-batch 640)'),
    'actor_S': ('actor=S', 'an actor 4x larger (S, 8x smaller than the learner)'),
    'strong_ref': (f'reference_workdir={{workdir}}/{STRONG_REF}',
                   'a stronger reference: B-size (2x smaller than the learner), 30 epochs'),
}


def _finished_curve(path, steps):
  if not os.path.exists(os.path.join(path, 'metrics.jsonl')):
    return None
  rows = [r for r in metrics_writer.read_metrics(path) if main_sweep.ACC in r]
  return rows if rows and rows[-1]['step'] == steps else None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='workdirs/bad_students')
  parser.add_argument('--out', default='results/bad_students')
  parser.add_argument('--noise', default='0,0.3')
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  main_sweep.setup_logging()
  noises = [float(n) for n in args.noise.split(',')]
  variants = args.variants.split(',')
  if 'strong_ref' in variants:
    ref = actor_size_sweep.get_config('reference_only,actor=B')
    with ref.unlocked():
      ref.total_epochs = 30
    train.train(ref, os.path.join(args.workdir, STRONG_REF))
  results = {}
  for noise in noises:
    variant_name = 'clean' if noise == 0 else f'noise{noise:g}'
    uniform = [c for s in range(3) if (c := _finished_curve(
        main_sweep.run_dir(args.workdir, noise, 'uniform', s), args.steps))]
    if not uniform:
      raise FileNotFoundError('Run reproduce_policy_comparison.py first: no finished uniform '
                              f'runs for noise {noise} under {args.workdir}.')
    target = float(np.mean([c[-1][main_sweep.ACC] for c in uniform]))
    u_curve = np.mean([[r[main_sweep.ACC] for r in c] for c in uniform], axis=0)
    u_reach = int(np.argmax(u_curve >= target - 1e-12))
    u_step = uniform[0][u_reach]['step']
    u_flops = np.mean([c[u_reach]['flops/total_pretrained_reference'] for c in uniform])
    results[variant_name] = {'target_accuracy': target, 'uniform_steps_to_target': u_step,
                             'variants': {}}
    for name in variants:
      extra, description = VARIANTS[name]
      if name == 'default':
        path = main_sweep.run_dir(args.workdir, noise, 'learnability', args.seed)
      else:
        path = os.path.join(args.workdir, 'ablations', f'noise{noise:g}', name)
        arg = (f'policy=learnability,seed={args.seed},label_noise={noise},steps={args.steps},'
               f'reference_workdir={args.workdir}/reference_holdout')
        if extra:
          arg += ',' + extra.format(workdir=args.workdir)
        config = policy_comparison.get_config(arg)
        with config.unlocked():
          config.evals.test.log_steps = 50
        train.train(config, path)
      rows = _finished_curve(path, args.steps)
      if rows is None:
        continue
      reach = next((r for r in rows if r[main_sweep.ACC] >= target - 1e-12), None)
      results[variant_name]['variants'][name] = {
          'description': description,
          'final_accuracy': rows[-1][main_sweep.ACC],
          'steps_to_target_ratio': reach['step'] / u_step if reach else None,
          'flops_to_target_ratio': (reach['flops/total_pretrained_reference'] / u_flops
                                    if reach else None),
          'flipped_selected': float(np.mean([r.get('selection/flipped_selected', np.nan)
                                             for r in rows])) if noise else None,
          'score_selected_minus_unselected': float(np.mean(
              [r['selection/score_selected'] - r['selection/score_unselected'] for r in rows])),
      }
      logging.info('%s %s: %s', variant_name, name, results[variant_name]['variants'][name])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'ablations.json'), 'w') as f:
    json.dump({'seed': args.seed, 'steps': args.steps, **results}, f, indent=1)
  fmt = lambda x: '-' if x is None else f'{x:.2f}'
  lines = ['| data | variant | final accuracy | steps to target ratio | FLOPs to target ratio | '
           'score gap (selected - unselected) | flipped among selected |',
           '|---|---|---|---|---|---|---|']
  for data, r in results.items():
    for name, v in r['variants'].items():
      flipped = '-' if v['flipped_selected'] is None else f'{100 * v["flipped_selected"]:.1f}%'
      lines.append(f'| {data} | {name}: {v["description"]} | {100 * v["final_accuracy"]:.2f} | '
                   f'{fmt(v["steps_to_target_ratio"])} | {fmt(v["flops_to_target_ratio"])} | '
                   f'{v["score_selected_minus_unselected"]:.3f} | {flipped} |')
  table = '\n'.join(lines)
  with open(os.path.join(args.out, 'ablations.md'), 'w') as f:
    f.write(f'Single seed ({args.seed}), learnability, {args.steps} learner steps; target = '
            'the uniform baseline\'s final mean accuracy over 3 seeds.\n\n' + table + '\n')
  print(table)


if __name__ == '__main__':
  main()
