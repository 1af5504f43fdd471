r"""JEST Fig. 5 analogue: the same JEST run with a reference trained on curated data vs on the
uncurated data the learner sees.

  python -m big_vision_style.train --config experiments/jest/reference.py:pool=uncurated \
      --workdir workdirs/jest/reference_uncurated
  python -m big_vision_style.train \
      --config experiments/jest/reference_curation.py:pool=uncurated \
      --workdir workdirs/jest/fig5_uncurated_s0

Paper: references trained on more curated data (LTIP subsets of increasing quality, vs WebLI)
give larger JEST gains; data curation becomes a scaling axis. Locally the curated pool is the
10k clean `holdout` pairs and the uncurated pool the learner's 50k `train` pairs with
`corruption` (default half) of the captions corrupted; both references train for the same
number of steps. Args: pool=curated|uncurated, plus those of filter_ratio.py.

TPU slice (`:tpu`): v4-128 (64 chips): the step of filter_ratio.py:tpu at f = 0.8 (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.jest import common


def get_config(arg=None):
  arg = common.parse(arg, pool='curated')
  if arg.pool not in ('curated', 'uncurated'):
    raise ValueError(f'pool={arg.pool!r}: expected curated or uncurated.')
  config = common.base_config(arg)
  if not arg.reference_workdir and not arg.tpu:
    config.selection.reference_workdir = common.reference_workdir(arg.pool)
  return config
