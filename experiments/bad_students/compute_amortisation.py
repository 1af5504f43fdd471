r"""Bad Students Fig. 5 analogue: total compute at the four amortisation levels.

Every run logs all four levels (`flops/total`, `flops/total_pretrained_reference`,
`flops/total_cached_reference`, `flops/total_learner_only`); this config adds the run that
makes the third level real: reference scores precomputed once and looked up by example id.

  # 1. The cache (one reference forward per training example, counted as a one-off cost):
  python -m big_vision_style.score_cache \
    --config experiments/bad_students/compute_amortisation.py \
    --out workdirs/bad_students/reference_scores.npz
  # 2. Training with cached scores:
  python -m big_vision_style.train \
    --config experiments/bad_students/compute_amortisation.py \
    --workdir workdirs/bad_students/amortisation/learnability_cached
  # The comparison plot at all four levels: results/bad_students/amortisation.png.

Args: those of common.ARGS (reference defaults to cached here).

TPU slice (`:tpu`): v4-16 (8 chips), 28.2 GiB per chip of 30.75; v4-8 runs out of memory
(37.2 GiB) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.bad_students import common


def get_config(arg=None):
  arg = common.parse(arg, reference='cached',
                     score_cache='workdirs/bad_students/reference_scores.npz')
  return common.base_config(arg)
