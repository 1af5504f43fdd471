"""Shared pieces of the Bad Students (ClassAct) configs: one learner, a small online actor and a
small frozen reference, with the learner's batch selected from a super-batch on device.

Two scales:
  local (default): Fashion-MNIST on a CPU. Learner ViT (width 96, depth 4, patch 7: 14.7 MFLOP
    per forward, sized so that the 30-run policy comparison fits in about an hour on 2 cores).
    Actors are named after the paper's: `B` (2x smaller than the learner), `S` (8x), `Ti`
    (ViT-mu/7, 31x; the default actor and reference), `mu` (320x).
  tpu: the paper's setting with public data. JFT-300M is private; ImageNet-21k (TFDS
    `imagenet21k` is not in the catalogue: prepare it as ArrayRecord yourself) or ImageNet-1k
    (`tfds:imagenet2012`) substitute for it, with the reference trained on a held-out slice.
"""
import ml_collections

from big_vision_style import config_utils

# Local learner and actor sizes (ViT kwargs, patch 7 on 28x28: 16 tokens).
LOCAL_LEARNER = dict(width=96, depth=4, mlp_dim=384, num_heads=2, patch_size=(7, 7))
# Learner sizes of the compute-scaling figure (`learner=`), named by width and depth; the
# default is the learner of every other figure. Forward MFLOP per image (XLA cost analysis at
# batch 1): 15.1, 3.5 and 1.0, a 15x span. The same Ti actor and reference serve all three:
# the paper keeps its actor fixed as the learner grows.
LOCAL_LEARNERS = {
    'w96d4': LOCAL_LEARNER,
    'w64d2': dict(width=64, depth=2, mlp_dim=256, num_heads=2, patch_size=(7, 7)),
    'w32d2': dict(width=32, depth=2, mlp_dim=128, num_heads=1, patch_size=(7, 7)),
}
LOCAL_ACTORS = {
    'B': dict(width=96, depth=2, mlp_dim=384, num_heads=2, patch_size=(7, 7)),
    'S': dict(width=64, depth=1, mlp_dim=256, num_heads=1, patch_size=(7, 7)),
    'Ti': dict(variant='mu/7'),
    'mu': dict(width=8, depth=1, mlp_dim=32, num_heads=1, patch_size=(7, 7)),
}

# The `tpu` models' matmul precision (models/vit.py `dtype_mm`); local runs stay float32.
TPU_BF16 = dict(dtype_mm='bfloat16')

ARGS = dict(runlocal=False, tpu=False, seed=0, policy='learnability', filter_ratio=0.5,
            method='sample', temperature=1.0, label_noise=0.0, actor='Ti', reference='pretrained',
            reference_workdir='', score_cache='', steps=800, batch=128, lr=1e-3, learner='w96d4')


def parse(arg, **extra):
  return config_utils.parse_arg(arg, **{**ARGS, **extra})


def base_config(arg) -> ml_collections.ConfigDict:
  """The selection config common to every Bad Students figure, from parsed args."""
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  if arg.learner not in LOCAL_LEARNERS:
    raise ValueError(f'learner={arg.learner!r}: expected one of {sorted(LOCAL_LEARNERS)}.')
  if arg.tpu and arg.learner != ARGS['learner']:
    raise ValueError('learner= picks a local learner size; the tpu variant trains ViT-L/16 '
                     '(set config.model.variant to change it).')
  if arg.tpu:
    _tpu(config, arg)
  else:
    _local(config, arg)
  config.selection = dict(policy=arg.policy, filter_ratio=arg.filter_ratio, method=arg.method,
                          temperature=arg.temperature, reference=arg.reference,
                          reference_workdir=arg.reference_workdir or config.reference_workdir,
                          score_cache=arg.score_cache or None)
  if arg.runlocal:
    config.model.update(width=32, depth=1, mlp_dim=64, num_heads=1)
    config.total_steps = 6
    config.input.batch_size = 16
    config.log_training_steps = 3
    config.ckpt_steps = 3
    config.evals.test.update(log_steps=3, batch_size=512)
  return config


def _local(config, arg):
  config.data = dict(name='fashion_mnist', data_dir=None, holdout_size=10_000, split_seed=0,
                     label_noise=arg.label_noise, noise_seed=0)
  # No augmentation: scores are of the image the learner sees, and the score cache (computed
  # on un-augmented images) then gives exactly the live reference's scores.
  config.input = dict(batch_size=arg.batch, channels=1, augment=(), num_threads=2, prefetch=4,
                      pp=dict(image_size=28, mean=(0.286,), std=(0.353,)))
  config.model_name = 'vit'
  config.model = dict(LOCAL_LEARNERS[arg.learner], pool_type='gap')
  config.actor_model_name = 'vit'
  config.actor_model = dict(LOCAL_ACTORS[arg.actor], pool_type='gap')
  config.reference_model_name = 'vit'
  config.reference_model = dict(LOCAL_ACTORS['Ti'], pool_type='gap')
  config.reference_workdir = 'workdirs/bad_students/reference_holdout'
  config.total_steps = arg.steps
  config.label_smoothing = 0.1
  config.optax = dict(lr=arg.lr, wd=1e-4, b1=0.9, b2=0.999, warmup_frac=0.05, clip_norm=1.0)
  # ClassAct-Online: the reference sees 1/(1-f) times the batch at 2x the learning rate.
  config.reference_optax = dict(config.optax, lr=2 * arg.lr)
  config.log_training_steps = 50
  config.ckpt_steps = 400
  config.evals = ml_collections.ConfigDict()
  config.evals.test = dict(type='classification', split='test', log_steps=100, batch_size=1024)


def _tpu(config, arg):
  config.data = dict(name='tfds:imagenet2012', data_dir=None, holdout_size=100_000,
                     split_seed=0, label_noise=arg.label_noise, noise_seed=0,
                     test_split='validation')
  config.input = dict(batch_size=4096, channels=3, augment=('flip', 'crop'), num_threads=32,
                      prefetch=8, pp=dict(image_size=224, mean=(0.5, 0.5, 0.5),
                                          std=(0.5, 0.5, 0.5)))
  config.model_name = 'vit'
  # bf16 matmuls (float32 parameters, optimiser state, residual stream and norms) everywhere,
  # and the ViT-L learner's blocks rematerialised: in float32 without remat its step needs
  # 62.8 GiB per chip on v4-32 (results/aot/README.md).
  config.model = dict(variant='L/16', pool_type='gap', **TPU_BF16, remat=True)
  config.actor_model_name = 'vit'
  # The B/16 actor (half the learner) trains on the whole batch like the learner: remat too.
  config.actor_model = dict(variant=f'{arg.actor}/16', pool_type='gap', **TPU_BF16,
                            remat=arg.actor == 'B')
  config.reference_model_name = 'vit'
  config.reference_model = dict(variant='Ti/16', pool_type='gap', **TPU_BF16)
  config.reference_workdir = 'gs://YOUR_BUCKET/bad_students/reference_holdout'
  config.total_epochs = 90
  config.label_smoothing = 0.1
  config.optax = dict(lr=1e-3, wd=1e-4, b1=0.9, b2=0.999, warmup_steps=10_000, clip_norm=1.0)
  config.reference_optax = dict(config.optax, lr=2e-3)
  config.log_training_steps = 100
  config.ckpt_steps = 2000
  config.evals = ml_collections.ConfigDict()
  config.evals.test = dict(type='classification', split='test', log_steps=2000, batch_size=4096)
