"""Shared pieces of the Divide and Contrast configs: pools, MoCLR, the DnC stages, the budget.

Three scales:
  local (default): Fashion-MNIST on a 2-core CPU. Pools of the 50k `train` split
    (datasets/pools.py): uncurated = Zipf-like class sizes with exponent `zipf` (1.0: 5000,
    2500, 1666, ... 500 examples, 14.6k in all), curated = the same 14.6k class-balanced; both
    probed on the 10k held-out split and tested on the balanced `test` split (linear probe).
    Student and teachers: the tiny ViT of experiments/rela (width 64, depth 2, patch 7).
    Budget: `steps` (1000) MoCLR steps of batch 128; DnC splits the same FLOPs into base 40%,
    experts 40% (by cluster size), distillation the rest (methods/dnc.py).
    Measured wall time: TIMING below (one pipeline 336 s at 1200 steps; grid ~87 min).
  runlocal: a smoke run of seconds (tiny ViT, a 600-example pool, 24 steps).
  tpu: paper scale with public TFDS substitutes. YFCC100M and JFT-300M are not public through
    TFDS; the uncurated pool is iNaturalist 2021 (`tfds:i_naturalist2021`, 2.7M images of 10k
    species with a naturally heavy-tailed class distribution, which is the property DnC's
    hypothesis is about), the curated pool ImageNet-1k (`tfds:imagenet2012`). Both are probed
    on ImageNet-1k (a 50k held-out slice of its train split) and tested on its validation split
    (`eval_base`). ViT-B/16 (for the paper's ResNet-50, which models/ does not have), bf16
    matmuls, rematerialised blocks, batch 4096, 300k MoCLR steps of budget (base 40%, K
    experts 40%, distillation 20%), temperature 0.1, momentum 0.99 -> 1. Slices (results/aot,
    compiled ahead of time with libtpu on a CPU host, `python -m big_vision_style.tools.aot
    --config ... --topology v4-16`): the MoCLR step (base model, experts, baseline; two views
    of 4096, a 10k-class online classifier) fits v4-8 (4 chips), the smallest v4 slice, at
    27.1 GiB per chip of 30.75 (15.3 on v4-16, 8.9 on v4-32; `curation_gap.py:tpu`); the
    distillation step at K = 5 (one view of 4096 through the student and the 6 teachers,
    base and experts, vmapped, forward only; `dnc_vs_moclr.py:tpu,stage=distill`, placeholder
    teachers: `distill_stage_config`) needs v4-16 (8 chips), 28.4 GiB per chip, and is out of
    memory on v4-8 (its temporaries alone 30.97 GiB). So a whole DnC pipeline, which runs
    every stage on one mesh, needs v4-16; K = 10 (11 teachers) is not compiled. Larger slices
    train faster; `experts_parallel` can train K experts at once on K sub-meshes.
"""
import ml_collections

from big_vision_style import config_utils

LOCAL_STUDENT = dict(width=64, depth=2, mlp_dim=128, num_heads=2, patch_size=(7, 7),
                     pool_type='gap')  # experiments/rela/common.py's LOCAL_STUDENT.
TINY_VIT = dict(width=16, depth=1, mlp_dim=32, num_heads=1, patch_size=(7, 7), pool_type='gap')
LOCAL_PP = dict(image_size=28, mean=(0.286,), std=(0.353,))  # Fashion-MNIST pixel statistics.
POOLS = ('uncurated', 'curated')
INITS = ('base', 'scratch')
KS = (3, 5, 10)
# Wall time, measured on this shared 2-core machine (one process pinned to one core, the other
# core and the machine loaded by other jobs, load average ~2.7; cold compilation cache): one
# DnC pipeline, K=5, init=base, uncurated, steps=1200 took 336 s: base 142 s (compile 40 s,
# 480 steps at ~9.5 steps/s 52 s, linear probe and start-up ~50 s), embed + k-means 5 s,
# 5 experts 135 s (each compiles its own program, ~14 s: the schedules bake in its step
# count), distillation 54 s (197 steps). With the grid's shared warm cache (base, probe and
# distillation programs compiled once) and steps=1000, projected: K=3 ~215 s, K=5 ~250 s,
# K=10 ~335 s, MoCLR ~135 s per run; the 42-run grid ~(36 x 266 + 6 x 135) / 2 workers
# ~ 87 minutes.
TIMING = dict(pipeline_k5_steps1200_cold_s=336, projected_grid_min_steps1000=87)

ARGS = dict(runlocal=False, tpu=False, method='dnc', pool='uncurated', zipf=1.0, distractors=0,
            pool_seed=0, seed=0, k=5, init='base', steps=1000, batch=128, lr=2e-3,
            temperature=0.2, base_fraction=0.4, experts_fraction=0.4, expert_heads='own_cluster',
            target='projection', parallel=1, stage='')
STAGES = ('', 'distill')
# Where stage=distill's placeholder teachers and cluster table "are": nothing is read from them.
PLACEHOLDER = 'aot_placeholder/dnc'


def parse(arg, **extra):
  return config_utils.parse_arg(arg, **{**ARGS, **extra})


def make_config(arg) -> ml_collections.ConfigDict:
  """A MoCLR run (method=moclr: the curation gap and the equal-compute baseline) or a DnC
  pipeline (method=dnc) on pool `arg.pool`, for a budget of `arg.steps` MoCLR steps; with
  stage=distill, that pipeline's distillation stage from placeholders, to compile its step
  (`distill_stage_config`)."""
  if arg.method not in ('dnc', 'moclr'):
    raise ValueError(f'method={arg.method!r}: expected dnc or moclr.')
  if arg.pool not in POOLS:
    raise ValueError(f'pool={arg.pool!r}: expected one of {POOLS}.')
  if arg.init not in INITS:
    raise ValueError(f'init={arg.init!r}: expected one of {INITS}.')
  if arg.stage not in STAGES or (arg.stage and arg.method != 'dnc'):
    raise ValueError(f'stage={arg.stage!r}: expected distill (with method=dnc) or nothing.')
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  config.objective = 'moclr'
  (_tpu if arg.tpu else _local)(config, arg)
  if arg.method == 'dnc':
    config.dnc = dict(num_clusters=arg.k, expert_init=arg.init, base_fraction=arg.base_fraction,
                      experts_fraction=arg.experts_fraction, experts_parallel=arg.parallel)
    config.distill = dict(expert_heads=arg.expert_heads, target=arg.target,
                          head_hidden=config.moclr.projector_hidden)
  if arg.runlocal:
    runlocal(config)
  if arg.stage == 'distill':
    return distill_stage_config(config)
  return config


def distill_stage_config(config) -> ml_collections.ConfigDict:
  """The distillation stage's config, as methods/dnc.py's pipeline builds it from the earlier
  stages' outputs (`dnc.distill_config`), but from placeholders: K + 1 teacher workdirs (base,
  then one expert per cluster) and a cluster table under PLACEHOLDER, none of which exists.
  For compiling the step without running the pipeline (`stage=distill`: tools/aot builds it
  abstractly, teachers as shapes, the batch's cluster column as a shape,
  programs.example_from_config); training it fails on the missing teachers. total_steps is
  distillation's nominal share of the budget in MoCLR steps (the pipeline counts it in
  distillation steps from their FLOPs; no shape depends on it)."""
  from big_vision_style.methods import dnc  # pylint: disable=g-import-not-at-top
  k = int(config.dnc.num_clusters)
  out = {'base': {'workdir': f'{PLACEHOLDER}/base'},
         'experts': {'runs': {f'expert_{i}': {'workdir': f'{PLACEHOLDER}/experts/expert_{i}'}
                              for i in range(k)}},
         'cluster': {'table': f'{PLACEHOLDER}/cluster/clusters.npz'}}
  share = 1.0 - config.dnc.base_fraction - config.dnc.experts_fraction
  return dnc.distill_config(config, out, max(1, round(share * config.total_steps)))


def _local(config, arg):
  config.data = dict(
      name='pools', base=dict(name='fashion_mnist', data_dir=None, holdout_size=10_000,
                              split_seed=0),
      pool=dict(kind=arg.pool, zipf=arg.zipf, seed=arg.pool_seed, size=None,
                distractors=arg.distractors))
  config.input = dict(batch_size=arg.batch, channels=1, augment=(), num_threads=2, prefetch=4,
                      pp=dict(LOCAL_PP))  # MoCLR makes its views on device (views.py).
  config.model_name = 'vit'
  config.model = dict(LOCAL_STUDENT)
  config.total_steps = arg.steps
  config.optax = dict(lr=arg.lr, wd=1e-4, b1=0.9, b2=0.999, warmup_frac=0.05, clip_norm=1.0)
  config.moclr = dict(projector_hidden=128, projector_dim=32, predictor_hidden=128,
                      temperature=arg.temperature, momentum=0.99, momentum_end=1.0,
                      momentum_schedule='cosine')
  config.log_training_steps = 50
  config.ckpt_steps = 1_000_000  # Stages take a minute: checkpoint at the end (and on SIGTERM).
  config.evals = ml_collections.ConfigDict()
  # Linear probe once, at the last step: fitted on the held-out split (the same labelled data
  # for every pool), tested on the balanced test split.
  config.evals.probe = dict(type='linear_probe', split='test', fit_split='holdout',
                            fit_examples=10_000, log_steps=1_000_000, batch_size=1024)


def _tpu(config, arg):
  holdout = dict(name='tfds:imagenet2012', data_dir=None, holdout_size=50_000, split_seed=0,
                 test_split='validation')
  base = (dict(name='tfds:i_naturalist2021', data_dir=None, holdout_size=0, split_seed=0)
          if arg.pool == 'uncurated' else dict(holdout))
  config.data = dict(name='pools', base=base, eval_base=holdout,
                     pool=dict(kind='all', zipf=0.0, seed=arg.pool_seed, size=None,
                               distractors=0))
  # The online classifier's classes (iNaturalist 2021's species, or ImageNet's): set here,
  # since the ahead-of-time compile (tools/aot) builds the step without reading the data.
  config.num_classes = 10_000 if arg.pool == 'uncurated' else 1000
  config.input = dict(batch_size=4096, channels=3, augment=(), num_threads=32, prefetch=8,
                      pp=dict(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3))
  config.model_name = 'vit'
  config.model = dict(variant='B/16', pool_type='gap', dtype_mm='bfloat16', remat=True)
  config.total_steps = 300_000 if arg.steps == ARGS['steps'] else arg.steps
  config.optax = dict(lr=2e-3, wd=0.05, b1=0.9, b2=0.999, warmup_frac=0.02, clip_norm=1.0)
  config.moclr = dict(projector_hidden=4096, projector_dim=256, predictor_hidden=4096,
                      temperature=0.1, momentum=0.99, momentum_end=1.0,
                      momentum_schedule='cosine')
  config.log_training_steps = 100
  config.ckpt_steps = 2000
  config.evals = ml_collections.ConfigDict()
  config.evals.probe = dict(type='linear_probe', split='test', fit_split='holdout',
                            fit_examples=50_000, log_steps=50_000, batch_size=4096, steps=1000)


def runlocal(config):
  """A smoke run of seconds: tiny ViT, a 600-example pool, 24 steps of budget."""
  config.model = dict(TINY_VIT)
  config.input.batch_size = 16
  config.input.num_threads = 1
  config.data.pool.size = 600
  config.total_steps = 24
  config.log_training_steps = 2
  config.ckpt_steps = 4
  config.moclr.update(projector_hidden=16, projector_dim=8, predictor_hidden=16)
  if config.get('distill'):
    config.distill.head_hidden = 16
    # The embedding pass over the pool is a large share of so small a budget.
    config.dnc.update(embed_batch_size=64, base_fraction=0.3, experts_fraction=0.3)
  config.evals.probe.update(log_steps=1_000_000, batch_size=512, fit_examples=512, steps=20)
  return config
