r"""Local reproduction of the JEST paper's Figs. 2-5 on captioned Fashion-MNIST, and its analysis.

  # Everything, 3 seeds, two single-core workers sharing the runs (96.9 min on 2 idle cores):
  python -m experiments.jest.reproduce --workdir workdirs/jest --out results/jest --parallel 2
  python -m experiments.jest.reproduce --runs core --seeds 0        # the reduced set
  python -m experiments.jest.reproduce --analyze_only               # tables and plots only

1. References (experiments/jest/reference.py): curated (the clean `holdout` pool) and uncurated
   (the learner's noisy `train` pool), same steps; each one's embeddings of the train pool are
   cached once (tools/reference_embeddings.py): every selecting run uses the cache.
2. Learner runs (experiments/jest/filter_ratio.py), per seed: the i.i.d. baseline; filter
   ratios f in {0.5, 0.8, 0.9} x joint / independent x learnability / easy-reference; at
   f = 0.8 Flexi-JEST and JEST with the uncurated reference; and `uniform_3x`, the i.i.d.
   baseline trained 3x as long (its own cosine schedule), the target of the issue's goal: a
   run that reaches its final accuracy within `--steps` needs at most 1/3 of its iterations.
   `--runs core` keeps the uniform baseline and f = 0.8 (joint and independent learnability,
   joint easy-reference, Flexi, the uncurated reference). Finished runs are skipped
   (final.json); others resume.
3. Fig. 2 analogue: on one super-batch (B = 640) scored by the uniform run's learner and the
   curated reference, the learnability of the sub-batch chosen by the chunked sampler vs its
   number of chunks, against a brute-force Gibbs sampler vs its iterations; and vs f.
4. Fig. 4 analogue: FLOPs per iteration (XLA cost analysis, from the runs' per-step counters)
   of i.i.d., JEST with a live reference (a 4-step run), JEST with the cache, Flexi-JEST, as
   percentages of i.i.d.; for JEST both without and with the learner's scoring forward reused
   for its gradient step (4-step runs each; forward_reuse.py). `--reuse` runs the whole sweep
   with it (off by default: on this CPU it saves FLOPs, not time).
Writes to --out: summary.json (per run, mean and std over seeds: final zero-shot accuracy and
retrieval; iterations and FLOPs to reach each uniform baseline's final value, as fractions of
that baseline's run and as ratios to its own first reach; the wall time of the sweep),
table.md, fig2_sampler.png, fig3_filter_ratio.png (final accuracy vs f), fig3_curves.png
(learning curves at f = 0.8), fig4_flops.png and curves.json (the raw curves).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
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
# The i.i.d. baselines every run is compared with: summary key suffix -> run name.
BASELINES = {'': 'uniform', '_vs_3x': 'uniform_3x'}


def ratio_keys(suffix: str) -> list[str]:
  """Summary keys of the iterations / FLOPs needed to reach a target (`suffix`: metric, then
  baseline): 'ratio' to the baseline's own first reach, 'fraction' of the baseline's run."""
  return [f'{kind}_{to}{suffix}' for kind in ('iterations', 'flops')
          for to in ('ratio', 'fraction')]


CORE = ('uniform', 'learnability_joint_f0.8', 'learnability_independent_f0.8',
        'easy_reference_joint_f0.8', 'flexi_learnability_joint_f0.8',
        'uncurated_ref_learnability_joint_f0.8')


def reference_dir(args, pool):
  return os.path.join(args.workdir, f'reference_{pool}')


def cache_path(args, pool):
  return os.path.join(args.workdir, f'reference_{pool}', 'train_embeddings.npz')


def run_config(args, name, seed, steps=None):
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
  config = filter_ratio.get_config(f'{arg},seed={seed},steps={steps}')
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


def timing_path(args):
  return os.path.join(args.workdir, 'timing.jsonl')


@contextlib.contextmanager
def timed(args, part):
  """Appends `part`'s wall-clock interval to the workdir's record (parallel workers append too)."""
  start = time.time()
  yield
  with open(timing_path(args), 'a') as f:
    f.write(json.dumps({'part': part, 'start': start, 'end': time.time()}) + '\n')


def wall_seconds(path) -> dict:
  """Wall time of the recorded intervals: their union (parallel workers overlap), and per part."""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  total, end = 0.0, -np.inf
  for r in sorted(rows, key=lambda r: r['start']):
    total += max(0.0, r['end'] - max(r['start'], end))
    end = max(end, r['end'])
  parts = {}
  for r in rows:
    parts[r['part']] = parts.get(r['part'], 0.0) + r['end'] - r['start']
  return {'total': total, 'parts': parts}


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


def work_items(args):
  """(seed, run name) pairs to train. A queue's workers (--parallel) take them longest first,
  which keeps their finishing times close (the sweep's wall time is the last one's)."""
  items = [(seed, name) for seed in args.seeds for name in args.runs]
  if args.queue:
    items.sort(key=lambda item: -relative_cost(item[1]))
  return items


def claim(args, seed, name) -> bool:
  """True for exactly one of the workers sharing --queue: creating a file is atomic."""
  try:
    os.close(os.open(os.path.join(args.queue, f'{name}_s{seed}'),
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    return True
  except FileExistsError:
    return False


def run_all(args):
  if not args.queue:  # Workers start after the parent prepared the references.
    with timed(args, 'references'):
      prepare_references(args)
  if args.parallel > 1:
    return run_parallel(args)
  for seed, name in work_items(args):
    if args.queue and not claim(args, seed, name):
      continue
    t = time.time()
    with timed(args, f'{name}_s{seed}'):
      final = train.train_once(run_config(args, name, seed),
                               os.path.join(args.workdir, 'runs', f'{name}_s{seed}'))
    logging.info('%s seed %d: zero-shot %.4f (%.0fs).', name, seed, final[METRIC],
                 time.time() - t)


def worker_command(args, queue) -> list[str]:
  """The command line of one --parallel worker: every option that shapes a run is passed on."""
  cmd = [sys.executable, '-m', 'experiments.jest.reproduce', '--workdir', args.workdir,
         '--seeds', ','.join(map(str, args.seeds)), '--runs', ','.join(args.runs),
         '--steps', str(args.steps), '--eval_every', str(args.eval_every),
         '--ref_epochs', str(args.ref_epochs), '--queue', queue, '--runs_only']
  if args.gain is not None:
    cmd += ['--gain', str(args.gain)]
  if args.reuse:
    cmd += ['--reuse']
  return cmd


def run_parallel(args):
  """--parallel n: n worker processes, each pinned to its share of the CPUs, take the runs
  from one queue. Small models use two cores poorly within one XLA process, so two
  single-core processes train more runs per hour than one process using both."""
  cpus = sorted(os.sched_getaffinity(0))
  if args.parallel > len(cpus):
    raise SystemExit(f'--parallel {args.parallel} exceeds the {len(cpus)} CPUs available.')
  # A fresh queue per invocation: runs a killed sweep claimed are claimable again (and resume).
  queue = os.path.join(args.workdir, 'queue', str(time.time_ns()))
  os.makedirs(queue)
  procs = []
  for k in range(args.parallel):
    mine = set(cpus[k::args.parallel])
    procs.append(subprocess.Popen(worker_command(args, queue),
                                  preexec_fn=lambda mine=mine: os.sched_setaffinity(0, mine)))
  codes = [p.wait() for p in procs]
  if any(codes):
    raise SystemExit(f'Worker processes exited with {codes}: rerun the same command, finished '
                     'runs are skipped and the others resume.')


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

  def short_run(workdir, reference, reuse):
    config = run_config(args, 'learnability_joint_f0.8', seed, steps=4)
    with config.unlocked():
      config.selection.reference = reference
      config.selection.reuse_scoring_forward = reuse
      config.log_training_steps = 2
      config.evals = {}
    train.train_once(config, workdir)
    return per_step_flops(workdir)

  # Each JEST row both ways, from 4-step runs; the sweep's own runs are one of the two.
  both_ways = {
      (key, reuse): short_run(os.path.join(args.workdir, f'flops_{key[5:]}_reuse_{reuse}'),
                              reference, reuse)
      for key, reference in (('jest_live_reference', 'pretrained'),
                             ('jest_cached_reference', 'cached'))
      for reuse in (False, True)}
  measured = {'iid': per_step_flops(os.path.join(args.workdir, 'runs', f'uniform_s{seed}')),
              'jest_live_reference': both_ways['jest_live_reference', args.reuse],
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


def run_row(c, baselines: dict) -> dict:
  """One run's final values, and the iterations / FLOPs it needed to reach each baseline's
  final value (`baselines`: summary key suffix -> the baseline's curve, None if missing)."""
  row = {'final': c['zeroshot'][-1], 'i2t': c['i2t'][-1], 't2i': c['t2i'][-1],
         'retrieval': retrieval(c)[-1],
         'corrupted_selected': (float(np.mean(c['corrupted_selected']))
                                if 'corrupted_selected' in c else None)}
  for base_suffix, base in baselines.items():
    for metric, values in TARGETS.items():  # The baseline's final value, as the target.
      suffix = ('' if metric == 'zeroshot' else '_retrieval') + base_suffix
      if base is None:
        row.update(dict.fromkeys(ratio_keys(suffix)))
        continue
      target = values(base)[-1]
      mine, theirs = reach(c, target, metric), reach(base, target, metric)
      # ratio: to the baseline's own first evaluation at its final value (it may have got
      # there long before its end); fraction: to the baseline's whole run (the paper's
      # "a JEST run matches an i.i.d. run of N iterations with n", and the goal).
      row[f'iterations_ratio{suffix}'] = mine[0] / theirs[0] if mine else None
      row[f'flops_ratio{suffix}'] = mine[1] / theirs[1] if mine else None
      row[f'iterations_fraction{suffix}'] = mine[0] / base['step'][-1] if mine else None
      row[f'flops_fraction{suffix}'] = mine[1] / base['flops'][-1] if mine else None
  return row


def seed_stat(rows: list[dict], key: str) -> dict:
  """Mean and std over seeds of `key` where it is not None (a run that never reached a target),
  with how many seeds had it (n) of how many (of)."""
  vals = [r[key] for r in rows if r[key] is not None]
  return {'mean': float(np.mean(vals)) if vals else None,
          'std': float(np.std(vals)) if vals else None, 'n': len(vals), 'of': len(rows)}


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
      if seed not in curves['uniform']:
        continue
      row = run_row(c, {suffix: curves.get(base_name, {}).get(seed)
                        for suffix, base_name in BASELINES.items()})
      rows.append(row)

    summary['runs'][name] = {k: seed_stat(rows, k) for k in (
        'final', 'i2t', 't2i', 'retrieval', 'corrupted_selected') + tuple(
            key for metric in ('', '_retrieval') for base in BASELINES
            for key in ratio_keys(metric + base))}
  if os.path.exists(timing_path(args)):  # Wall time of this machine's sweep, per part.
    summary['wall_seconds'] = wall_seconds(timing_path(args))
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


def fmt_stat(s, scale=1.0, digits=2):
  """A `seed_stat` as 'mean ± std', times `scale`, with the seeds that had it if not all."""
  if s['mean'] is None:
    return f'never ({s["of"]} seeds)'
  return f'{scale * s["mean"]:.{digits}f} ± {scale * s["std"]:.{digits}f}' + (
      f' ({s["n"]}/{s["of"]})' if s['n'] != s['of'] else '')


def write_table(args, summary):
  runs = summary['runs']
  lines = [f'Seeds: {", ".join(summary["seeds"])} (mean ± std; "(n/m)": reached in n of m seeds; '
           '"never": in none). Ratios: iterations (FLOPs) to reach the baseline\'s final value, '
           'as multiples of what the baseline itself needed.', '',
           '| run | zero-shot (%) | I2T R@1 (%) | T2I R@1 (%) | corrupted pairs selected (%) |',
           '|---|---:|---:|---:|---:|']
  for name, r in runs.items():
    corrupted = fmt_stat(r['corrupted_selected'], 100) if r['corrupted_selected']['n'] else '-'
    lines.append(f'| {name} | {fmt_stat(r["final"], 100)} | {fmt_stat(r["i2t"], 100)} | '
                 f'{fmt_stat(r["t2i"], 100)} | {corrupted} |')
  for suffix, base in BASELINES.items():
    if base not in runs:
      continue
    lines += ['', f'To reach the final value of `{base}`: iterations and FLOPs as fractions of '
              f'`{base}`\'s whole run (its length: the issue\'s goal), and as ratios to what '
              f'`{base}` itself needed to first get there (stricter when it plateaus early).',
              '',
              '| run | zero-shot: iterations, of run / ratio | zero-shot: FLOPs, of run / ratio | '
              'retrieval: iterations, of run / ratio | retrieval: FLOPs, of run / ratio |',
              '|---|---:|---:|---:|---:|']
    for name, r in runs.items():
      cells = [f'{fmt_stat(r[f"{kind}_fraction{metric}{suffix}"])} / '
               f'{fmt_stat(r[f"{kind}_ratio{metric}{suffix}"])}'
               for metric in ('', '_retrieval') for kind in ('iterations', 'flops')]
      lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  if 'wall_seconds' in summary:
    lines += ['', f'Wall time of the sweep on this machine: '
              f'{summary["wall_seconds"]["total"] / 60:.1f} min.']
  if 'fig4_flops_per_iteration' in summary:
    lines += ['', '| per iteration | GFLOPs, as run | % of i.i.d., as run | % without reusing '
              'the scoring forward | % reusing it |', '|---|---:|---:|---:|---:|']
    for name, r in summary['fig4_flops_per_iteration'].items():
      cells = [r.get(f'percent_of_iid_{k}') for k in ('without_reuse', 'with_reuse')]
      lines.append(f'| {name} | {r["flops"] / 1e9:.3f} | {r["percent_of_iid"]:.0f} | ' +
                   ' | '.join('-' if c is None else f'{c:.0f}' for c in cells) + ' |')
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def mean_curve(per_seed):
  """Seed-mean zero-shot and retrieval curves (the seeds share their evaluation steps)."""
  cs = [per_seed[k] for k in sorted(per_seed)]
  n = min(len(c['step']) for c in cs)
  mean = lambda f: np.mean([np.asarray(f(c)[:n]) for c in cs], axis=0)  # pylint: disable=unnecessary-lambda-assignment
  return {'step': cs[0]['step'][:n], 'flops': mean(lambda c: c['flops']),
          'zeroshot': mean(lambda c: c['zeroshot']), 'retrieval': mean(retrieval)}


def plot(args, summary, curves):
  runs = summary['runs']
  seeds = ', '.join(summary['seeds'])
  # Fig. 3 analogue: final accuracy vs filter ratio (f = 0 is the i.i.d. baseline).
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for ax, key, label in ((axes[0], 'final', 'zero-shot accuracy (%)'),
                         (axes[1], 'retrieval', 'retrieval R@1 (%), mean of I2T and T2I')):
    for i, (policy, method) in enumerate((('learnability', 'joint'),
                                          ('learnability', 'independent'),
                                          ('easy_reference', 'joint'),
                                          ('easy_reference', 'independent'))):
      fs, ys, es = [0.0], [runs['uniform'][key]['mean']], [runs['uniform'][key]['std']]
      for f in (0.5, 0.8, 0.9):
        r = runs.get(f'{policy}_{method}_f{f}')
        if r and r[key]['mean'] is not None:
          fs.append(f)
          ys.append(r[key]['mean'])
          es.append(r[key]['std'])
      # Offsets keep the error bars of the four series apart.
      ax.errorbar(np.asarray(fs) + 0.006 * (i - 1.5), 100 * np.asarray(ys),
                  100 * np.asarray(es), capsize=3, ls='-' if method == 'joint' else '--',
                  color='C0' if policy == 'learnability' else 'C1',
                  label=f'{policy}, {method}')
    if 'uniform_3x' in runs:
      ax.axhline(100 * runs['uniform_3x'][key]['mean'], color='k', ls=':',
                 label='i.i.d., 3x the iterations')
    ax.set_xlabel('filter ratio f (f = 0: i.i.d.)')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f'JEST Fig. 3 analogue: after {args.steps} iterations (mean ± std, seeds {seeds})')
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, 'fig3_filter_ratio.png'), dpi=120)
  plt.close(fig)
  # Learning curves of the f = 0.8 runs and the baselines, against iterations and FLOPs.
  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  for name, per_seed in curves.items():
    if not (name.startswith('uniform') or name.endswith('f0.8')):
      continue
    c = mean_curve(per_seed)
    style = '-' if 'joint' in name or name.startswith('uniform') else '--'
    for row, values in enumerate((c['zeroshot'], c['retrieval'])):
      axes[row, 0].plot(c['step'], 100 * values, style, label=name)
      axes[row, 1].plot(c['flops'] / 1e12, 100 * values, style, label=name)
  for row, label in enumerate(('zero-shot accuracy (%), Fashion-MNIST test',
                               'retrieval R@1 (%), mean of I2T and T2I')):
    axes[row, 0].set_xlabel('learner iterations')
    axes[row, 1].set_xlabel('total TFLOPs (reference training excluded, cache pass included)')
    for ax in axes[row]:
      ax.set_ylabel(label)
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f'JEST Fig. 3 analogue: learning curves at f = 0.8 (mean of seeds {seeds})')
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, 'fig3_curves.png'), dpi=120)
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
    ax.bar(np.arange(len(names)) - 0.2,
           [s[n].get('percent_of_iid_without_reuse', s[n]['percent_of_iid']) for n in names],
           0.4, label='scoring forward not reused')
    ax.bar(np.arange(len(names)) + 0.2,
           [s[n].get('percent_of_iid_with_reuse', s[n]['percent_of_iid']) for n in names], 0.4,
           label='scoring forward reused (Flexi-JEST cannot)')
    ax.set_xticks(np.arange(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel('FLOPs per iteration (% of i.i.d.)')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis='y')
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'fig4_flops.png'), dpi=120)
    plt.close(fig)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='workdirs/jest')
  parser.add_argument('--out', default='results/jest')
  parser.add_argument('--bench_out', default='results/bench')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--runs', default='all', help="'all', 'core' or comma-separated names.")
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--eval_every', type=int, default=100)
  parser.add_argument('--ref_epochs', type=float, default=30.0)
  parser.add_argument('--analyze_only', action='store_true')
  parser.add_argument('--parallel', type=int, default=1,
                      help='Processes sharing the runs, each pinned to its share of the CPUs.')
  parser.add_argument('--queue', default='', help='A directory of claims shared by the '
                      'workers of one --parallel sweep (set by --parallel).')
  parser.add_argument('--runs_only', action='store_true', help='Train, skip the analysis.')
  parser.add_argument('--gain', type=float, default=None,
                      help='Score multiplier of every selecting run (default: the configs\' 1).')
  parser.add_argument('--reuse', action='store_true',
                      help="Selecting runs reuse the learner's scoring forward (Fig. 4).")
  args = parser.parse_args(argv)
  args.seeds = [int(s) for s in args.seeds.split(',')]
  args.runs = (list(all_runs()) if args.runs == 'all' else list(CORE) if args.runs == 'core'
               else args.runs.split(','))
  unknown = sorted(set(args.runs) - set(known_runs()))
  if unknown:
    parser.error(f'--runs: unknown run names {unknown}; known: all, core, '
                 f'{", ".join(known_runs())}.')
  return args


def main():
  args = parse_args()
  train.setup_script_logging()
  if not args.analyze_only:
    run_all(args)
  if args.runs_only:
    return
  with (contextlib.nullcontext() if args.analyze_only else timed(args, 'fig2_and_fig4')):
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
