r"""Trains a JEST / ActiveCLIP reference model: a two-tower model with i.i.d. batches, frozen
afterwards and used for scoring.

  # Curated reference (the default; the papers' LTIP / ALIGN-trained reference): the clean
  # captions of the held-out images.
  python -m big_vision_style.train --config experiments/jest/reference.py \
      --workdir workdirs/jest/reference_curated
  # Uncurated reference (Fig. 5 analogue): the learner's own noisy pool.
  python -m big_vision_style.train --config experiments/jest/reference.py:pool=uncurated \
      --workdir workdirs/jest/reference_uncurated

Args: runlocal, tpu, pool=curated|uncurated, corruption=F, epochs=N, seed=N. The curated pool
has 10k pairs and the uncurated 50k: both train for the same number of *steps* (`epochs` of the
curated pool), so the two references differ in their data's quality, not in their compute.

TPU slice (`:tpu`): v4-64 (32 chips), 26.8 GiB per chip of 30.75; v4-32 runs out of memory
(44.2 GiB) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.jest import common


def get_config(arg=None):
  arg = common.parse(arg, pool='curated', epochs=30.0, policy='uniform')
  config = common.base_config(arg)
  if arg.pool not in ('curated', 'uncurated'):
    raise ValueError(f'pool={arg.pool!r}: expected curated or uncurated.')
  config.input.split = 'holdout' if arg.pool == 'curated' else 'train'
  config.model_name = config.reference_model_name
  config.model = config.reference_model
  if not arg.runlocal and not arg.tpu:
    config.total_steps = int(arg.epochs * 10_000 // config.input.batch_size)
  for ev in config.evals.values():
    ev.log_steps = 500
  return config
