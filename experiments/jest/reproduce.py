r"""Local reproduction of the JEST paper's Figs. 2-5 on captioned Fashion-MNIST, and its analysis.

  python -m experiments.jest.reproduce --workdir workdirs/jest --out results/jest
  python -m experiments.jest.reproduce --runs core --seeds 0        # the reduced set
  python -m experiments.jest.reproduce --analyze_only               # tables and plots only

1. References (experiments/jest/reference.py): curated (the clean `holdout` pool) and uncurated
   (the learner's noisy `train` pool), same steps; each one's embeddings of the train pool are
   cached once (tools/reference_embeddings.py): every selecting run uses the cache.
2. Learner runs (experiments/jest/filter_ratio.py), per seed: the i.i.d. baseline; filter
   ratios f in {0.5, 0.8, 0.9} x joint / independent x learnability / easy-reference; at
   f = 0.8 Flexi-JEST and JEST with the uncurated reference. `--runs core` keeps the uniform
   baseline and f = 0.8 (joint and independent learnability, joint easy-reference, Flexi, the
   uncurated reference). Finished runs are skipped (final.json); others resume.
3. Fig. 2 analogue: on one super-batch (B = 640) scored by the uniform run's learner and the
   curated reference, the learnability of the sub-batch chosen by the chunked sampler vs its
   number of chunks, against a brute-force Gibbs sampler vs its iterations; and vs f.
4. Fig. 4 analogue: FLOPs per iteration (XLA cost analysis, from the runs' per-step counters)
   of i.i.d., JEST with a live reference (a 2-step run), JEST with the cache, Flexi-JEST, as
   percentages of i.i.d.; with the learner's scoring forward reused for its gradient step
   (derived: the forward of the b chosen pairs is subtracted).
Writes to --out: summary.json (per run: final zero-shot accuracy and retrieval, iterations and
FLOPs to reach the uniform baseline's final zero-shot accuracy as ratios to uniform), table.md,
fig2_sampler.png, fig3_filter_ratio.png, fig4_flops.png and curves.json (the raw curves).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import matplotlib

matplotlib.use('Agg')
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from big_vision_style import checkpointing  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import datasets  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import embedding_cache  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import image_text  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import jest  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import jest_gibbs  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import preprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from big_vision_style.tools import reference_embeddings  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.jest import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.jest import filter_ratio  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.jest import reference  # pylint: disable=g-import-not-at-top,wrong-import-position

METRIC = 'eval/zeroshot/accuracy'
REFERENCES = ('curated', 'uncurated')


def all_runs() -> dict[str, str]:
  """Run name -> filter_ratio.py args (without seed, reference and cache)."""
  runs = {'uniform': 'policy=uniform'}
  for f in (0.5, 0.8, 0.9):
    for policy in ('learnability', 'easy_reference'):
      for method in ('joint', 'independent'):
        runs[f'{policy}_{method}_f{f}'] = f'policy={policy},method={method},filter_ratio={f}'
  runs['flexi_learnability_joint_f0.8'] = 'policy=learnability,filter_ratio=0.8,flexi=True'
  runs['uncurated_ref_learnability_joint_f0.8'] = 'policy=learnability,filter_ratio=0.8'
  return runs


CORE = ('uniform', 'learnability_joint_f0.8', 'learnability_independent_f0.8',
        'easy_reference_joint_f0.8', 'flexi_learnability_joint_f0.8',
        'uncurated_ref_learnability_joint_f0.8')


def reference_dir(args, pool):
  return os.path.join(args.workdir, f'reference_{pool}')


def cache_path(args, pool):
  return os.path.join(args.workdir, f'reference_{pool}', 'train_embeddings.npz')


def run_config(args, name, seed, steps=None):
  arg = all_runs()[name]
  pool = 'uncurated' if name.startswith('uncurated_ref') else 'curated'
  if name != 'uniform':
    arg += (f',reference=cached,reference_workdir={reference_dir(args, pool)},'
            f'embedding_cache={cache_path(args, pool)}')
  config = filter_ratio.get_config(f'{arg},seed={seed},steps={steps or args.steps}')
  for ev in config.evals.values():
    ev.log_steps = args.eval_every
  return config


def prepare_references(args):
  for pool in REFERENCES:
    if pool == 'uncurated' and not any(r.startswith('uncurated') for r in args.runs):
      continue
    final = train.train_once(reference.get_config(f'pool={pool},epochs={args.ref_epochs}'),
                             reference_dir(args, pool))
    logging.info('Reference %s: zero-shot %.4f.', pool, final[METRIC])
    if not os.path.exists(cache_path(args, pool)):
      config = filter_ratio.get_config(f'reference_workdir={reference_dir(args, pool)}')
      embedding_cache.save(cache_path(args, pool), reference_embeddings.compute(config))


def run_all(args):
  t0 = time.time()
  prepare_references(args)
  for seed in args.seeds:
    for name in args.runs:
      t = time.time()
      final = train.train_once(run_config(args, name, seed),
                               os.path.join(args.workdir, 'runs', f'{name}_s{seed}'))
      logging.info('%s seed %d: zero-shot %.4f (%.0fs, total %.0fs).', name, seed,
                   final[METRIC], time.time() - t, time.time() - t0)


# ----- Fig. 2: the sampler against brute-force Gibbs -----

def sampler_quality(args) -> dict:
  """Learnability (per pair, sum of S over the b x b chosen pairs / b) on one super-batch."""
  learner_dir = os.path.join(args.workdir, 'runs', f'uniform_s{args.seeds[0]}')
  config = run_config(args, 'learnability_joint_f0.8', args.seeds[0])
  model = models.get_model('two_towers').Model(**config.model)
  learner, _ = checkpointing.load_trained_params(learner_dir)
  ref, _ = checkpointing.load_trained_params(reference_dir(args, 'curated'))
  source = datasets.get_source(config.data, 'train')
  pp = preprocess.make(**dict(config.input.pp))
  size = 640
  rows = [pp(source[i]) for i in np.random.default_rng(0).choice(len(source), size, False)]
  images = jnp.asarray(np.stack([r['image'] for r in rows]))
  texts = jnp.asarray(np.stack([r['text'] for r in rows]))
  emb_l = image_text.embed(model, learner, images, texts)
  emb_r = image_text.embed(model, ref, images, texts)
  scores = jest.dense_score_matrix(emb_l, emb_r, policy='learnability')
  mesh = sharding.make_mesh(1)
  out = {'super_batch': size, 'gain': float(config.selection.gain)}
  draws = 4
  logging.info('Fig. 2: sampling sub-batches of one super-batch of %d.', size)

  samplers = {}

  def chunked(b, n, key):  # One compiled sampler per (b, N), reused across draws.
    if (b, n) not in samplers:
      samplers[b, n] = jax.jit(lambda k, b=b, n=n: jest.sample_joint(
          emb_l, emb_r, num_selected=b, num_chunks=n, rng=k, mesh=mesh,
          gain=config.selection.gain).indices)
    return samplers[b, n](key)

  def mean_learnability(fn, b):
    return float(np.mean([jest_gibbs.learnability(scores, fn(jax.random.key(k))) / b
                          for k in range(draws)]))

  b = 128
  out['chunks'] = {str(n): mean_learnability(lambda k, n=n: chunked(b, n, k), b)
                   for n in (1, 2, 4, 8, 16, 32, 64, 128)}
  out['independent'] = mean_learnability(lambda k: jest.select_independent(
      emb_l, emb_r, num_selected=b, rng=k, gain=config.selection.gain), b)
  out['uniform'] = mean_learnability(
      lambda k: jax.random.permutation(k, size)[:b], b)
  sweeps = 40
  _, trace = jest_gibbs.gibbs_sample(scores, b, jax.random.key(0), num_sweeps=sweeps,
                                     gain=config.selection.gain)
  out['gibbs'] = {'iterations': [(s + 1) * b for s in range(sweeps)],
                  'learnability': (np.asarray(trace) / b).tolist()}
  out['vs_filter_ratio'] = {}
  for f in (0.0, 0.5, 0.8, 0.9):
    sub = int(round(size * (1 - f)))
    sub -= sub % 16
    out['vs_filter_ratio'][str(f)] = {
        'joint': mean_learnability(lambda k, s=sub: chunked(s, 16, k), sub),
        'independent': mean_learnability(lambda k, s=sub: jest.select_independent(
            emb_l, emb_r, num_selected=s, rng=k, gain=config.selection.gain), sub),
        'b': sub}
  return out


# ----- Fig. 4: FLOPs per iteration -----

def per_step_flops(workdir) -> dict:
  """Per-iteration FLOPs by category: the difference of the last two logged rows."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  a, b = rows[-2], rows[-1]
  steps = b['step'] - a['step']
  return {k[len('flops/'):]: (b[k] - a[k]) / steps for k in
          ('flops/learner_train', 'flops/scoring', 'flops/reference_scoring',
           'flops/actor_train')}


def flops_per_iteration(args) -> dict:
  seed = args.seeds[0]
  live_dir = os.path.join(args.workdir, 'flops_live_reference')
  live = run_config(args, 'learnability_joint_f0.8', seed, steps=4)
  with live.unlocked():
    live.selection.reference = 'pretrained'
    live.log_training_steps = 2
    live.evals = {}
  train.train_once(live, live_dir)
  measured = {'iid': per_step_flops(os.path.join(args.workdir, 'runs', f'uniform_s{seed}')),
              'jest_live_reference': per_step_flops(live_dir),
              'jest_cached_reference': per_step_flops(
                  os.path.join(args.workdir, 'runs', f'learnability_joint_f0.8_s{seed}'))}
  flexi_dir = os.path.join(args.workdir, 'runs', f'flexi_learnability_joint_f0.8_s{seed}')
  if not os.path.exists(os.path.join(flexi_dir, 'final.json')):  # A 4-step run measures it.
    flexi_dir = os.path.join(args.workdir, 'flops_flexi')
    flexi = run_config(args, 'flexi_learnability_joint_f0.8', seed, steps=4)
    with flexi.unlocked():
      flexi.log_training_steps = 2
      flexi.evals = {}
    train.train_once(flexi, flexi_dir)
  measured['flexi_jest_cached_reference'] = per_step_flops(flexi_dir)
  iid = sum(measured['iid'].values())
  b, super_b = live.input.batch_size, live.input.batch_size * 5
  out = {}
  for key, cats in measured.items():
    total = sum(cats.values())
    row = {'flops': total, 'percent_of_iid': 100 * total / iid, 'by_category': cats}
    if key != 'iid' and not key.startswith('flexi'):
      # Reusing the scoring forward: the b chosen pairs' forward is already done.
      reuse = total - cats['scoring'] * b / super_b
      row.update(flops_with_reuse=reuse, percent_of_iid_with_reuse=100 * reuse / iid)
    out[key] = row
  return out


# ----- Analysis -----

def curve(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  # One row per step, in step order: a run resumed, or (once) trained by two sweeps at the
  # same time, may have logged a step twice.
  rows = sorted({r['step']: r for r in rows if METRIC in r}.values(), key=lambda r: r['step'])
  return {k: [r[key] for r in rows] for k, key in (
      ('step', 'step'), ('zeroshot', METRIC), ('i2t', 'eval/retrieval/i2t_recall_at_1'),
      ('t2i', 'eval/retrieval/t2i_recall_at_1'), ('flops', 'flops/total_pretrained_reference'),
      ('corrupted_selected', 'selection/corrupted_selected'))
      if all(key in r for r in rows)}


def retrieval(c):
  """Mean of image-to-text and text-to-image recall@1, per evaluation."""
  return [(a + b) / 2 for a, b in zip(c['i2t'], c['t2i'])]


TARGETS = {'zeroshot': lambda c: c['zeroshot'], 'retrieval': retrieval}


def reach(c, target, metric='zeroshot'):
  """(step, FLOPs) of the first evaluation at or above `target`; None if never."""
  for step, acc, fl in zip(c['step'], TARGETS[metric](c), c['flops']):
    if acc >= target - 1e-9:
      return step, fl
  return None


def analyze(args, fig2=None, fig4=None) -> dict:
  curves = {}
  for name in all_runs():
    per_seed = {}
    for seed in args.seeds:
      workdir = os.path.join(args.workdir, 'runs', f'{name}_s{seed}')
      if os.path.exists(os.path.join(workdir, 'final.json')):
        per_seed[str(seed)] = curve(workdir)
    if per_seed:
      curves[name] = per_seed
  if 'uniform' not in curves:
    raise SystemExit('The uniform baseline has not finished: run without --analyze_only.')
  summary = {'metric': METRIC, 'seeds': sorted({s for c in curves.values() for s in c}),
             'runs': {}}
  for name, per_seed in curves.items():
    rows = []
    for seed, c in per_seed.items():
      base = curves['uniform'].get(seed)
      if base is None:
        continue
      row = {'final': c['zeroshot'][-1], 'i2t': c['i2t'][-1], 't2i': c['t2i'][-1],
             'corrupted_selected': (float(np.mean(c['corrupted_selected']))
                                    if 'corrupted_selected' in c else None)}
      for metric, values in TARGETS.items():  # The uniform run's final value, as the target.
        target = values(base)[-1]
        mine, theirs = reach(c, target, metric), reach(base, target, metric)
        suffix = '' if metric == 'zeroshot' else '_retrieval'
        row[f'iterations_ratio{suffix}'] = mine[0] / theirs[0] if mine else None
        row[f'flops_ratio{suffix}'] = mine[1] / theirs[1] if mine else None
      rows.append(row)

    def stat(key):
      vals = [r[key] for r in rows if r[key] is not None]
      return {'mean': float(np.mean(vals)) if vals else None,
              'std': float(np.std(vals)) if vals else None, 'n': len(vals),
              'of': len(rows)}

    summary['runs'][name] = {k: stat(k) for k in (
        'final', 'i2t', 't2i', 'iterations_ratio', 'flops_ratio', 'iterations_ratio_retrieval',
        'flops_ratio_retrieval', 'corrupted_selected')}
  if fig2:
    summary['fig2_sampler'] = fig2
  if fig4:
    summary['fig4_flops_per_iteration'] = fig4
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(args.out, 'curves.json'), 'w') as f:
    json.dump(curves, f)
  write_table(args, summary)
  plot(args, summary, curves)
  return summary


def _fmt(s, pct=False):
  if s['mean'] is None:
    return f'never ({s["of"]} seeds)'
  scale = 100 if pct else 1
  return f'{scale * s["mean"]:.2f} ± {scale * s["std"]:.2f}' + (
      f' ({s["n"]}/{s["of"]})' if s['n'] != s['of'] else '')


def write_table(args, summary):
  lines = ['Ratios: iterations (FLOPs) to reach the uniform run\'s final value, as multiples of '
           'the uniform run\'s own; "never" if not reached within the run.', '',
           '| run | zero-shot (%) | I2T R@1 (%) | T2I R@1 (%) | zero-shot: iterations | '
           'zero-shot: FLOPs | retrieval: iterations | retrieval: FLOPs | corrupted pairs '
           'selected (%) |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for name, r in summary['runs'].items():
    corrupted = _fmt(r['corrupted_selected'], True) if r['corrupted_selected']['n'] else '-'
    lines.append(f'| {name} | {_fmt(r["final"], True)} | {_fmt(r["i2t"], True)} | '
                 f'{_fmt(r["t2i"], True)} | {_fmt(r["iterations_ratio"])} | '
                 f'{_fmt(r["flops_ratio"])} | {_fmt(r["iterations_ratio_retrieval"])} | '
                 f'{_fmt(r["flops_ratio_retrieval"])} | {corrupted} |')
  if 'fig4_flops_per_iteration' in summary:
    lines += ['', '| per iteration | GFLOPs | % of i.i.d. | % with the scoring forward reused |',
              '|---|---:|---:|---:|']
    for name, r in summary['fig4_flops_per_iteration'].items():
      reuse = r.get('percent_of_iid_with_reuse')
      lines.append(f'| {name} | {r["flops"] / 1e9:.3f} | {r["percent_of_iid"]:.0f} | '
                   f'{"-" if reuse is None else f"{reuse:.0f}"} |')
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def plot(args, summary, curves):
  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  for name, per_seed in curves.items():
    c = per_seed[sorted(per_seed)[0]]
    style = '-' if 'joint' in name or name == 'uniform' else '--'
    for row, values in enumerate((c['zeroshot'], retrieval(c))):
      axes[row, 0].plot(c['step'], 100 * np.asarray(values), style, label=name)
      axes[row, 1].plot(np.asarray(c['flops']) / 1e12, 100 * np.asarray(values), style,
                        label=name)
  for row, label in enumerate(('zero-shot accuracy (%), Fashion-MNIST test',
                               'retrieval recall@1 (%), mean of I2T and T2I')):
    axes[row, 0].set_xlabel('learner iterations')
    axes[row, 1].set_xlabel('total TFLOPs (reference training excluded, cache pass included)')
    for ax in axes[row]:
      ax.set_ylabel(label)
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f'JEST Fig. 3 analogue (seed {sorted(next(iter(curves.values())))[0]})')
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, 'fig3_filter_ratio.png'), dpi=120)
  plt.close(fig)
  if 'fig2_sampler' in summary:
    s = summary['fig2_sampler']
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    ax.semilogx([int(n) for n in s['chunks']], list(s['chunks'].values()), 'o-',
                label='JEST chunked sampler (x: chunks)')
    ax.semilogx(s['gibbs']['iterations'], s['gibbs']['learnability'], '-',
                label='Gibbs (x: single-slot updates)')
    ax.axhline(s['independent'], color='gray', ls='--', label='independent')
    ax.axhline(s['uniform'], color='k', ls=':', label='uniform')
    ax.set_xlabel('sampler iterations')
    ax.set_ylabel('learnability of the sub-batch (per pair)')
    ax.legend(fontsize=8)
    ax = axes[1]
    fs = sorted(s['vs_filter_ratio'], key=float)
    for method in ('joint', 'independent'):
      ax.plot([float(f) for f in fs], [s['vs_filter_ratio'][f][method] for f in fs], 'o-',
              label=method)
    ax.set_xlabel('filter ratio f')
    ax.set_ylabel('learnability of the sub-batch (per pair)')
    ax.legend()
    for a in axes:
      a.grid(alpha=0.3)
    fig.suptitle(f'JEST Fig. 2 analogue: one super-batch of {s["super_batch"]}')
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'fig2_sampler.png'), dpi=120)
    plt.close(fig)
  if 'fig4_flops_per_iteration' in summary:
    s = summary['fig4_flops_per_iteration']
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(s)
    ax.bar(np.arange(len(names)) - 0.2, [s[n]['percent_of_iid'] for n in names], 0.4,
           label='measured (scoring forward not reused)')
    ax.bar(np.arange(len(names)) + 0.2,
           [s[n].get('percent_of_iid_with_reuse', s[n]['percent_of_iid']) for n in names], 0.4,
           label='scoring forward reused (derived)')
    ax.set_xticks(np.arange(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel('FLOPs per iteration (% of i.i.d.)')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis='y')
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'fig4_flops.png'), dpi=120)
    plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='workdirs/jest')
  parser.add_argument('--out', default='results/jest')
  parser.add_argument('--bench_out', default='results/bench')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--runs', default='all', help="'all', 'core' or comma-separated names.")
  parser.add_argument('--steps', type=int, default=1000)
  parser.add_argument('--eval_every', type=int, default=100)
  parser.add_argument('--ref_epochs', type=float, default=30.0)
  parser.add_argument('--analyze_only', action='store_true')
  args = parser.parse_args()
  args.seeds = [int(s) for s in args.seeds.split(',')]
  args.runs = (list(all_runs()) if args.runs == 'all' else list(CORE) if args.runs == 'core'
               else args.runs.split(','))
  train.setup_script_logging()
  if not args.analyze_only:
    run_all(args)
  fig2 = sampler_quality(args)
  logging.info('Fig. 2 done; measuring FLOPs per iteration (Fig. 4).')
  fig4 = flops_per_iteration(args)
  summary = analyze(args, fig2, fig4)
  os.makedirs(args.bench_out, exist_ok=True)  # The per-iteration FLOP benchmark, on its own.
  with open(os.path.join(args.bench_out, 'jest_flops_per_iteration.json'), 'w') as f:
    json.dump({'command': 'python -m experiments.jest.reproduce', 'flops_per_iteration': fig4,
               'batch_size': 128, 'super_batch_size_f0.8': 640}, f, indent=1)
  logging.info('Wrote %s: %s', args.out, json.dumps(summary['runs'], indent=1)[:2000])


if __name__ == '__main__':
  main()
