r"""JEST's variant studies, the paper's appendix ablations as ../shared/METHODS.md (section 2,
"Variants") records them: hard-learner scoring collapses at high filter ratios, and the
softmax (CLIP) loss variant, whose conditional logits restrict the negatives to the examples
already sampled. The issue lists them as JEST Figs. 7 and 8; the paper's text is not reachable
offline, so which appendix figure shows which could not be checked, and these configs follow
METHODS.md's description, not the figures themselves.

  # One run (args as filter_ratio.py, plus b2 for Adam's beta2):
  python -m big_vision_style.train --config \
      experiments/jest/variants.py:policy=hard_learner,filter_ratio=0.9 \
      --workdir workdirs/jest/variants/hard_learner_f0.9_s0
  # Local reproduction, 3 seeds, against the main sweep's runs of the same seeds (reproduce.py
  # trains them by name; the curated reference and its cache are the main sweep's):
  mkdir -p workdirs/jest_variants && cp -r workdirs/jest/reference_curated workdirs/jest_variants/
  python -m experiments.jest.reproduce --workdir workdirs/jest_variants --seeds 0,1,2 \
      --runs hard_learner_joint_f0.5,hard_learner_joint_f0.8,hard_learner_joint_f0.9,\
uniform_softmax,softmax_learnability_joint_f0.8,softmax_learnability_independent_f0.8,\
learnability_joint_f0.8_b2_0.95,learnability_joint_f0.8_b2_0.999 --runs_only --parallel 2
  python -m experiments.jest.variants --main workdirs/jest --variants workdirs/jest_variants \
      --out results/jest/variants

Paper (METHODS.md): hard-learner scoring (the learner's own pairwise loss, no reference)
collapses at high f; the softmax variant is supported by the same chunked sampler; Adam
beta2 = 0.95 avoids loss spikes at f = 0.8 (the configs' default; the `_b2_` runs log every
step's training loss, to see spikes, with beta2 0.95 and the usual 0.999). Also recorded there
but not reproduced: importance re-weighting of the selected data hurt (not implemented).

Statistics (`restat`, also `--regenerate` on a committed summary's per-seed rows): mean ±
sample std (ddof=1) over seeds, with the seeds that reached a target; paired by seed with 95%
t-intervals: each hard-learner f minus the 800-iteration i.i.d. run, softmax and sigmoid joint
minus independent, beta2 0.95 minus 0.999. Targets on the ratio basis (over the target run's
own first reach) where the per-seed rows have it; the first committed summary has only the
fraction basis (of the target run's whole length), and its run curves were not kept, so its
table reports that basis, marked as such. Each per-seed row now also keeps the run's curve.

Locally the softmax runs score with the main sweep's sigmoid-trained reference (its cached
embeddings and learned temperature; its bias is unused by the softmax loss), and are compared
with an i.i.d. run of the softmax loss (`uniform_softmax`), not with the sigmoid `uniform_3x`.

TPU slice (`:tpu`): v4-128 (64 chips), 27.2 GiB per chip of 30.75 with the softmax loss (the
largest arm); v4-64 runs out of memory (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from experiments import analysis
from experiments.jest import common
from experiments.jest import fig3_filter_ratio as fig3
from experiments.jest import grid
from experiments.jest import reproduce

fmt_stat = analysis.fmt_stat

FILTER_RATIOS = (0.5, 0.8, 0.9)
# Figure panel -> (run name, workdir: 'main' or 'variants') per line or bar.
HARD_LEARNER = {policy: {f: (f'{policy}_joint_f{f}',
                             'variants' if policy == 'hard_learner' else 'main')
                         for f in FILTER_RATIOS}
                for policy in ('hard_learner', 'easy_reference', 'learnability')}
SOFTMAX = {'uniform (800 it.)': {'sigmoid': ('uniform', 'main'),
                                 'softmax': ('uniform_softmax', 'variants')},
           'independent': {'sigmoid': ('learnability_independent_f0.8', 'main'),
                           'softmax': ('softmax_learnability_independent_f0.8', 'variants')},
           'joint': {'sigmoid': ('learnability_joint_f0.8', 'main'),
                     'softmax': ('softmax_learnability_joint_f0.8', 'variants')}}


BETA2 = (0.95, 0.999)
SPIKE_WINDOW = 20  # A step's loss is compared with the median of the previous this many.


def get_config(arg=None):
  return common.base_config(common.parse(arg))


def per_seed(workdirs: dict, run: str, where: str, seeds, targets: dict) -> list[dict]:
  """`run`'s final values per seed, and the fraction of each target run's iterations and FLOPs
  it needed to reach that run's final zero-shot (None: never)."""
  def curve(name, workdir_key, seed):
    return fig3.curve(grid.run_dir(workdirs[workdir_key], name, seed))

  rows = []
  for seed in seeds:
    c = curve(run, where, seed)
    full = fig3.run_row(c, {f'_{name}': curve(*target, seed) for name, target in targets.items()})
    rows.append({'seed': seed,
                 **{k: full[k] for k in ('final', 'retrieval', 'corrupted_selected')},
                 **{f'{kind}_{basis}_{name}': full[f'{kind}_{basis}_{name}']
                    for name in targets for kind in ('iterations', 'flops')
                    for basis in ('ratio', 'fraction')},
                 'curve': c})
  return rows


NOT_STATS = ('seed', 'loss_curve', 'curve')


def summarise(rows: list[dict]) -> dict:
  return {'per_seed': rows, **fig3.seed_stats(rows, [key for key in rows[0]
                                                     if key not in NOT_STATS])}


def _by_seed(s: dict, key: str = 'final') -> dict:
  return {str(r['seed']): r[key] for r in s['per_seed']}


def paired(summary: dict) -> dict:
  """The comparisons the README makes, paired by seed (95% t-intervals), in points."""
  u800 = summary['softmax']['uniform (800 it.)']['sigmoid']
  out = {f'hard_learner f = {f} minus uniform (800 it.)': analysis.paired_by_seed(
      _by_seed(s), _by_seed(u800)) for f, s in summary['hard_learner']['hard_learner'].items()}
  for f, s in summary['hard_learner']['hard_learner'].items():
    out[f'hard_learner minus learnability, f = {f}'] = analysis.paired_by_seed(
        _by_seed(s), _by_seed(summary['hard_learner']['learnability'][f]))
  for loss in ('sigmoid', 'softmax'):
    out[f'{loss}: joint minus independent'] = analysis.paired_by_seed(
        _by_seed(summary['softmax']['joint'][loss]),
        _by_seed(summary['softmax']['independent'][loss]))
    if loss == 'softmax':
      for group in summary['softmax']:
        out[f'{group}: softmax minus sigmoid'] = analysis.paired_by_seed(
            _by_seed(summary['softmax'][group]['softmax']),
            _by_seed(summary['softmax'][group]['sigmoid']))
  if len(summary['beta2']) == 2:
    (a, sa), (b, sb) = summary['beta2'].items()
    out[f'beta2 {a} minus {b}'] = analysis.paired_by_seed(_by_seed(sa), _by_seed(sb))
  return out


def restat(summary: dict) -> dict:
  """`summary` with every statistic recomputed from its per-seed rows, and `paired`."""
  def walk(node):
    if isinstance(node, dict) and 'per_seed' in node:
      return summarise(node['per_seed'])
    if isinstance(node, dict):
      return {k: walk(v) for k, v in node.items() if k not in ('paired', 'std_ddof')}
    return node
  out = walk(summary)
  return {**out, 'std_ddof': fig3.DDOF, 'paired': paired(out)}


def analyze(workdirs: dict, seeds) -> dict:
  summary = {'seeds': list(seeds), 'hard_learner': {}, 'softmax': {}}
  sigmoid_targets = {'uniform_3x': ('uniform_3x', 'main')}
  for policy, lines in HARD_LEARNER.items():
    summary['hard_learner'][policy] = {
        str(f): summarise(per_seed(workdirs, run, where, seeds, sigmoid_targets))
        for f, (run, where) in lines.items()}
  for group, losses in SOFTMAX.items():
    summary['softmax'][group] = {}
    for loss, (run, where) in losses.items():
      # Each loss against its own i.i.d. run of 800 iterations: same steps, same loss.
      summary['softmax'][group][loss] = summarise(per_seed(
          workdirs, run, where, seeds, {'uniform': SOFTMAX['uniform (800 it.)'][loss]}))
  summary['beta2'] = beta2(workdirs, seeds)
  summary['uniform_3x'] = summarise(per_seed(workdirs, 'uniform_3x', 'main', seeds,
                                             sigmoid_targets))
  return restat(summary)


def loss_spikes(workdir, warmup: int) -> dict:
  """Training loss spikes of a run that logged every step: each step's loss against the
  median of the previous SPIKE_WINDOW steps' (a selected batch's loss is noisy), after warm-up."""
  rows = analysis.read_rows(workdir, where='train/loss')
  steps = np.array([r['step'] for r in rows])
  if not np.all(np.diff(steps) == 1):
    raise ValueError(f'{workdir} did not log every step (log_every=1).')
  loss = np.array([r['train/loss'] for r in rows])
  grad = np.array([r['train/grad_norm'] for r in rows])
  rise = np.array([loss[t] / np.median(loss[t - SPIKE_WINDOW:t]) - 1
                   for t in range(max(warmup, SPIKE_WINDOW), len(loss))])
  return {'max_rise': float(rise.max()), 'steps_rising_over_25pct': int((rise > 0.25).sum()),
          'max_grad_norm': float(grad[warmup:].max()),
          'loss': loss.tolist(), 'steps': steps.tolist()}


def beta2(workdirs: dict, seeds) -> dict:
  out = {}
  for b2 in BETA2:
    run = f'learnability_joint_f0.8_b2_{b2}'
    config = grid.run_config(reproduce.parse_args([]), run, seeds[0])
    warmup = int(config.optax.warmup_frac * config.total_steps)
    rows = per_seed(workdirs, run, 'variants', seeds, {'uniform_3x': ('uniform_3x', 'main')})
    for row in rows:
      spikes = loss_spikes(grid.run_dir(workdirs['variants'], run, row['seed']), warmup)
      row.update({k: v for k, v in spikes.items() if k not in ('loss', 'steps')})
      row['loss_curve'] = spikes['loss']
    out[str(b2)] = summarise(rows)
  return out


def write_table(summary: dict, path: str):
  basis = 'ratio' if 'iterations_ratio_uniform_3x' in summary['uniform_3x'] else 'fraction'
  how = {'ratio': 'ratio to its own first reach', 'fraction': (
      "FRACTION of its whole run: the per-seed ratio basis was not committed")}[basis]
  to_3x = f"to `uniform_3x`'s final zero-shot: iterations / FLOPs, {how}"

  def reach(s, base):
    return (f'{fmt_stat(s[f"iterations_{basis}_{base}"], always_count=True)} / '
            f'{fmt_stat(s[f"flops_{basis}_{base}"], always_count=True)}')

  lines = ['## Hard-learner vs reference-based scoring, joint, vs filter ratio (mean ± sample '
           f'std over seeds {summary["seeds"]}; "(k/n)": reached in k of n seeds)', '']
  lines += analysis.markdown_table(
      ['scoring', 'f', 'zero-shot (%)', 'retrieval R@1 (%)', 'corrupted pairs selected (%)',
       to_3x],
      [[policy, f, fmt_stat(s['final'], 100), fmt_stat(s['retrieval'], 100),
        fmt_stat(s['corrupted_selected'], 100, 1), reach(s, 'uniform_3x')]
       for policy, by_f in summary['hard_learner'].items() for f, s in by_f.items()], 'lrrrrr')
  u3 = summary['uniform_3x']
  lines += ['', '`uniform_3x` (i.i.d., 2,400 iterations): zero-shot '
            f'{fmt_stat(u3["final"], 100)}%.',
            '', '## Softmax (CLIP) vs sigmoid (SigLIP) loss, learnability at f = 0.8', '']
  lines += analysis.markdown_table(
      ['selection', 'loss', 'zero-shot (%)', 'retrieval R@1 (%)',
       'corrupted pairs selected (%)', "to the same loss's 800-iteration i.i.d. final "
       f'zero-shot: iterations / FLOPs, {how}'],
      [[group, loss, fmt_stat(s['final'], 100), fmt_stat(s['retrieval'], 100),
        fmt_stat(s['corrupted_selected'], 100, 1) if s['corrupted_selected']['n'] else '-',
        reach(s, 'uniform')]
       for group, by_loss in summary['softmax'].items() for loss, s in by_loss.items()],
      'llrrrr')
  lines += ['', "## Adam's beta2 at f = 0.8 (learnability, joint; every step's training loss "
            f'against the median of the previous {SPIKE_WINDOW}, after warm-up)', '']
  lines += analysis.markdown_table(
      ['beta2', 'zero-shot (%)', 'largest rise of the loss (%)', 'steps rising > 25%',
       'largest grad norm', to_3x],
      [[b2, fmt_stat(s['final'], 100), fmt_stat(s['max_rise'], 100, 1),
        fmt_stat(s['steps_rising_over_25pct'], 1, 1), fmt_stat(s['max_grad_norm']),
        reach(s, 'uniform_3x')] for b2, s in summary['beta2'].items()], 'rrrrrr')
  lines += ['', '## Paired by seed: zero-shot difference (points, [95% t-interval])', '']
  lines += analysis.markdown_table(
      ['comparison', 'zero-shot difference', 'seeds'],
      [[name, analysis.fmt_interval(d, 100), ', '.join(d['seeds'])]
       for name, d in summary['paired'].items()], 'lrl')
  analysis.write_text(path, lines)


def plot(summary: dict, path: str):
  plt = analysis.pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
  colours = {'hard_learner': 'tab:red', 'easy_reference': 'tab:green',
             'learnability': 'tab:blue'}
  for key, ax, label in (('final', axes[0], 'zero-shot accuracy (%)'),
                         ('corrupted_selected', axes[1], 'corrupted pairs selected (%)')):
    for k, (policy, by_f) in enumerate(summary['hard_learner'].items()):
      x = [float(f) + 0.01 * (k - 1) for f in by_f]
      analysis.errorbar(ax, x, [s[key] for s in by_f.values()],
                        scale=100, marker='o', capsize=3, color=colours[policy],
                        label=f'{policy}, joint (mean ± std)')
      analysis.seed_points(ax, [xi + 0.005 for xi in x],
                           [[r[key] for r in s['per_seed']] for s in by_f.values()],
                           scale=100, color=colours[policy], ms=4)
    if key == 'final':
      u3 = summary['uniform_3x']['final']
      ax.axhline(100 * u3['mean'], color='k', ls='--', label='uniform_3x (2,400 it.)')
      u1 = summary['softmax']['uniform (800 it.)']['sigmoid']['final']
      ax.axhline(100 * u1['mean'], color='k', ls=':', label='uniform (800 it.)')
    else:
      ax.axhline(50, color='k', ls=':', label='i.i.d. (pool is 50% corrupted)')
    ax.set_xlabel('filter ratio f')
    ax.set_ylabel(label)
    ax.set_xticks(list(FILTER_RATIOS))
    ax.legend(fontsize=8)
  axes[0].set_title('Scoring vs filter ratio, 800 iterations')
  axes[1].set_title('Corrupted pairs among those chosen')
  ax = axes[2]
  groups = list(summary['softmax'])
  x = np.arange(len(groups))
  for k, (loss, colour) in enumerate((('sigmoid', 'tab:blue'), ('softmax', 'tab:orange'))):
    means = [100 * summary['softmax'][g][loss]['final']['mean'] for g in groups]
    stds = [100 * summary['softmax'][g][loss]['final']['std'] for g in groups]
    ax.bar(x + (k - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, color=colour,
           label=f'{loss} loss (mean ± std)')
    analysis.seed_points(ax, x + (k - 0.5) * 0.38,
                         [[r['final'] for r in summary['softmax'][g][loss]['per_seed']]
                          for g in groups], scale=100, color='k', ms=4)
  ax.set_xticks(x)
  ax.set_xticklabels(groups)
  ax.set_ylim(bottom=min(100 * summary['softmax'][g][l]['final']['mean'] for g in groups
                         for l in ('sigmoid', 'softmax')) - 3)
  ax.set_ylabel('zero-shot accuracy (%)')
  ax.set_title('Learnability at f = 0.8, 800 iterations')
  ax.legend(fontsize=8)
  ax = axes[3]
  for b2, colour in zip(summary['beta2'], ('tab:blue', 'tab:red')):
    for k, row in enumerate(summary['beta2'][b2]['per_seed']):
      ax.plot(np.arange(1, len(row['loss_curve']) + 1), row['loss_curve'], color=colour,
              lw=0.5, alpha=0.7, label=f'beta2 = {b2}' if k == 0 else None)
  ax.set_yscale('log')
  ax.set_xlabel('iteration')
  ax.set_ylabel('training loss of the selected batch')
  ax.set_title("Adam's beta2, learnability joint, f = 0.8")
  ax.legend(fontsize=8)
  fig.suptitle(f'JEST variants, captioned Fashion-MNIST (mean ± sample std; dots: each of '
               f'seeds {summary["seeds"]})')
  analysis.save_figure(fig, path, dpi=110)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--main', default='workdirs/jest')
  parser.add_argument('--variants', default='workdirs/jest_variants')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--out', default='results/jest/variants')
  parser.add_argument('--regenerate', action='store_true',
                      help="Redo --out's summary, table and figure from its committed "
                      'summary.json (no workdirs).')
  args = parser.parse_args()
  if args.regenerate:
    regenerate(args.out)
    return
  seeds = [int(s) for s in args.seeds.split(',')]
  summary = analyze({'main': args.main, 'variants': args.variants}, seeds)
  summary['command'] = analysis.command('experiments.jest.variants', args)
  write(summary, args.out)


def regenerate(out: str) -> dict:
  """summary.json, table.md and variants.png in `out` again from its summary.json."""
  with open(os.path.join(out, 'summary.json')) as f:
    summary = restat(json.load(f))
  write(summary, out)
  return summary


def write(summary: dict, out: str):
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  write_table(summary, os.path.join(out, 'table.md'))
  plot(summary, os.path.join(out, 'variants.png'))
  print(open(os.path.join(out, 'table.md')).read())


if __name__ == '__main__':
  main()
