"""Shared pieces of the ReLA configs: the student, the priors, the data budget, BYOL and ReLA.

Two scales:
  local (default): Fashion-MNIST on a 2-core CPU, sized so that the whole Table 1 grid
    (reproduce_table1.py: 96 runs) takes under an hour. Student: a ViT of width 64, depth 2
    and patch 7 (16 tokens, 64-d pooled features; 2.3 MFLOP per forward). Priors: a wider ViT
    (width 96, depth 2: 96-d features, reduced to the student's 64 by PCA), either random or
    trained, in increasing strength, on scikit-learn's 8x8 digits upsampled (out of domain),
    on half of the classes of the held-out split, and on the whole held-out split (10k images
    disjoint from `train`). (A small CNN was tried first: convolutions run at a third of the
    ViT's speed on CPU, and the pooled CNN reached only 71% after 5 epochs.)
    Every budget r trains the same number of epochs, each a fresh random r of the 50k `train`
    split, so the step budget scales with r.
  tpu: the paper's setting on TFDS data (CIFAR-10/100 with a ViT-S/4 student, ImageNet-1k with
    ViT-B/16 standing in for the paper's ResNets, which models/ does not have); priors are
    random, checkpoints trained with prior.py:tpu, or a public big_vision SigLIP image tower
    (the free "CLIP" prior).

The ReLA switch: the released rule (plateau of the ReLA loss: fast EMA 0.999, slow EMA 0.99,
threshold 0.995) has time constants of 100 and 1000 steps, made for runs of 10^4 - 10^5
steps; the local runs are 10^2 - 10^3 steps, so local configs scale them by 10 (0.99 / 0.9)
and cap the ReLA phase at half of training (`max_fraction`). `switch=fraction` switches at
`switch_fraction` of training instead; `switch=paper` keeps the released constants.
"""
import ml_collections

from big_vision_style import config_utils

PRIORS = ('none', 'random', 'digits', 'half_classes', 'holdout', 'byol_holdout')
# Local priors that need a training run (experiments/rela/prior.py).
TRAINED_PRIORS = ('digits', 'half_classes', 'holdout', 'byol_holdout')
# Label-free local priors: a BYOL run of the prior's model (experiments/rela/prior.py), whose
# online encoder is the prior; name -> (training split, epochs, lr).
BYOL_PRIORS = {'byol_holdout': ('holdout', 60, 4e-3)}
BUDGETS = (0.1, 0.2, 0.5, 1.0)

LOCAL_STUDENT = dict(width=64, depth=2, mlp_dim=128, num_heads=2, patch_size=(7, 7),
                     pool_type='gap')
LOCAL_PRIOR_MODEL = dict(width=96, depth=2, mlp_dim=192, num_heads=2, patch_size=(7, 7),
                         pool_type='gap')
TINY_VIT = dict(width=16, depth=1, mlp_dim=32, num_heads=1, patch_size=(7, 7), pool_type='gap')
LOCAL_PP = dict(image_size=28, mean=(0.286,), std=(0.353,))  # Fashion-MNIST pixel statistics.
HALF_CLASSES = (0, 1, 2, 3, 4)  # T-shirt/top, Trouser, Pullover, Dress, Coat.

# TPU: datasets of the paper's Table 1 that TFDS has, with their student and batch.
TPU_DATASETS = {
    'cifar10': dict(data='tfds:cifar10', test_split='test', image_size=32, student='S/4',
                    batch=512, holdout=5_000),
    'cifar100': dict(data='tfds:cifar100', test_split='test', image_size=32, student='S/4',
                     batch=512, holdout=5_000),
    'imagenet': dict(data='tfds:imagenet2012', test_split='validation', image_size=224,
                     student='B/16', batch=4096, holdout=50_000, remat=True),
}
TPU_PRIORS = ('none', 'random', 'cifar10', 'cifar100', 'imagenet', 'siglip')
SIGLIP_NPZ = 'gs://big_vision/siglip/webli_en_b16_224_63724782.npz'

ARGS = dict(runlocal=False, tpu=False, objective='byol', prior='none', ratio=0.1, seed=0,
            epochs=6.0, batch=128, lr=2e-3, root='workdirs/rela', dataset='fashion_mnist',
            switch='local', switch_fraction=0.3)


def parse(arg, **extra):
  return config_utils.parse_arg(arg, **{**ARGS, **extra})


def prior_workdir(root: str, name: str) -> str:
  return f'{root}/priors/{name}'


def targets_path(root: str, name: str, dataset: str = 'fashion_mnist') -> str:
  """Targets depend on the prior and the student's training split, not on seed or budget."""
  return f'{root}/targets/{dataset}/{name}.npz'


def switch_config(arg) -> dict:
  if arg.switch == 'local':
    return dict(rule='plateau', fast=0.99, slow=0.9, threshold=0.995, max_fraction=0.5)
  if arg.switch == 'paper':
    return dict(rule='plateau', fast=0.999, slow=0.99, threshold=0.995, max_fraction=1.0)
  if arg.switch == 'fraction':
    return dict(rule='fraction', fraction=arg.switch_fraction)
  raise ValueError(f'switch={arg.switch!r}: expected local, paper or fraction.')


def prior_spec(arg) -> dict:
  """config.rela.prior for prior `arg.prior` (what rela_targets.py embeds with)."""
  if arg.tpu:
    if arg.prior == 'siglip':
      return dict(kind='big_vision_npz', path=SIGLIP_NPZ, model_name='vit',
                  model=dict(variant='B/16', pool_type='gap'),
                  pp=dict(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3))
    model = dict(variant='S/4' if arg.prior.startswith('cifar') else 'S/16', pool_type='gap')
    if arg.prior == 'random':
      return dict(kind='random', model_name='vit', model=model, seed=0)
    return dict(kind='checkpoint', workdir=prior_workdir(arg.root, arg.prior), model_name='vit',
                model=model)
  if arg.prior == 'random':
    return dict(kind='random', model_name='vit', model=dict(LOCAL_PRIOR_MODEL), seed=0)
  spec = dict(kind='checkpoint', workdir=prior_workdir(arg.root, arg.prior), model_name='vit',
              model=dict(LOCAL_PRIOR_MODEL))
  if arg.prior in BYOL_PRIORS:
    spec['params_key'] = 'encoder'
  return spec


def base_config(arg) -> ml_collections.ConfigDict:
  """A student run: `arg.objective` on a data budget `arg.ratio`, with ReLA unless prior=none."""
  if arg.objective not in ('byol', 'supervised'):
    raise ValueError(f'objective={arg.objective!r}: expected byol or supervised.')
  allowed = TPU_PRIORS if arg.tpu else PRIORS
  if arg.prior not in allowed:
    raise ValueError(f'prior={arg.prior!r}: expected one of {", ".join(allowed)}.')
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  config.objective = arg.objective
  if arg.tpu:
    _tpu(config, arg)
  else:
    _local(config, arg)
  config.input.data_ratio = arg.ratio
  if arg.prior != 'none':
    config.rela = dict(prior=prior_spec(arg), switch=switch_config(arg),
                       targets=targets_path(arg.root, arg.prior, arg.dataset))
  if arg.runlocal:
    runlocal(config)
  return config


def _local(config, arg):
  config.data = dict(name='fashion_mnist', data_dir=None, holdout_size=10_000, split_seed=0)
  byol = arg.objective == 'byol'
  # BYOL makes its views on device (views.py); supervised runs augment on the host.
  config.input = dict(batch_size=arg.batch, channels=1, augment=() if byol else ('flip', 'crop'),
                      num_threads=2, prefetch=4, pp=dict(LOCAL_PP))
  config.model_name = 'vit'
  config.model = dict(LOCAL_STUDENT)
  config.total_epochs = arg.epochs
  config.optax = dict(lr=arg.lr, wd=1e-4, b1=0.9, b2=0.999, warmup_frac=0.05, clip_norm=1.0)
  if byol:
    config.byol = dict(projector_hidden=128, projector_dim=32, predictor_hidden=128,
                       momentum=0.99, momentum_end=1.0, momentum_schedule='cosine')
  else:
    config.label_smoothing = 0.1
  config.log_training_steps = 50
  config.ckpt_steps = 1_000_000  # Runs take a minute: checkpoint at the end (and on SIGTERM).
  config.evals = ml_collections.ConfigDict()
  end = 1_000_000  # Evaluate once, at the last step.
  if byol:  # Table 1 reports linear-probe accuracy; the online classifier's accuracy on the
    # training batches (train/classifier_accuracy) is logged for monitoring.
    config.evals.probe = dict(type='linear_probe', split='test', fit_split='train',
                              fit_examples=10_000, log_steps=end, batch_size=1024)
  else:
    config.evals.test = dict(type='classification', split='test', log_steps=end,
                             batch_size=1024)


def _tpu(config, arg):
  d = TPU_DATASETS.get(arg.dataset)
  if d is None:
    raise ValueError(f'dataset={arg.dataset!r} with tpu: expected one of {", ".join(TPU_DATASETS)}.')
  config.data = dict(name=d['data'], data_dir=None, holdout_size=d['holdout'], split_seed=0,
                     test_split=d['test_split'])
  byol = arg.objective == 'byol'
  config.input = dict(batch_size=d['batch'], channels=3,
                      augment=() if byol else ('flip', 'crop'), num_threads=32, prefetch=8,
                      pp=dict(image_size=d['image_size'], mean=(0.5,) * 3, std=(0.5,) * 3))
  config.model_name = 'vit'
  # bf16 matmuls (float32 parameters, optimiser state, residual stream and norms); on ImageNet
  # the blocks rematerialised too: BYOL runs the student on two views, 2 x 4096 images of
  # ViT-B/16 per step.
  config.model = dict(variant=d['student'], pool_type='gap', dtype_mm='bfloat16',
                      remat=d.get('remat', False))
  config.total_epochs = 100.0  # The paper trains every budget for the same number of epochs.
  config.optax = dict(lr=1e-3, wd=0.05 if byol else 1e-4, b1=0.9, b2=0.999, warmup_frac=0.05,
                      clip_norm=1.0)
  if byol:  # BYOL's own recipe for the target and heads, on a ViT.
    config.byol = dict(projector_hidden=4096, projector_dim=256, predictor_hidden=4096,
                       momentum=0.996, momentum_end=1.0, momentum_schedule='cosine')
  else:
    config.label_smoothing = 0.1
  config.log_training_steps = 100
  config.ckpt_steps = 2000
  config.evals = ml_collections.ConfigDict()
  if byol:
    config.evals.probe = dict(type='linear_probe', split='test', fit_split='train',
                              fit_examples=100_000, log_steps=10_000, batch_size=4096,
                              steps=1000)
  config.evals.test = dict(type='classification', split='test', log_steps=2000, batch_size=4096)


def runlocal(config):
  """Shrinks any ReLA config to a smoke run of seconds (tiny ViT, 8 steps)."""
  config.model = dict(TINY_VIT)
  config.input.batch_size = 16
  config.input.num_threads = 1
  if 'total_epochs' in config:
    del config.total_epochs
  config.total_steps = 8
  config.log_training_steps = 2
  config.ckpt_steps = 4
  if config.get('byol'):
    config.byol.update(projector_hidden=16, projector_dim=8, predictor_hidden=16)
  for ev in config.evals.values():
    ev.update(log_steps=8, batch_size=512)
    if ev.type == 'linear_probe':
      ev.update(fit_examples=512, steps=20)
  if config.get('rela'):
    config.rela.switch = dict(rule='fraction', fraction=0.5)
    if config.rela.prior.kind != 'big_vision_npz':  # Local priors: as prior.py:runlocal.
      config.rela.prior.model = dict(TINY_VIT)
  return config
