r"""Bad Students' ActiveCLIP reference-transfer table: per-pair learnability selection for
contrastive image-text training with a small online actor, and a reference trained on curated
vs on uncurated data.

  python -m big_vision_style.train --config experiments/bad_students/active_clip.py:pool=curated \
      --workdir workdirs/bad_students/active_clip_curated_s0
  python -m big_vision_style.train --config experiments/bad_students/active_clip.py:pool=uncurated \
      --workdir workdirs/bad_students/active_clip_uncurated_s0

The learner is scored by the online actor (`scorer=actor`: a two-tower model with half-width
towers, trained on the selected pairs with the same SigLIP loss) minus the frozen reference,
pair by pair (`method=independent`), keeping b of B = 2b (f = 0.5), as in the paper. Paper
(ViT-B learner, ALIGN vs LTIP references): the curated (LTIP) reference doubles the speed-up
(48% vs 23% on ImageNet zero-shot; COCO retrieval likewise). Public substitutes on TPU: the
learner on DataComp / LAION, references on DataComp (uncurated) vs CC12M (curated), see
experiments/jest/common.py. Locally: the curated `holdout` pool vs the uncurated `train` pool
of captioned Fashion-MNIST (references from experiments/jest/reference.py). Args: pool,
seed, steps, filter_ratio, policy, runlocal, tpu.

TPU slice (`:tpu`): v4-64 (32 chips), 29.4 GiB per chip of 30.75; v4-32 runs out of memory
(79.4 GiB) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.jest import common


def get_config(arg=None):
  arg = common.parse(arg, pool='curated', method='independent', scorer='actor',
                     filter_ratio=0.5)
  if arg.pool not in ('curated', 'uncurated'):
    raise ValueError(f'pool={arg.pool!r}: expected curated or uncurated.')
  config = common.base_config(arg)
  if not arg.reference_workdir and not arg.tpu and arg.policy != 'uniform':
    config.selection.reference_workdir = common.reference_workdir(arg.pool)
  return config
