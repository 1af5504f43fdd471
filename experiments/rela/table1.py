r"""ReLA Table 1 analogue: priors of increasing strength x data budgets x datasets.

One run of the grid: `objective` (byol, as in the paper, or supervised) on a budget `ratio`
(each epoch a fresh random 10/20/50/100% of the training split, the same number of epochs for
every budget), with ReLA and prior `prior`, or plain (`prior=none`). BYOL runs report linear-
probe accuracy on the test split (`eval/probe/accuracy`), supervised runs test accuracy.

  # Local (Fashion-MNIST, CPU): a prior, its targets, then the student.
  python -m big_vision_style.train --config experiments/rela/prior.py:prior=holdout \
      --workdir workdirs/rela/priors/holdout
  python -m big_vision_style.rela_targets --config experiments/rela/table1.py:prior=holdout
  python -m big_vision_style.train \
      --config experiments/rela/table1.py:prior=holdout,ratio=0.1,seed=0 \
      --workdir workdirs/rela/byol/holdout/r0.1_s0
  # The whole grid, 3 seeds, with the summary table and plot:
  python -m experiments.rela.reproduce_table1
  # Paper scale on TPU (TFDS data; priors random, cifar10, cifar100, imagenet or siglip):
  ...table1.py:tpu,dataset=cifar100,prior=cifar10,ratio=0.2,root=gs://BUCKET/rela

Args: objective=byol|supervised, prior=none|random|digits|half_classes|holdout (tpu: none,
random, cifar10, cifar100, imagenet, siglip), ratio (in (0, 1]), seed, epochs, batch, lr,
switch=local|paper|fraction, switch_fraction, root (where priors and targets live), dataset
(tpu: cifar10, cifar100, imagenet), runlocal, tpu.

TPU slice (`:tpu`): v4-8 (4 chips), the smallest: ImageNet 26.4 GiB per chip of 30.75 (its BYOL
phase, the largest), CIFAR 3.5 GiB (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.rela import common


def get_config(arg=None):
  return common.base_config(common.parse(arg))
