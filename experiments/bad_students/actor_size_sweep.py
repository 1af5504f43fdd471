r"""Bad Students Fig. 4 analogue: actor size sweep (ViT-B, S, Ti, mu actors for one learner),
for learnability and easy-reference.

Paper: ViT-L learner on JFT; learnability degrades gracefully as the actor shrinks (learner
speed-up 31/28/26/16% for B/S/Ti/mu) while easy-reference collapses; a ViT-B actor is
compute-negative and Ti is best for total compute. The reference has the actor's size.
Local: the learner of common.LOCAL_LEARNER with actors B (2x smaller), S (8x), Ti (31x),
mu (320x); TPU: ViT-L/16 learner with B/16, S/16, Ti/16, mu/16 actors on ImageNet-1k.

  python -m big_vision_style.train \
    --config experiments/bad_students/actor_size_sweep.py:actor=S,policy=learnability \
    --workdir workdirs/bad_students/actor_sweep/learnability_S
  # The matching reference first (same size as the actor):
  python -m big_vision_style.train \
    --config experiments/bad_students/actor_size_sweep.py:reference_only,actor=S \
    --workdir workdirs/bad_students/ref_S

Args: those of common.ARGS (actor=B|S|Ti|mu), plus reference_only (train the reference of
that size on the holdout split instead).

TPU slice (`:tpu`): v4-16 (8 chips), 24.9 GiB per chip of 30.75 with the B/16 actor (the
largest); v4-8 runs out of memory (39.9 GiB) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.bad_students import common
from experiments.bad_students import reference


def get_config(arg=None):
  arg = common.parse(arg, reference_only=False)
  if arg.reference_only:  # The reference of this size, trained on the holdout split.
    flags = [f'seed={arg.seed}'] + [k for k in ('runlocal', 'tpu') if arg[k]]
    config = reference.get_config(','.join(flags))
    config.model = dict(common.base_config(arg).actor_model)
    return config
  config = common.base_config(arg)
  config.reference_model = dict(config.actor_model)
  if not arg.reference_workdir:
    config.selection.reference_workdir = f'workdirs/bad_students/ref_{arg.actor}'
  return config
