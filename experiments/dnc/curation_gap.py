r"""The curation gap (DnC's motivation): MoCLR on a curated vs an uncurated pool of the same
size, equal steps, linear-probe accuracy on the balanced test split.

  python -m big_vision_style.train --config experiments/dnc/curation_gap.py:pool=uncurated \
      --workdir workdirs/dnc/moclr/uncurated_s0
  python -m big_vision_style.train --config experiments/dnc/curation_gap.py:pool=curated,runlocal \
      --workdir /tmp/gap
  # Paper scale (iNaturalist 2021 vs ImageNet-1k, ViT-B/16, v4-8; see common.py):
  ...curation_gap.py:tpu,pool=uncurated

These runs are also DnC's equal-compute baselines: MoCLR for the DnC budget (`steps`), with its
own schedule ending there (experiments/dnc/reproduce.py).

Args: pool=uncurated|curated, zipf, distractors, pool_seed, seed, steps, batch, lr,
temperature, runlocal, tpu.

TPU slice (`:tpu`): v4-8 (4 chips), the smallest, 27.1 GiB per chip of 30.75 for the MoCLR step
(ViT-B/16, two views of 4096; results/aot: compiled ahead of time with libtpu 0.0.42.1).
"""
from experiments.dnc import common


def get_config(arg=None):
  return common.make_config(common.parse(arg, method='moclr'))
