r"""ReLA's Table 1 bar, made strong: BYOL on 100% of the data trained as a careful user would
train it, and the two floors any representation must clear.

  python -m experiments.rela.reproduce_strong_baseline --parallel 2 \
      --workdir workdirs/rela_strong --out results/rela/strong_baseline

The committed Table 1 (results/rela) measures ReLA against BYOL at 100% trained for 6 epochs
at lr 2e-3 with BYOL's strong views: 77.71% linear-probe accuracy, below a logistic regression
on raw pixels. Here:
  1. Floors, on the test split with the Table 1 probe (L-BFGS logistic regression on 10k
     `train` images' standardised features): raw pixels, and the student ViT at random
     initialisation (init seeds --seeds).
  2. Tuning, on --tune_seed (not reported), scored by the probe on the held-out split (fit on
     `train`, evaluated on `holdout`; never the test split): first learning rate x views
     (--lrs x --views: BYOL's strong views or ReLA's mild ones) at 6 epochs, then longer
     schedules (--long_epochs) at the best of those. Every run also probes the held-out split
     every 2 epochs, so a schedule's curve shows whether it still improves. When the best rate
     is the grid's largest, twice it is tried too (6 epochs, the best views).
  3. The strong baseline: BYOL at 100% with the chosen setting on the reporting seeds, probed on
     the test split, set against the committed Table 1 cells of the same seeds (--table1).
Finished runs are skipped and unfinished ones resume: rerun the command after an interruption.

Writes to --out: summary.json (floors per seed; every tuning run's held-out curve and final;
the chosen setting; the strong baseline per seed; paired by seed with 95% t-intervals: strong
minus the committed BYOL-100%, and every committed BYOL cell minus the strong baseline, with
FLOPs with and without the prior's training), table.md and strong_baseline.png.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from big_vision_style import views as views_lib
from experiments import analysis
from experiments import sweep
from experiments.rela import common
from experiments.rela import table1

MODULE = 'experiments.rela.reproduce_strong_baseline'
VAL, TEST = 'eval/val/accuracy', 'eval/probe/accuracy'
VIEWS = {'byol': None, 'mild': 'MILD'}  # None: BYOL's strong views (views.BYOL), the default.
BASE_EPOCHS = 6.0
PROBE_EVERY_EPOCHS = 2
# The probe's L2 weights tried by the validated protocol (Table 1's probe uses 1e-4): at 1e-4
# a probe on the 784 raw pixels overfits its 10k examples (fit 96.8%, test 79.7%).
PROBE_L2 = (1e-4, 1e-3, 1e-2, 1e-1)
TABLE1_L2 = 1e-4
END = 1_000_000  # Evaluate once, at the last step.
DDOF = analysis.SAMPLE


def _config(args, seed, lr, views, epochs, *, validate):
  config = table1.get_config(f'objective=byol,prior=none,ratio=1.0,seed={seed},epochs={epochs},'
                             f'lr={lr},root={args.workdir}')
  with config.unlocked():
    if VIEWS[views]:
      config.byol.views = dataclasses.asdict(getattr(views_lib, VIEWS[views]))
    steps_per_epoch = 50_000 // config.input.batch_size
    if validate:  # The held-out split: never the student's training data, not the test split.
      config.evals.val = dict(config.evals.probe, split='holdout',
                              log_steps=PROBE_EVERY_EPOCHS * steps_per_epoch)
      del config.evals.probe
    else:  # The validated probe protocol (as the floors'): every L2 weight on both splits.
      for k, l2 in enumerate(PROBE_L2):
        for split in ('holdout', 'test'):
          config.evals[f'{split}_l2_{k}'] = dict(config.evals.probe, split=split, l2=l2,
                                                 log_steps=END)
  return config


def probe_accuracies(final: dict) -> dict:
  """{l2: {'holdout': acc, 'test': acc}} from a strong run's final row."""
  return {f'{l2:g}': {split: final[f'eval/{split}_l2_{k}/accuracy']
                      for split in ('holdout', 'test')} for k, l2 in enumerate(PROBE_L2)}


def _name(lr, views, epochs):
  return f'lr{lr:g}_{views}_e{epochs:g}'


def tune_dir(args, lr, views, epochs):
  return os.path.join(args.workdir, 'tune', f'{_name(lr, views, epochs)}_s{args.tune_seed}')


def main_dir(args, seed):
  return os.path.join(args.workdir, 'strong', f's{seed}')


def _tune_run(args, lr, views, epochs):
  return sweep.Run(f'tune_{_name(lr, views, epochs)}', tune_dir(args, lr, views, epochs),
                   lambda: _config(args, args.tune_seed, lr, views, epochs, validate=True),
                   cost=epochs)


def _val(args, lr, views, epochs) -> float | None:
  final = sweep.final_row(tune_dir(args, lr, views, epochs))
  return None if final is None else final[VAL]


def short_runs(args):
  return [_tune_run(args, lr, v, BASE_EPOCHS) for lr in args.lrs for v in args.views]


def best_short(args):
  scores = {(lr, v): _val(args, lr, v, BASE_EPOCHS) for lr in args.lrs for v in args.views}
  if any(s is None for s in scores.values()):
    raise SystemExit('The 6-epoch tuning runs have not finished: rerun without --phase.')
  return max(scores, key=scores.get)


def long_settings(args):
  """The best 6-epoch setting at --long_epochs, and, when the best rate is the largest tried
  (the grid's edge), twice that rate at 6 epochs with the same views."""
  lr, views = best_short(args)
  out = [(lr, views, e) for e in args.long_epochs]
  if lr == max(args.lrs):
    out.append((2 * lr, views, BASE_EPOCHS))
  return out


def long_runs(args):
  return [_tune_run(args, *setting) for setting in long_settings(args)]


def chosen(args):
  """The tuning run with the best held-out probe (fewer epochs on a tie): (lr, views, epochs)."""
  candidates = [(lr, v, BASE_EPOCHS) for lr in args.lrs for v in args.views] + long_settings(args)
  scores = {c: _val(args, *c) for c in candidates}
  if any(s is None for s in scores.values()):
    raise SystemExit('The long tuning runs have not finished: rerun without --phase.')
  return max(scores, key=lambda c: (scores[c], -c[2]))


def strong_runs(args):
  lr, views, epochs = chosen(args)
  return [sweep.Run(f'strong_s{seed}', main_dir(args, seed),
                    lambda s=seed: _config(args, s, lr, views, epochs, validate=False),
                    cost=epochs) for seed in args.seeds]


PHASES = {'short': short_runs, 'long': long_runs, 'strong': strong_runs}


def train_runs(args):
  sweep.run_phases(args, PHASES, module=MODULE, parser=build_parser())


# ----- Floors -----

def floors(args) -> dict:
  """representation ('raw_pixels', 'random_student') -> probe L2 weight (`PROBE_L2`, as
  str) -> split ('holdout', 'test') -> seed -> probe accuracy (the probe's fit subset seeded
  by the seed; the student's init too); computed once into the workdir (at the analysis: the
  runs need none of it)."""
  path = os.path.join(args.workdir, f'floors_s{"-".join(map(str, args.seeds))}.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  import jax  # pylint: disable=g-import-not-at-top
  from big_vision_style import datasets, preprocess, priors, sharding  # pylint: disable=g-import-not-at-top,g-multiple-import
  from big_vision_style.evaluators import linear_probe  # pylint: disable=g-import-not-at-top
  config = table1.get_config(f'objective=byol,prior=none,ratio=1.0,root={args.workdir}')
  probe = dict(config.evals.probe)
  mesh = sharding.make_mesh()
  pp = preprocess.make(**dict(config.input.pp))
  fit = datasets.get_source(config.data, probe['fit_split'])
  sources = {split: datasets.get_source(config.data, split) for split in ('holdout', 'test')}
  shape = (1,) + np.shape(pp(sources['test'][0])['image'])
  out = {'raw_pixels': {}, 'random_student': {}}
  for seed in args.seeds:
    model, params, _ = priors.load(dict(kind='random', model_name=config.model_name,
                                        model=dict(common.LOCAL_STUDENT), seed=seed), shape)
    features = {
        'raw_pixels': (lambda p, images: images.reshape(images.shape[0], -1), {}),
        'random_student': (lambda p, images: model.apply({'params': p}, images)[1]['pre_logits'],
                           params)}
    for name, (features_fn, p) in features.items():
      for l2 in PROBE_L2:
        for split, source in sources.items():
          ev = linear_probe.Evaluator(features_fn, source=source, fit_source=fit,
                                      preprocess_fn=pp, mesh=mesh,
                                      batch_size=probe['batch_size'],
                                      fit_examples=probe['fit_examples'], l2=l2, seed=seed)
          out[name].setdefault(f'{l2:g}', {}).setdefault(split, {})[str(seed)] = dict(
              ev.run(p))['accuracy']
  if jax.process_index() == 0:
    analysis.write_text(path, [json.dumps(out, indent=1)])
  return out


def validated(by_l2: dict) -> dict:
  """seed -> test accuracy at the L2 weight with the best held-out accuracy, per seed, from
  {l2: {'holdout': {seed: acc}, 'test': {seed: acc}}}."""
  seeds = next(iter(by_l2.values()))['test']
  best = {s: max(by_l2, key=lambda l2: by_l2[l2]['holdout'][s]) for s in seeds}
  return {s: by_l2[best[s]]['test'][s] for s in seeds}


# ----- Analysis -----

def analyze(args):
  raw_floors = floors(args)
  # Per representation: the Table 1 probe (L2 1e-4) and the validated one, seed -> accuracy.
  floor = {name: {'table1_probe': by_l2[f'{TABLE1_L2:g}']['test'],
                  'validated_probe': validated(by_l2)} for name, by_l2 in raw_floors.items()}
  out = {'tune_seed': args.tune_seed, 'seeds': args.seeds, 'std_ddof': DDOF,
         'probe_l2': list(PROBE_L2), 'floors': floor, 'floors_by_l2': raw_floors}
  tuning = {}
  settings = [(lr, v, BASE_EPOCHS) for lr in args.lrs for v in args.views]
  try:
    settings += long_settings(args)
  except SystemExit:  # The 6-epoch runs have not all finished.
    pass
  for lr, v, e in settings:
    path = tune_dir(args, lr, v, e)
    if sweep.final_row(path) is not None:
      tuning[_name(lr, v, e)] = {'lr': lr, 'views': v, 'epochs': e,
                                 'val_accuracy': sweep.final_row(path)[VAL],
                                 'curve': analysis.curve(path, {'step': 'step', 'accuracy': VAL},
                                                          VAL)}
  out['tuning'] = tuning
  try:
    lr, views, epochs = chosen(args)
  except SystemExit as e:
    print(e)
    return _write(args, out)
  out['chosen'] = {'lr': lr, 'views': views, 'epochs': epochs}
  finals = {str(s): r for s in args.seeds if (r := sweep.final_row(main_dir(args, s)))}
  if not finals:
    return _write(args, out)
  by_l2 = {}
  for seed, final in finals.items():
    for l2, splits in probe_accuracies(final).items():
      for split, acc in splits.items():
        by_l2.setdefault(l2, {}).setdefault(split, {})[seed] = acc
  strong = {'table1_probe': {s: f[TEST] for s, f in finals.items()},
            'validated_probe': validated(by_l2)}
  out['strong'] = {'by_l2': by_l2, 'flops_total': float(np.mean(
      [f['flops/total'] for f in finals.values()]))}
  for protocol, per_seed in strong.items():
    out['strong'][protocol] = {**analysis.seed_stat(list(per_seed.values()), ddof=DDOF),
                               'per_seed': per_seed,
                               **{f'minus_{name}': analysis.paired_by_seed(per_seed, f[protocol])
                                  for name, f in floor.items()}}
  with open(args.table1) as f:
    t1 = json.load(f)
  out['strong']['table1_probe']['minus_table1_byol_100'] = analysis.paired_by_seed(
      strong['table1_probe'], t1['byol']['none']['1.0']['per_seed'])
  out['table1_byol'] = {
      f'{prior}@{budget}': {
          'mean': cell['mean'], 'std': cell['std'], 'per_seed': cell['per_seed'],
          'flops_total': cell.get('flops_total'),
          'flops_total_free_prior': cell.get('flops_total_free_prior'),
          'minus_strong': analysis.paired_by_seed(cell['per_seed'], strong['table1_probe'])}
      for prior, budgets in t1['byol'].items() for budget, cell in budgets.items()}
  return _write(args, out)


def _write(args, out):
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump(out, f, indent=1)
  lines = _table(out, args)
  analysis.write_text(os.path.join(args.out, 'table.md'), lines)
  _plot(out, args)
  print('\n'.join(lines))
  return out


def _stat(per_seed):
  return analysis.fmt_stat(analysis.seed_stat(list(per_seed.values()), ddof=DDOF), 100)


def _table(out, args) -> list[str]:
  lines = ['# ReLA Table 1: a strong BYOL-100% baseline and two floors (Fashion-MNIST)', '',
           'Linear-probe accuracy (%) on the test split, mean ± sample std over seeds '
           f'{args.seeds}; differences paired by seed [95% t-interval]. Probes: "Table 1" is '
           f'the committed table\'s (L2 weight {TABLE1_L2:g}); "validated" picks the L2 weight '
           f'from {[f"{l2:g}" for l2 in PROBE_L2]} on the held-out split, per seed.', '',
           '## Floors', '']
  rows = [[name.replace('_', ' '), _stat(f['table1_probe']), _stat(f['validated_probe'])]
          for name, f in out['floors'].items()]
  lines += analysis.markdown_table(['representation', 'Table 1 probe (%)', 'validated probe (%)'],
                                   rows, 'lrr')
  lines += ['', f'## Tuning (seed {args.tune_seed}, held-out split, Table 1 probe)', '']
  rows = [[f'{t["lr"]:g}', t['views'], f'{t["epochs"]:g}', f'{100 * t["val_accuracy"]:.2f}',
           ' '.join(f'{100 * a:.1f}' for a in t['curve']['accuracy'])]
          for t in out['tuning'].values()]
  lines += analysis.markdown_table(['lr', 'views', 'epochs', 'held-out probe (%)',
                                    f'curve (every {PROBE_EVERY_EPOCHS} epochs)'], rows, 'lllrl')
  if 'strong' in out:
    c, s = out['chosen'], out['strong']
    lines += ['', f'## Strong baseline: BYOL at 100%, lr {c["lr"]:g}, {c["views"]} views, '
              f'{c["epochs"]:g} epochs ({s["flops_total"] / 1e12:.2f} TFLOPs)', '']
    rows = []
    for protocol in ('table1_probe', 'validated_probe'):
      p = s[protocol]
      rows.append([protocol.replace('_', ' '), analysis.fmt_stat(p, 100),
                   analysis.fmt_interval(p['minus_table1_byol_100'], 100)
                   if 'minus_table1_byol_100' in p else '-',
                   *[analysis.fmt_interval(p[f'minus_{name}'], 100) for name in out['floors']]])
    lines += analysis.markdown_table(
        ['probe', 'accuracy (%)', 'minus committed BYOL-100% (6 epochs, lr 2e-3)',
         *[f'minus {name.replace("_", " ")}' for name in out['floors']]], rows, 'lrrrr')
    lines += ['', '## The committed Table 1 BYOL cells against the strong baseline (Table 1 '
              'probe)', '']
    rows = []
    for name, cell in out['table1_byol'].items():
      prior, budget = name.split('@')
      fl, free = cell['flops_total'], cell['flops_total_free_prior']
      rows.append([prior, f'{100 * float(budget):g}%',
                   analysis.fmt_stat({'mean': cell['mean'], 'std': cell['std'],
                                      'n': len(cell['per_seed']),
                                      'of': len(cell['per_seed'])}, 100),
                   analysis.fmt_interval(cell['minus_strong'], 100),
                   '-' if fl is None else f'{fl / s["flops_total"]:.2f}',
                   '-' if free is None else f'{free / s["flops_total"]:.2f}'])
    lines += analysis.markdown_table(
        ['prior', 'data', 'probe accuracy (%)', 'minus strong baseline [95% CI]',
         'FLOPs / strong baseline (prior training counted)', 'same, prior free'], rows,
        'llrrrr')
  return lines + ['', f'Produced by `{analysis.command(MODULE, args)}`.']


def _plot(out, args):
  plt = analysis.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(14, 4.6))
  ax = axes[0]
  for k, (name, t) in enumerate(out['tuning'].items()):
    epochs = np.asarray(t['curve']['step']) * 128 / 50_000
    ax.plot(epochs, 100 * np.asarray(t['curve']['accuracy']), 'o-', ms=3, label=name,
            color=f'C{k}')
  ax.set_xlabel('epochs')
  ax.set_ylabel('held-out probe accuracy (%)')
  ax.set_title(f'tuning, seed {args.tune_seed} (held-out split)', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  ax = axes[1]
  bars = {f'floor: {n.replace("_", " ")}': v['table1_probe'] for n, v in out['floors'].items()}
  # The floor a tuned probe gets from raw pixels (an L2 weight chosen on the held-out split).
  bars['floor: raw pixels, validated probe'] = out['floors']['raw_pixels']['validated_probe']
  if 'table1_byol' in out:
    bars['Table 1 BYOL 100%'] = out['table1_byol']['none@1.0']['per_seed']
    bars['Table 1 BYOL+ReLA holdout 50%'] = out['table1_byol']['holdout@0.5']['per_seed']
  if 'strong' in out:
    bars['strong BYOL 100%'] = out['strong']['table1_probe']['per_seed']
  for k, (name, per_seed) in enumerate(bars.items()):
    values = 100 * np.asarray(list(per_seed.values()))
    ax.bar(k, values.mean(), color=f'C{k}', alpha=0.5)
    if len(values) > 1:
      ax.errorbar(k, values.mean(), values.std(ddof=DDOF), color='k', capsize=4)
    ax.plot([k] * len(values), values, 'k.', ms=6)
  ax.set_xticks(range(len(bars)), list(bars), rotation=20, fontsize=7, ha='right')
  ax.set_ylabel('test linear-probe accuracy (%)')
  lo = min(100 * min(v.values()) for v in bars.values())
  ax.set_ylim(lo - 5, None)
  ax.set_title('Table 1 probe (but one floor): floors, Table 1 cells, the strong baseline; '
               'mean ± sample std, seeds (dots)', fontsize=8)
  ax.grid(alpha=0.3, axis='y')
  fig.suptitle('ReLA on Fashion-MNIST: how strong is the 100% BYOL bar?')
  analysis.save_figure(fig, os.path.join(args.out, 'strong_baseline.png'), dpi=110)


def build_parser():
  parser = sweep.make_parser(__doc__, workdir='workdirs/rela_strong',
                             out='results/rela/strong_baseline')
  parser.add_argument('--lrs', default='0.001,0.002,0.004')
  parser.add_argument('--views', default='byol,mild')
  parser.add_argument('--long_epochs', default='12,24')
  parser.add_argument('--tune_seed', type=int, default=10)
  parser.add_argument('--table1', default='results/rela/summary.json',
                      help='The committed Table 1 summary the strong baseline is set against.')
  parser.add_argument('--phase', default='all', choices=('all', *PHASES),
                      help='Which stage to train (workers get theirs from the parent).')
  return parser


def parse_args(argv=None):
  parser = build_parser()
  args = sweep.parse(parser, argv)
  args.lrs = [float(x) for x in str(args.lrs).split(',')]
  args.views = str(args.views).split(',')
  args.long_epochs = [float(x) for x in str(args.long_epochs).split(',')]
  for v in args.views:
    if v not in VIEWS:
      parser.error(f'--views: {v!r} is not one of {",".join(VIEWS)}.')
  return args


def main(argv=None):
  sweep.drive(parse_args(argv), train_runs, analyze)


if __name__ == '__main__':
  main()
