r"""ReLA's two ImageNet-1K claims, expressed for Cloud TPU with TFDS data (`tfds:imagenet2012`).

  1. half_beats_full: BYOL with ReLA on 50% of ImageNet-1K (every epoch a fresh random half)
     beats BYOL on 100%. Runs: `claim=half_beats_full,arm=rela` (50%, prior) against
     `arm=full` (100%, no ReLA) and `arm=half` (50%, no ReLA).
  2. cifar10_prior: a small prior trained on CIFAR-10 improves the student on 10% of ImageNet-1K
     (+7.7 points linear-probe accuracy in the paper). Runs: `claim=cifar10_prior,arm=rela`
     against `arm=plain` (10%, no ReLA).

The paper's student is a ResNet-50 and its CIFAR-10 prior a ResNet-18; models/ has ViTs only,
so the student here is a ViT-B/16 (86M parameters, close to ResNet-50's 25M in ImageNet
accuracy when trained well, and the standard ViT for BYOL-style methods) and the CIFAR-10 prior
a ViT-S/4 trained at 32x32 (experiments/rela/prior.py:tpu,prior=cifar10) that embeds ImageNet
images resized to 32x32. Claim 1's prior is the public SigLIP B/16 image tower (a free
"CLIP-like" model, loaded by priors.load_big_vision_npz); `prior=imagenet` uses a ViT-S/16
trained on the held-out slice instead.

  # Once per prior: its targets for the ImageNet training split.
  python -m big_vision_style.rela_targets \
      --config experiments/rela/imagenet_claims.py:claim=cifar10_prior,arm=rela,root=gs://B/rela
  # Then every arm (tpu/launch.sh runs the same command on every host):
  python -m big_vision_style.train \
      --config experiments/rela/imagenet_claims.py:claim=cifar10_prior,arm=rela,root=gs://B/rela \
      --workdir gs://B/rela/imagenet/cifar10_prior_rela

Args: claim=half_beats_full|cifar10_prior, arm (half_beats_full: rela, full, half;
cifar10_prior: rela, plain), prior (claim 1: siglip or imagenet), seed, epochs, root, runlocal.

TPU slice: v4-8 (4 chips), the smallest, 26.4 GiB per chip of 30.75 (the ReLA arm's BYOL phase)
(results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from big_vision_style import config_utils
from experiments.rela import common

ARMS = {
    'half_beats_full': {'rela': (0.5, True), 'full': (1.0, False), 'half': (0.5, False)},
    'cifar10_prior': {'rela': (0.1, True), 'plain': (0.1, False)},
}


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, claim='half_beats_full', arm='rela', prior='siglip', seed=0,
                               epochs=100.0, root='gs://YOUR_BUCKET/rela', runlocal=False)
  if arg.claim not in ARMS or arg.arm not in ARMS[arg.claim]:
    raise ValueError(f'claim={arg.claim!r}, arm={arg.arm!r}: expected one of '
                     f'{ {c: list(a) for c, a in ARMS.items()} }.')
  ratio, with_rela = ARMS[arg.claim][arg.arm]
  prior = 'cifar10' if arg.claim == 'cifar10_prior' else arg.prior
  table_arg = common.parse(f'tpu,dataset=imagenet,objective=byol,ratio={ratio},seed={arg.seed},'
                           f'prior={prior if with_rela else "none"},root={arg.root},'
                           f'switch=paper')
  config = common.base_config(table_arg)
  config.total_epochs = arg.epochs
  if with_rela and prior == 'cifar10':  # The prior sees images at the size it was trained on.
    config.rela.prior.pp = dict(image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
  if arg.runlocal:
    common.runlocal(config)
  return config
