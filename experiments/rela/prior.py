r"""Trains a ReLA prior: a small supervised model that is then frozen and embeds the student's
training images once (rela_targets.py).

Local priors (the ViT of common.LOCAL_PRIOR_MODEL), weakest to strongest after `random`
(which needs no training):
  digits        scikit-learn's 8x8 digits, upsampled to 28x28 (1,437 training images; out of
                domain: strokes, not clothes);
  half_classes  the held-out Fashion-MNIST split, classes 0-4 only (about 5k images);
  holdout       the whole held-out split (10k images, disjoint from the student's `train`);
  byol_holdout  BYOL on the same held-out split, without labels (the paper's Table 1 priors are
                self-supervised models and CLIP; the three above are trained with labels).
                Its schedule is the strong BYOL baseline's (results/rela/strong_baseline: lr
                4e-3, BYOL's views) for as many images as that baseline sees: 60 epochs of
                10k = 12 epochs of the 50k `train`. Only its encoder becomes the prior (its
                online classifier, trained on detached features for monitoring, is dropped).

  python -m big_vision_style.train --config experiments/rela/prior.py:prior=digits \
      --workdir workdirs/rela/priors/digits
  # TPU (ViT priors on TFDS data, like the paper's CIFAR-10 / CIFAR-100 / ImageNet priors):
  ...prior.py:tpu,prior=cifar10 --workdir gs://BUCKET/rela/priors/cifar10

Args: prior, epochs (0: the prior's default), seed, runlocal, tpu.

The label-free prior's run reports the linear probe of its encoder (fitted on `train`, scored on
`test`) as eval/probe/accuracy, the others their classifier's test accuracy.

TPU slice (`:tpu`): v4-8 (4 chips), the smallest: the ImageNet prior 10.7 GiB per chip of 30.75
(results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
import ml_collections

from big_vision_style import config_utils
from experiments.rela import common

# name: (data config, training split, default epochs).
LOCAL = {
    'digits': (dict(name='sklearn_digits', image_size=28), 'train', 30),
    'half_classes': (dict(name='fashion_mnist', data_dir=None, holdout_size=10_000, split_seed=0,
                          classes=common.HALF_CLASSES), 'holdout', 20),
    'holdout': (dict(name='fashion_mnist', data_dir=None, holdout_size=10_000, split_seed=0),
                'holdout', 20),
}
TPU = {
    'cifar10': (dict(name='tfds:cifar10', data_dir=None, holdout_size=0, test_split='test'),
                'train', 200, 32, 'S/4'),
    'cifar100': (dict(name='tfds:cifar100', data_dir=None, holdout_size=0, test_split='test'),
                 'train', 200, 32, 'S/4'),
    'imagenet': (dict(name='tfds:imagenet2012', data_dir=None, holdout_size=0,
                      test_split='validation'), 'train', 90, 224, 'S/16'),
}


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, prior='holdout', epochs=0.0, seed=0, runlocal=False,
                               tpu=False)
  table = TPU if arg.tpu else {**LOCAL, **common.BYOL_PRIORS}
  if arg.prior not in table:
    raise ValueError(f'prior={arg.prior!r}: trained priors are {", ".join(table)} (random needs '
                     'no training).')
  if arg.prior in common.BYOL_PRIORS:
    return _self_supervised(arg)
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  if arg.tpu:
    data, split, epochs, size, variant = TPU[arg.prior]
    config.data = data
    config.input = dict(batch_size=1024, channels=3, augment=('flip', 'crop'), num_threads=32,
                        prefetch=8, split=split,
                        pp=dict(image_size=size, mean=(0.5,) * 3, std=(0.5,) * 3))
    config.model_name = 'vit'
    config.model = dict(variant=variant, pool_type='gap', dtype_mm='bfloat16')
    config.log_training_steps, config.ckpt_steps, eval_every = 100, 2000, 2000
  else:
    data, split, epochs = LOCAL[arg.prior]
    config.data = data
    config.input = dict(batch_size=128, channels=1, augment=('flip', 'crop'), num_threads=2,
                        prefetch=4, split=split, pp=dict(common.LOCAL_PP))
    config.model_name = 'vit'
    config.model = dict(common.LOCAL_PRIOR_MODEL)
    config.log_training_steps, config.ckpt_steps, eval_every = 50, 1_000_000, 1_000_000
  config.total_epochs = arg.epochs or epochs
  config.label_smoothing = 0.1
  config.optax = dict(lr=2e-3, wd=1e-4, b1=0.9, b2=0.999, warmup_frac=0.05, clip_norm=1.0)
  config.evals = ml_collections.ConfigDict()
  # The prior's own test accuracy (on its own data: digits, or the classes it was trained on).
  config.evals.test = dict(type='classification', split='test', log_steps=eval_every,
                           batch_size=1024)
  if arg.runlocal:
    config.model = dict(common.TINY_VIT, patch_size=(4, 4) if arg.tpu else (7, 7))
    config.input.batch_size = 16
    del config.total_epochs
    config.total_steps = 8
    config.log_training_steps = 4
    config.ckpt_steps = 8
    config.evals.test.update(log_steps=8, batch_size=512)
  return config


def _self_supervised(arg) -> ml_collections.ConfigDict:
  """A BYOL run of the prior's model on its split: the encoder never sees a label."""
  split, epochs, lr = common.BYOL_PRIORS[arg.prior]
  config = common.base_config(common.parse(
      f'objective=byol,prior=none,ratio=1.0,seed={arg.seed},epochs={arg.epochs or epochs},'
      f'lr={lr}' + (',runlocal' if arg.runlocal else '')))
  config.input.split = split
  if not arg.runlocal:
    config.model = dict(common.LOCAL_PRIOR_MODEL)
  return config
