"""JEST Fig. 4 analogue: FLOPs per iteration (XLA cost analysis, from the runs' per-step
counters) of i.i.d., JEST with a live reference (a 4-step run), JEST with the cache and
Flexi-JEST, as percentages of i.i.d.; for JEST both without and with the learner's scoring
forward reused for its gradient step (4-step runs each; forward_reuse.py). The sweep's
`--reuse` runs every run with it (off by default: on this CPU it saves FLOPs, not time).
Writes fig4_flops.png (the measured bars next to the paper's) and a table. Flexi-JEST's cost is
taken apart piece by piece in flexi_cost.py.
"""
from __future__ import annotations

import os

import numpy as np

from experiments import analysis
from experiments import sweep
from experiments.jest import grid

CATEGORIES = ('flops/learner_train', 'flops/scoring', 'flops/reference_scoring',
              'flops/actor_train')
# The paper's Fig. 4 (% of an i.i.d. iteration; its JEST bars count the scoring forward as
# reused), drawn next to the measured bars. Flexi-JEST's gap is taken apart in flexi_cost.py.
PAPER_PERCENT = {'iid': 100.0, 'jest_live_reference': 400.0, 'jest_cached_reference': 233.0,
                 'flexi_jest_cached_reference': 110.0}


def per_step_flops(workdir) -> dict:
  """Per-iteration FLOPs by category: the difference of the last two logged rows."""
  a, b = analysis.read_rows(workdir)[-2:]
  steps = b['step'] - a['step']
  return {k[len('flops/'):]: (b[k] - a[k]) / steps for k in CATEGORIES}


def _short_run(args, workdir, name, seed, **selection):
  """A 4-step run of `name` (no evaluations) with `selection` overrides; its FLOPs per step."""
  config = grid.run_config(args, name, seed, steps=4)
  with config.unlocked():
    for key, value in selection.items():
      config.selection[key] = value
    config.log_training_steps = 2
    config.evals = {}
  sweep.train_once(config, workdir)
  return per_step_flops(workdir)


def flops_per_iteration(args) -> dict:
  seed = args.seeds[0]
  # Each JEST row both ways, from 4-step runs; the sweep's own runs are one of the two.
  both_ways = {
      (key, reuse): _short_run(args, os.path.join(args.workdir, f'flops_{key[5:]}_reuse_{reuse}'),
                               'learnability_joint_f0.8', seed, reference=reference,
                               reuse_scoring_forward=reuse)
      for key, reference in (('jest_live_reference', 'pretrained'),
                             ('jest_cached_reference', 'cached'))
      for reuse in (False, True)}
  measured = {'iid': per_step_flops(grid.run_dir(args.workdir, 'uniform', seed)),
              'jest_live_reference': both_ways['jest_live_reference', args.reuse],
              'jest_cached_reference': per_step_flops(
                  grid.run_dir(args.workdir, 'learnability_joint_f0.8', seed))}
  flexi_dir = grid.run_dir(args.workdir, 'flexi_learnability_joint_f0.8', seed)
  if sweep.is_finished(flexi_dir):
    measured['flexi_jest_cached_reference'] = per_step_flops(flexi_dir)
  else:  # A 4-step run measures it.
    measured['flexi_jest_cached_reference'] = _short_run(
        args, os.path.join(args.workdir, 'flops_flexi'), 'flexi_learnability_joint_f0.8', seed)
  iid = sum(measured['iid'].values())
  out = {}
  for key, cats in measured.items():
    total = sum(cats.values())
    row = {'flops': total, 'percent_of_iid': 100 * total / iid, 'by_category': cats}
    for reuse, name in ((False, 'without_reuse'), (True, 'with_reuse')):
      if (key, reuse) in both_ways:
        cats_reuse = both_ways[key, reuse]
        value = sum(cats_reuse.values())
        row.update({f'flops_{name}': value, f'percent_of_iid_{name}': 100 * value / iid,
                    f'by_category_{name}': cats_reuse})
    out[key] = row
  return out


def table_lines(fig4: dict) -> list[str]:
  rows = []
  for name, r in fig4.items():
    cells = [r.get(f'percent_of_iid_{k}') for k in ('without_reuse', 'with_reuse')]
    rows.append([name, f'{r["flops"] / 1e9:.3f}', f'{r["percent_of_iid"]:.0f}'] +
                ['-' if c is None else f'{c:.0f}' for c in cells])
  return analysis.markdown_table(
      ['per iteration', 'GFLOPs, as run', '% of i.i.d., as run',
       '% without reusing the scoring forward', '% reusing it'], rows, 'lrrrr')


def plot(out: str, s: dict):
  """fig4_flops.png from `flops_per_iteration`'s result `s`: the measured bars (scoring forward
  not reused, reused) and the paper's, side by side."""
  plt = analysis.pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4))
  names = list(s)
  x = np.arange(len(names))
  bars = [([s[n].get('percent_of_iid_without_reuse', s[n]['percent_of_iid']) for n in names],
           'measured, scoring forward not reused', 'C0'),
          # No bar where nothing is reused: Flexi-JEST's reuse is not implemented.
          ([s[n].get('percent_of_iid_with_reuse', 100.0 if n == 'iid' else np.nan)
            for n in names], 'measured, scoring forward reused', 'C1'),
          ([PAPER_PERCENT.get(n, np.nan) for n in names], 'paper', '0.6')]
  for i, (values, label, color) in enumerate(bars):
    ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label, color=color)
    for xi, v in zip(x + (i - 1) * 0.27, values):
      if np.isfinite(v):
        ax.text(xi, v + 6, f'{v:.0f}', ha='center', fontsize=6)
  ax.set_xticks(x, names, rotation=15, fontsize=8)
  ax.set_ylabel('FLOPs per iteration (% of i.i.d.)')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, axis='y')
  analysis.save_figure(fig, os.path.join(out, 'fig4_flops.png'), dpi=120)
