r"""Uniform-sampling ViT baseline on Fashion-MNIST (the learner every selection method is
compared against).

  python -m big_vision_style.train \
      --config experiments/baseline/fashion_mnist.py --workdir workdirs/baseline
  # Smoke run of seconds:
  python -m big_vision_style.train \
      --config experiments/baseline/fashion_mnist.py:runlocal --workdir /tmp/smoke

Args (comma-separated): runlocal, demo, seed=N, variant=Ti/7, depth=N (overrides the variant's
depth; 0 keeps it), width=N, epochs=N, batch=N, label_noise=F, lr=F.

The default learner is a ViT-Ti/7 cut to 4 layers (width 192, 16 tokens of 7x7 pixels, 175
MFLOP per training example): the largest ViT for which a 10-epoch run takes about 20 minutes
on a 2-core CPU. `demo` is the 2-minute version that `make demo` runs.
"""
import ml_collections

from big_vision_style import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, runlocal=False, demo=False, seed=0, variant='Ti/7', depth=4,
                               width=0,
                               epochs=10.0, batch=256, label_noise=0.0, lr=1e-3)
  config = ml_collections.ConfigDict()
  config.seed = arg.seed

  config.data = dict(name="fashion_mnist", data_dir=None,  # None: $FASHION_MNIST_DIR or the Debian package.
                     holdout_size=10_000, split_seed=0,
                     label_noise=arg.label_noise, noise_seed=arg.seed)
  config.input = dict(
      batch_size=arg.batch, channels=1, augment=('flip', 'crop'), num_threads=2, prefetch=4,
      # Fashion-MNIST train-set mean and std of pixel values in [0, 1].
      pp=dict(image_size=28, mean=(0.286,), std=(0.353,)))

  config.model_name = 'vit'
  config.model = dict(variant=arg.variant, pool_type='gap')
  if arg.depth:
    config.model.depth = arg.depth
  if arg.width:
    # Keep big_vision's ratios: MLP 4x the width, 64-dim heads.
    config.model.update(width=arg.width, mlp_dim=4 * arg.width, num_heads=max(arg.width // 64, 1))

  config.total_epochs = arg.epochs
  config.label_smoothing = 0.1
  # The papers' optimiser (METHODS.md): AdamW, peak lr 1e-3, warm-up then cosine decay.
  config.optax = dict(lr=arg.lr, wd=1e-4, b1=0.9, b2=0.999, warmup_frac=0.05, clip_norm=1.0)

  config.log_training_steps = 50
  config.ckpt_steps = 500
  config.evals = ml_collections.ConfigDict()
  config.evals.test = dict(type='classification', split='test', log_steps=250, batch_size=1024)

  if arg.demo:  # About 2 minutes on a 2-core CPU.
    config.model.depth = 2
    config.total_epochs = 2
    config.evals.test.log_steps = 100

  if arg.runlocal:  # Seconds on a laptop CPU: tiny model, few steps, frequent logs.
    config.model.update(width=32, depth=2, mlp_dim=64, num_heads=2)
    config.input.batch_size = 32
    config.total_epochs = None
    config.total_steps = 20
    config.log_training_steps = 5
    config.ckpt_steps = 10
    config.evals.test.update(log_steps=10, batch_size=512)
  return config
