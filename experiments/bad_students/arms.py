r"""Arms against uniform: the driver shared by the Bad Students studies that compare several
selection arms (a policy with its actor and reference) with uniform sampling on the same seeds
and data (the actor-size sweep, RHO vs ClassAct).

An arm is a display name, a workdir name and a config per seed (`Arm`); the frozen references
it scores with are trained first (`Reference`). Runs live at
`<workdir>/noise<n>/<arm.dir>_s<seed>`, the policy comparison's layout, so that studies sharing
a workdir share the runs they have in common (uniform, and learnability with the Ti holdout
reference). The analysis is the policy comparison's (`against_uniform`): the target is
uniform's final mean accuracy, differences are paired by seed with 95% t-intervals, ratios
are given on the seed-mean curves and per seed with "reached in k of n".
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from experiments import analysis
from experiments import sweep
from experiments.bad_students import reproduce_policy_comparison as pc


@dataclasses.dataclass(frozen=True)
class Reference:
  """A frozen reference: trained once into `<workdir>/<name>` from `config()`."""
  name: str
  config: Callable[[], Any]


@dataclasses.dataclass(frozen=True)
class Arm:
  """One arm: `config(seed, reference_dir)` builds its learner config, given `--workdir`'s
  reference directory function (name -> path). `dir`: its runs' directory name (default
  `name`). `cost`: relative, orders the parallel queue."""
  name: str
  config: Callable[[int, Callable[[str], str]], Any]
  dir: str = ''
  cost: float = 1.0

  @property
  def run_name(self) -> str:
    return self.dir or self.name


def run_dir(args, arm: Arm, seed: int) -> str:
  return pc.run_dir(args.workdir, args.noise, arm.run_name, seed)


def learner_runs(args, arms: Sequence[Arm]) -> list[sweep.Run]:
  ref_dir = lambda name: os.path.join(args.workdir, name)

  def config(arm, seed):
    config = arm.config(seed, ref_dir)
    with config.unlocked():
      config.evals.test.log_steps = args.eval_every
    return config

  return [sweep.Run(f'{arm.run_name}_s{seed}', run_dir(args, arm, seed),
                    lambda a=arm, s=seed: config(a, s), cost=arm.cost)
          for seed in args.seeds for arm in arms]


def train(args, module: str, parser, references: Sequence[Reference], arms: Sequence[Arm],
          prepare: Callable[[], None] | None = None):
  """The references and then `prepare()` (in this process), then every arm's runs
  (`--parallel` workers share one queue; a worker, `--queue`, trains runs only)."""
  if not args.queue:
    for ref in references:
      sweep.train_once(ref.config(), os.path.join(args.workdir, ref.name))
    if prepare is not None:
      prepare()
  sweep.run_all(learner_runs(args, arms), parallel=args.parallel, queue=args.queue,
                worker=lambda q: sweep.worker_command(module, parser, args, q, exclude=('out',)),
                queue_root=os.path.join(args.workdir, 'queue'),
                timing=os.path.join(args.workdir, 'timing.jsonl'))


def compare(args, arms: Sequence[Arm]) -> dict | None:
  """Every finished arm against uniform (an arm named 'uniform' must be among `arms`):
  {'target_accuracy', 'uniform_flops_per_step', 'arms': name -> `pc.policy_entry` plus
  'flops_per_step_over_uniform'} and the curves (name -> `pc.curves_of`); None before
  uniform has finished."""
  curves = {arm.name: c for arm in arms if (c := pc.curves_of(
      {s: run_dir(args, arm, s) for s in args.seeds}, args.steps)) is not None}
  if 'uniform' not in curves:
    return None
  return {'summary': summarize(curves, args.noise, args.steps, args.seeds), 'curves': curves}


def summarize(curves: dict, noise: float, steps: int, seeds) -> dict:
  """`compare`'s summary from the curves alone (a results folder's curves.json)."""
  target, entries = pc.against_uniform(curves, noise)
  per_step = _flops_per_step(curves['uniform'])
  for name, entry in entries.items():
    # What a selecting step costs over a uniform one: the overhead a saving must pay back.
    entry['flops_per_step_over_uniform'] = _flops_per_step(curves[name]) / per_step
  return {'target_accuracy': target, 'uniform_flops_per_step': per_step, 'label_noise': noise,
          'steps': steps, 'seeds': seeds, 'std_ddof': pc.DDOF,
          'flops_to_target_ratio_level': pc.HEADLINE_LEVEL, 'arms': entries}


def _flops_per_step(c) -> float:
  return c['flops'][pc.HEADLINE_LEVEL][-1] / c['steps'][-1]


def write(out: str, result: dict, extra: dict | None = None):
  """summary.json (with `extra` merged in) and curves.json."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump({**result['summary'], **(extra or {})}, f, indent=1)
  with open(os.path.join(out, 'curves.json'), 'w') as f:
    json.dump(result['curves'], f)


TABLE_HEADER = ['FLOPs/step vs uniform', 'final accuracy (%)',
                'minus uniform, paired [95% CI]', 'steps to target (ratio)',
                'FLOPs ratio (ref. training excluded)', 'all counted', 'cached ref.',
                'per-seed steps ratio (k/n reached)', 'per-seed FLOPs ratio (k/n reached)',
                'flipped among selected']


def table_cells(entry: dict, name: str, num_seeds: int) -> list[str]:
  """The `TABLE_HEADER` cells of one arm's entry."""
  by_level = entry['flops_to_target_ratio_by_level'] or {}
  per_seed = entry['per_seed_ratios']
  flipped = entry['mean_fraction_flipped_selected']
  return [
      analysis.fmt(entry['flops_per_step_over_uniform']),
      analysis.fmt_stat({'mean': entry['final_accuracy_mean'],
                         'std': entry['final_accuracy_std'], 'n': entry['num_seeds'],
                         'of': num_seeds}, 100),
      '-' if name == 'uniform' else analysis.fmt_interval(entry['final_accuracy_minus_uniform'],
                                                          100),
      'never' if entry['steps_to_target'] is None else
      f'{entry["steps_to_target"]} ({analysis.fmt(entry["steps_to_target_ratio"])})',
      analysis.fmt(entry['flops_to_target_ratio']), analysis.fmt(by_level.get('all')),
      analysis.fmt(by_level.get('cached_reference_scores')),
      analysis.fmt_stat(per_seed['steps_to_target_ratio'], always_count=True),
      analysis.fmt_stat(per_seed['flops_to_target_ratio'], always_count=True),
      '-' if flipped is None else f'{100 * flipped:.1f}%']


def plot_curves(axes, result: dict, styles: dict):
  """Accuracy vs learner steps (axes[0]) and vs total FLOPs, reference training excluded
  (axes[1]): each arm's seed mean with a ± sample-std band; `styles`: name -> plot kwargs."""
  target = result['summary']['target_accuracy']
  for name, c in result['curves'].items():
    per_seed = [p['acc'] for p in c['per_seed'].values()]
    style = dict(styles.get(name, {}))
    line_style = style.pop('ls', '-')
    for ax, x in ((axes[0], c['steps']),
                  (axes[1], np.asarray(c['flops'][pc.HEADLINE_LEVEL]) / 1e12)):
      analysis.plot_seeds(ax, x, per_seed, scale=100, band='std', style=line_style,
                          marker='o', ms=2, label=name, **style)
  lo = min(min(c['acc']) for c in result['curves'].values())
  for ax, xlabel in ((axes[0], 'learner steps'),
                     (axes[1], 'total TFLOPs (reference training excluded)')):
    ax.axhline(100 * target, color='k', ls=':', lw=1, label='uniform final (target)')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('test accuracy (%)')
    ax.set_ylim(100 * max(lo, target - 0.12), None)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=6.5, loc='lower right')


def plot_per_seed(axes, result: dict, names: Sequence[str], styles: dict):
  """Per arm of `names`: each seed's FLOPs ratio to its uniform's final accuracy (axes[0],
  dots, with k/n reached) and the paired final-accuracy difference to uniform with its 95%
  t-interval (axes[1])."""
  arms = result['summary']['arms']
  uniform = arms['uniform']
  for k, name in enumerate(names):
    color = styles.get(name, {}).get('color', f'C{k}')
    per_seed = arms[name]['per_seed_ratios']['per_seed']
    got = [r['flops_to_target_ratio'] for r in per_seed.values()
           if r['flops_to_target_ratio'] is not None]
    axes[0].plot([k] * len(got), got, 'o', color=color, alpha=0.7, ms=5)
    axes[0].annotate(f'{len(got)}/{len(per_seed)}', (k, 0.02), fontsize=7, ha='center',
                     color=color, xycoords=('data', 'axes fraction'))
    d = arms[name]['final_accuracy_minus_uniform']
    if d['low'] is not None:
      axes[1].errorbar([k], [100 * d['mean']], [[100 * (d['mean'] - d['low'])],
                                                 [100 * (d['high'] - d['mean'])]],
                       fmt='o', color=color, capsize=3)
    mine, theirs = arms[name]['final_accuracy_per_seed'], uniform['final_accuracy_per_seed']
    axes[1].plot([k] * len(d['seeds']), [100 * (mine[s] - theirs[s]) for s in d['seeds']], '.',
                 color=color, alpha=0.5)
  axes[0].axhline(1.0, color='k', ls=':', lw=1, label='uniform')
  axes[0].axhline(0.75, color='g', ls='--', lw=1, label="paper's goal (<= 0.75x)")
  axes[0].set_ylabel("FLOPs to each seed's uniform final / uniform's")
  axes[0].set_title('per seed (dots; k/n seeds reached, at the bottom)', fontsize=9)
  axes[0].legend(fontsize=7)
  axes[1].axhline(0.0, color='k', ls=':', lw=1)
  axes[1].set_ylabel('final accuracy minus uniform (points)')
  axes[1].set_title('paired by seed: mean, 95% t-interval, seeds (dots)', fontsize=9)
  for ax in axes:
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7, ha='right')
    ax.grid(alpha=0.3)


def add_arguments(parser, *, noise: float, seeds: str):
  """The options every arm study takes besides the sweep's own."""
  parser.set_defaults(seeds=seeds)
  parser.add_argument('--noise', type=float, default=noise, help='Label-noise rate.')
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--eval_every', type=int, default=50)
