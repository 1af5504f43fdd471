"""Small synthetic sweeps, their run logs written as the trainer writes them (through
big_vision_style.metrics_writer), for the tests of the reproducers' analyses. Every value is a
fixed formula of the run, seed and step: no random numbers."""
import json
import math
import os

from big_vision_style import metrics_writer

JEST_METRIC = 'eval/zeroshot/accuracy'
BAD_STUDENTS_FLOPS = ('flops/total', 'flops/total_pretrained_reference',
                      'flops/total_cached_reference', 'flops/total_learner_only')


def write_log(workdir, rows, final=False):
  """`rows` (dicts with 'step') to `workdir`/metrics.jsonl through MetricsWriter; with
  `final`, the finished-run marker (final.json) that train_once writes, from the last row."""
  writer = metrics_writer.MetricsWriter(str(workdir), total_steps=rows[-1]['step'])
  for row in rows:
    writer.write(row['step'], {k: v for k, v in row.items() if k != 'step'})
  writer.flush()
  if final:
    with open(os.path.join(workdir, 'final.json'), 'w') as f:
      json.dump({**rows[-1], 'run_wall_s': 1.0}, f)


def _wave(*args):
  """A fixed pseudo-noise in [-1, 1] of integers."""
  return math.sin(sum((k + 1.7) * a for k, a in enumerate(args)))


# ----- JEST (experiments/jest/reproduce.py) -----

# Run name -> (final zero-shot, per-step FLOPs in GFLOPs, corrupted fraction or None).
JEST_RUNS = {
    'uniform': (0.12, 2.0, None),
    'uniform_3x': (0.137, 2.0, None),
    'learnability_joint_f0.8': (0.155, 5.5, 0.22),
    'learnability_independent_f0.8': (0.139, 5.4, 0.23),
    'easy_reference_joint_f0.8': (0.16, 3.0, 0.15),
    'easy_reference_joint_f0.5': (0.14, 2.5, 0.17),
    'uncurated_ref_learnability_joint_f0.8': (0.14, 5.5, 0.47),
}


def jest_run(workdir, name, seed, steps, final=True, duplicate_last=False):
  top, gflops, corrupted = JEST_RUNS[name]
  rows = []
  for step in range(50, steps + 1, 50):
    row = {'step': step, 'train/loss': 3.0 - step / steps,
           'flops/total_pretrained_reference': 1e9 * gflops * step + 4e11}
    if corrupted is not None:
      row['selection/corrupted_selected'] = round(corrupted + 0.02 * _wave(seed, step), 4)
    if step % 100 == 0:
      frac = step / steps
      row[JEST_METRIC] = round(0.05 + (top - 0.05) * math.sqrt(frac) +
                               0.004 * _wave(seed, step, len(name)), 4)
      row['eval/retrieval/i2t_recall_at_1'] = round(0.02 + (0.02 + top / 5) * frac +
                                                    0.002 * _wave(seed, step, len(name), 1), 4)
      row['eval/retrieval/t2i_recall_at_1'] = round(0.01 + (0.01 + top / 6) * frac +
                                                    0.002 * _wave(seed, step, len(name), 2), 4)
    rows.append(row)
  if duplicate_last:  # The last step logged twice (two sweeps trained it at once).
    rows.append({**rows[-1], JEST_METRIC: rows[-1][JEST_METRIC] + 0.001})
  write_log(workdir, rows, final)


def jest_grid(root):
  """Seeds 0 and 1 of JEST_RUNS (800 steps; uniform_3x 2,400): easy_reference_joint_f0.5 only
  at seed 0, the uncurated-reference run unfinished at seed 1, a step of
  learnability_joint_f0.8 seed 1 logged twice; and a timing record."""
  for seed in (0, 1):
    for name in JEST_RUNS:
      if (name, seed) == ('easy_reference_joint_f0.5', 1):
        continue
      jest_run(os.path.join(root, 'runs', f'{name}_s{seed}'), name, seed,
               2400 if name == 'uniform_3x' else 800,
               final=(name, seed) != ('uncurated_ref_learnability_joint_f0.8', 1),
               duplicate_last=(name, seed) == ('learnability_joint_f0.8', 1))
  with open(os.path.join(root, 'timing.jsonl'), 'w') as f:
    for part, start, end in (('references', 0, 60), ('uniform_s0', 60, 160),
                             ('uniform_s1', 100, 200), ('fig2_and_fig4', 230, 260)):
      f.write(json.dumps({'part': part, 'start': 1e9 + start, 'end': 1e9 + end}) + '\n')


# ----- Bad Students (experiments/bad_students/reproduce_policy_comparison.py) -----

BAD_STUDENTS_POLICIES = ('uniform', 'learnability', 'rho')


def bad_students_grid(root, steps=400):
  """Seeds 0 and 1, clean and 30% noise, BAD_STUDENTS_POLICIES; rho at seed 1 with noise
  stopped at step 300 (unfinished)."""
  for seed in (0, 1):
    for noise in (0.0, 0.3):
      for k, policy in enumerate(BAD_STUDENTS_POLICIES):
        last = 300 if (policy, seed, noise) == ('rho', 1, 0.3) else steps
        cost = (1.0 + 0.9 * k, 1.0 + 0.5 * k, 1.0 + 0.2 * k, 1.0)
        rows = []
        for step in range(50, last + 1, 50):
          row = {'step': step, **{key: 1e10 * c * step for key, c in
                                  zip(BAD_STUDENTS_FLOPS, cost)}}
          if noise and policy != 'uniform':
            row['selection/flipped_selected'] = round(0.2 - 0.05 * k + 0.01 * _wave(seed, step),
                                                      4)
          if step % 100 == 0:
            top = 0.84 - 0.08 * noise + 0.03 * k
            row['eval/test/accuracy'] = round(top * (step / steps) ** (0.2 / (1 + k)) +
                                              0.005 * _wave(seed, step, k), 4)
          rows.append(row)
        write_log(os.path.join(root, f'noise{noise:g}', f'{policy}_s{seed}'), rows)


# ----- ReLA (experiments/rela/reproduce_table1.py) -----

def rela_grid(root):
  """Final rows (final.json) of seeds 0 and 1: BYOL and supervised, priors none and holdout,
  budgets 0.1 and 1.0 (holdout at 0.1 only); supervised holdout missing at seed 1."""
  metrics = {'byol': 'eval/probe/accuracy', 'supervised': 'eval/test/accuracy'}
  for seed in (0, 1):
    for j, (objective, metric) in enumerate(metrics.items()):
      for i, (prior, budgets) in enumerate((('none', (0.1, 1.0)), ('holdout', (0.1,)))):
        if (objective, prior, seed) == ('supervised', 'holdout', 1):
          continue
        for budget in budgets:
          workdir = os.path.join(root, objective, prior, f'r{budget:g}_s{seed}')
          os.makedirs(workdir)
          final = {'step': int(2343 * budget),
                   metric: round(0.7 + 0.1 * budget + 0.02 * i +
                                 0.01 * _wave(seed, j, i, int(10 * budget)), 4),
                   'rela/switch_step': None if prior == 'none' else 40 + 10 * seed,
                   'flops/total': 1e12 * budget * (1 + seed),
                   'flops/total_free_prior': 5e11 * budget * (1 + seed)}
          with open(os.path.join(workdir, 'final.json'), 'w') as f:
            json.dump(final, f)
