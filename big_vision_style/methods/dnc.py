"""Divide and Contrast (Tian, Henaff, van den Oord, ICCV 2021) as a stage list for the stage
runner (stages.py): one command runs it all (`python -m big_vision_style.tools.dnc`), and a
rerun resumes at the stage and step where it stopped.

Stages, each in `<workdir>/<name>/`:
  base     MoCLR (methods/moclr.py) on the whole pool for `base_fraction` of the budget.
  embed    every pool example through the base model, the projector's hidden layer (the
           paper's choice), stored by id (`embeddings.npz`, an id table with provenance).
  cluster  k-means, cosine distance, k-means++ (kmeans.py, sharded over the mesh), into
           `num_clusters`; assignments by id (`clusters.npz`, recording the pool and the base
           checkpoint), cluster sizes and purity against the true labels (a diagnostic).
  experts  one MoCLR expert per cluster, on that cluster's examples only (datasets/pools.py
           restricts `train` by the table), `experts/expert_<k>/`. The experts' budget,
           `experts_fraction` of the total, is split by cluster size (`split_budget`).
           `expert_init`: 'base' (start from the base model's online and target networks,
           fresh optimiser) or 'scratch' (random init, its own seed): the papers' descriptions
           differ, so both are config. `experts_parallel` = G trains them G at a time on G
           disjoint sub-meshes of the devices (each a slice of every process's devices),
           expert k on group k mod G; 1 trains them one after another on the whole mesh.
  distill  the student (methods/distill.py) regresses the base model's and every expert's
           representation; it gets what is left of the budget.

The budget is `total_steps` MoCLR steps on the whole pool: B = total_steps x (FLOPs of one
MoCLR step, measured by XLA in the base stage). base takes round(base_fraction x total_steps)
steps, the experts together round(experts_fraction x total_steps) steps of the same program
size, and distillation floor((B - everything before) / (FLOPs of one distillation step))
steps, that step compiled and measured before it trains. So a DnC run's total FLOPs (every
stage counted: runner's `total_flops`) equals, to within one distillation step, that of MoCLR
trained for `total_steps` steps with its own schedule: the equal-compute baseline is the same
config run as plain MoCLR (`moclr_config`).

Several processes: the embedding pass and k-means follow the repo's multi-host patterns
(outputs leave their programs replicated, every host reads them; one writer, process 0, for
files). Parallel experts run in threads of each process, every process training the same
experts on the same groups in the same order. SIGTERM reaches only the main thread, which
trains when experts_parallel = 1; parallel experts stop at the end of their current runs.
"""
from __future__ import annotations

import concurrent.futures
import copy
import logging
import os

import jax
import ml_collections
import numpy as np

from big_vision_style import checkpointing
from big_vision_style import datasets
from big_vision_style import flops
from big_vision_style import id_table
from big_vision_style import kmeans
from big_vision_style import methods
from big_vision_style import preprocess
from big_vision_style import score_cache
from big_vision_style import sharding
from big_vision_style import stages
from big_vision_style.datasets import pools
from big_vision_style.methods import moclr

DEFAULTS = dict(num_clusters=5, expert_init='base', base_fraction=0.4, experts_fraction=0.4,
                experts_parallel=1, min_expert_steps=1, expert_evals=False, embed_batch_size=1024,
                kmeans=dict(max_iters=100, tol=1e-4, seed=0, init_sample=100_000))
INITS = ('base', 'scratch')
EXPERTS_DIR = 'experts'


class Preempted(Exception):
  """A train stage inside the experts stage stopped early: rerun to resume."""

  def __init__(self, stage):
    super().__init__(f'{stage} stopped before its end; rerun the same command to resume.')
    self.stage = stage


def settings(config) -> dict:
  cfg = {**DEFAULTS, **dict(config.get('dnc') or {})}
  cfg['kmeans'] = {**DEFAULTS['kmeans'], **dict(cfg['kmeans'] or {})}
  unknown = set(cfg) - set(DEFAULTS)
  if unknown:
    raise ValueError(f'Unknown config.dnc key(s) {sorted(unknown)}: expected {sorted(DEFAULTS)}.')
  if cfg['expert_init'] not in INITS:
    raise ValueError(f'config.dnc.expert_init={cfg["expert_init"]!r}: expected one of {INITS}.')
  if int(cfg['num_clusters']) < 1:
    raise ValueError(f'config.dnc.num_clusters={cfg["num_clusters"]} must be >= 1.')
  fb, fe = float(cfg['base_fraction']), float(cfg['experts_fraction'])
  if not (0 < fb and 0 < fe and fb + fe < 1):
    raise ValueError(f'config.dnc: base_fraction ({fb}) and experts_fraction ({fe}) must be > 0 '
                     'with a sum < 1 (distillation gets the rest of the budget).')
  if config.get('total_steps') is None:
    raise ValueError('config.total_steps is the DnC budget (in MoCLR steps on the whole pool); '
                     'set it.')
  return cfg


def split_budget(total: int, sizes, *, minimum: int = 1) -> list[int]:
  """`total` steps split in proportion to `sizes` (largest remainders, so they sum to `total`),
  each at least `minimum` (taken from the largest shares)."""
  sizes = np.asarray(sizes, np.float64)
  if len(sizes) == 0 or np.any(sizes < 0) or sizes.sum() <= 0:
    raise ValueError(f'Cannot split a budget by sizes {sizes.tolist()}.')
  if total < minimum * len(sizes):
    raise ValueError(f'A budget of {total} steps cannot give {len(sizes)} experts {minimum} '
                     'step(s) each: raise config.total_steps or experts_fraction.')
  exact = total * sizes / sizes.sum()
  steps = np.floor(exact).astype(np.int64)
  steps[np.argsort(-(exact - steps), kind='stable')[:total - steps.sum()]] += 1
  while steps.min() < minimum:
    steps[np.argmin(steps)] += 1
    steps[np.argmax(steps)] -= 1
  return steps.tolist()


# ----- Stage configs -----

def _copy(config) -> ml_collections.ConfigDict:
  out = copy.deepcopy(config)
  with out.unlocked():
    for key in ('dnc', 'distill'):
      if key in out:
        del out[key]
  return out


def moclr_config(config, total_steps: int | None = None, *, evals: bool = True):
  """The MoCLR run of `config` (the DnC config without its DnC parts): the base stage, an
  expert, or (with the whole budget) the equal-compute baseline."""
  out = _copy(config)
  with out.unlocked():
    out.objective = 'moclr'
    if total_steps is not None:
      out.total_steps = int(total_steps)
    if not evals:
      out.evals = ml_collections.ConfigDict()
  return out


def base_steps(config) -> int:
  return max(1, int(round(settings(config)['base_fraction'] * config.total_steps)))


def expert_configs(config, out) -> list:
  """One MoCLR config per cluster: its examples only, its share of the experts' budget."""
  cfg = settings(config)
  counts = out['cluster']['counts']
  budget = int(round(cfg['experts_fraction'] * config.total_steps))
  steps = split_budget(budget, counts, minimum=int(cfg['min_expert_steps']))
  configs = []
  for k, n in enumerate(steps):
    c = moclr_config(config, n, evals=cfg['expert_evals'])
    with c.unlocked():
      c.data.cluster_table = out['cluster']['table']
      c.data.cluster = k
      c.moclr = dict(c.get('moclr') or {})
      if cfg['expert_init'] == 'base':
        c.moclr.init_from = out['base']['workdir']
      else:  # Each expert its own random init (and data order).
        c.seed = int(config.seed) * 1000 + 1 + k
    configs.append(c)
  return configs


def distill_config(config, out, steps: int | None = None):
  cfg = settings(config)
  c = _copy(config)
  teachers = [out['base']['workdir']] + [
      out['experts']['runs'][f'expert_{k}']['workdir'] for k in range(cfg['num_clusters'])]
  with c.unlocked():
    c.objective = 'distill'
    c.distill = {**dict(config.get('distill') or {}), 'teachers': teachers,
                 'cluster_table': out['cluster']['table']}
    c.total_steps = 1 if steps is None else int(steps)
  return c


def distill_steps(config, out) -> int:
  """Distillation's share: the budget left after the earlier stages, in its own steps (its
  step compiled once here and measured by XLA, as the trainer will measure it)."""
  moclr_step = out['base']['flops'] / base_steps(config)
  budget = moclr_step * config.total_steps
  spent = sum(out[name]['flops'] for name in ('base', 'embed', 'cluster', 'experts'))
  per_step = step_flops(distill_config(config, out))
  steps = int((budget - spent) // per_step)
  if steps < 1:
    raise ValueError(f'No budget is left for distillation ({budget:.4g} FLOPs, {spent:.4g} spent '
                     f'before it, {per_step:.4g} per step): lower base_fraction or '
                     'experts_fraction.')
  return steps


def step_flops(config) -> float:
  """XLA's FLOPs of one training step of `config`'s method on its mesh, abstractly (nothing
  trained, teachers not read)."""
  mesh = sharding.make_mesh(config.get('mesh_devices'))
  source = datasets.get_source(config.data, config.input.get('split', 'train'))
  source, _ = methods.prepare(config, source)
  pp = preprocess.make(**dict(config.input.get('pp', {})))
  example = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
             for k, v in pp(source[0]).items()}
  ctx, built = methods.standalone(config, mesh, example, num_classes=source.num_classes,
                                  total_steps=int(config.total_steps), abstract=True)
  state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=ctx.replicated),
                       jax.eval_shape(built.init, jax.random.key(0)))
  _, cost = flops.compile_and_measure(
      methods.jit_step(built.phases[0], ctx), state, built.frozen,
      ctx.batch_spec(built.super_batch_size), jax.ShapeDtypeStruct((), np.int32))
  return float(cost.flops)


# ----- Compute stages -----

def stage_file(out: dict, stage: str, key: str) -> str:
  """The file an earlier stage wrote, or a clear error if it is gone."""
  path = out[stage][key]
  if not os.path.exists(path):
    directory = os.path.dirname(path)
    raise FileNotFoundError(f'Stage {stage!r} is marked finished ({directory}/stage.json) but its '
                            f'output {path} is missing: delete {directory} and rerun to '
                            'recompute that stage (later stages that used it too).')
  return path


def embed_stage(config):

  def fn(stage_dir, out):
    base_dir = out['base']['workdir']
    mesh = sharding.make_mesh(config.get('mesh_devices'))
    source = datasets.get_source(config.data, 'train')
    model = moclr.make_model(moclr_config(config), source.num_classes)
    params, _ = checkpointing.load_trained_params(base_dir, sharding=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    pp = preprocess.make(**dict(config.input.pp))
    bs = int(settings(config)['embed_batch_size'])
    embed = jax.jit(lambda p, b: model.embed(p, b['image']))
    ids, values = score_cache.compute_outputs(embed, params, source, pp, mesh, batch_size=bs)
    spec = {k: jax.ShapeDtypeStruct((bs,) + np.shape(v), np.asarray(v).dtype)
            for k, v in pp(source[0]).items()}
    per_batch = flops.compile_and_measure(embed, params, spec)[1].flops
    path = os.path.join(stage_dir, 'embeddings.npz')
    meta = {**id_table.provenance(config, producer='big_vision_style.methods.dnc:embed',
                                  split='train'),
            'data': pools.pool_data_config(config.data), 'base_workdir': base_dir,
            'base_step': id_table.latest_checkpoint_step(base_dir), 'num_examples': len(ids),
            'dim': int(values.shape[1])}
    if jax.process_index() == 0:
      id_table.save(path, ids, values, meta)
    return {'table': path, 'num_examples': int(len(ids)), 'dim': int(values.shape[1]),
            'flops': float(per_batch * -(-len(source) // bs))}

  return stages.ComputeStage('embed', fn)


def purity(assignments, labels) -> float:
  """Fraction of examples whose cluster's majority label is theirs (distractors, label -1,
  count as one more class)."""
  labels = np.asarray(labels, np.int64)
  labels = labels - labels.min()
  table = np.zeros((int(assignments.max()) + 1, int(labels.max()) + 1), np.int64)
  np.add.at(table, (np.asarray(assignments), labels), 1)
  return float(table.max(1).sum() / len(labels))


def cluster_stage(config):

  def fn(stage_dir, out):
    cfg = settings(config)
    table = id_table.load(stage_file(out, 'embed', 'table'), what='DnC embeddings',
                          how='rerun the embed stage')
    source = datasets.get_source(config.data, 'train')
    if table.meta.get('data') != pools.pool_data_config(config.data):
      raise ValueError(f'The embeddings {table.path} were computed for another pool; delete '
                       f'{os.path.dirname(table.path)} and rerun.')
    ids = np.asarray(source.ids)
    values = table.lookup(ids)
    k = int(cfg['num_clusters'])
    mesh = sharding.make_mesh(config.get('mesh_devices'))
    km = cfg['kmeans']
    result = kmeans.kmeans(values, k, mesh=mesh, seed=int(km['seed']),
                           max_iters=int(km['max_iters']), tol=float(km['tol']),
                           init_sample=km['init_sample'])
    path = os.path.join(stage_dir, 'clusters.npz')
    labels = getattr(source, 'labels', None)
    quality = purity(result.assignments, labels) if labels is not None else None
    meta = {**id_table.provenance(config, producer='big_vision_style.methods.dnc:cluster',
                                  split='train'),
            'data': pools.pool_data_config(config.data), 'num_clusters': k,
            'base_workdir': out['base']['workdir'],
            'base_step': id_table.latest_checkpoint_step(out['base']['workdir']),
            'num_examples': int(len(ids)), 'inertia': result.inertia,
            'iterations': result.iterations}
    if jax.process_index() == 0:
      id_table.save(path, ids, result.assignments, meta)
    return {'table': path, 'counts': result.counts.tolist(), 'inertia': result.inertia,
            'iterations': result.iterations, 'reseeded': result.reseeded, 'purity': quality,
            'flops': result.flops}

  return stages.ComputeStage('cluster', fn)


def device_groups(num_groups: int, devices=None) -> list[list[int]]:
  """`num_groups` disjoint groups of device ids, each holding an equal slice of every
  process's devices (so that every process feeds every group: input_pipeline's layout)."""
  devices = sorted(devices or jax.devices(), key=lambda d: (d.process_index, d.id))
  by_process = {}
  for d in devices:
    by_process.setdefault(d.process_index, []).append(d.id)
  local = min(len(v) for v in by_process.values())
  if num_groups < 1 or local % num_groups:
    raise ValueError(f'config.dnc.experts_parallel={num_groups} must divide the {local} devices '
                     'of each process.')
  m = local // num_groups
  return [[i for p in sorted(by_process) for i in by_process[p][g * m:(g + 1) * m]]
          for g in range(num_groups)]


def experts_stage(config, train_fn):
  cfg = settings(config)

  def fn(stage_dir, out):
    configs = expert_configs(config, out)
    groups = int(cfg['experts_parallel'])

    def run_group(g, mesh_devices):
      mine = []
      for k in range(g, len(configs), groups):
        c = configs[k]
        if mesh_devices is not None:
          with c.unlocked():
            c.mesh_devices = mesh_devices
        mine.append(stages.TrainStage(f'expert_{k}', lambda _, c=c: c))
      result = stages.run_stages(mine, stage_dir, train_fn=train_fn)
      if 'preempted' in result:
        raise Preempted(f'{EXPERTS_DIR}/{result["preempted"]}')
      return result

    if groups == 1:
      results = [run_group(0, None)]
    else:
      with concurrent.futures.ThreadPoolExecutor(groups) as pool:
        futures = [pool.submit(run_group, g, ids) for g, ids in enumerate(device_groups(groups))]
        results = [f.result() for f in futures]
    runs = {name: r for result in results for name, r in result.items() if name.startswith(
        'expert_')}
    runs = {f'expert_{k}': runs[f'expert_{k}'] for k in range(len(configs))}
    return {'runs': runs, 'steps': [c.total_steps for c in configs],
            'flops': float(sum(r['flops'] for r in runs.values()))}

  return stages.ComputeStage(EXPERTS_DIR, fn)


def pipeline(config, train_fn) -> list:
  """The stage list of the DnC run `config` (see the module doc)."""
  settings(config)
  return [stages.TrainStage('base', lambda out: moclr_config(config, base_steps(config))),
          embed_stage(config), cluster_stage(config), experts_stage(config, train_fn),
          stages.TrainStage('distill', lambda out: distill_config(
              config, out, distill_steps(config, out)))]


def run(config, workdir: str, *, train_fn) -> dict:
  """Runs or resumes every stage; the stage runner's outputs ({'preempted': stage} if one
  stopped early). `train_fn`: big_vision_style.train.train (not imported here)."""
  try:
    return stages.run_stages(pipeline(config, train_fn), workdir, train_fn=train_fn)
  except Preempted as e:
    logging.warning('%s', e)
    return {'preempted': e.stage}


def summary_row(config, out: dict) -> dict:
  """The DnC run's final row: the student's final metrics, FLOPs of every stage and in total
  (replacing the distillation run's own flops/total), and the clustering diagnostics."""
  # The student's evaluations and training metrics; its own FLOP counters are the distillation
  # stage's only, replaced by the pipeline's.
  row = {k: v for k, v in out['distill']['final'].items() if not k.startswith('flops/')}
  row.update({f'flops/stage/{name}': float(out[name]['flops'])
              for name in ('base', 'embed', 'cluster', 'experts', 'distill')})
  row['flops/total'] = float(out['total_flops'])
  row['flops/budget'] = out['base']['flops'] / base_steps(config) * config.total_steps
  row['dnc/purity'] = out['cluster']['purity']
  row['dnc/cluster_sizes'] = out['cluster']['counts']
  row['dnc/expert_steps'] = out['experts']['steps']
  row['dnc/distill_steps'] = int(out['distill']['final']['step'])
  for key, value in out['base']['final'].items():
    if key.startswith('eval/'):
      row[f'base/{key}'] = value
  return row
