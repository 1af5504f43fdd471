r"""Bad Students Fig. 3 analogue, JFT compute scaling: learnability with ViT-Ti and ViT-S actors
against uniform sampling, at several learner compute budgets.

Paper: ViT-L learner, five budgets from about 5.5e19 to 9e20 FLOPs on JFT-300M (private);
learnability saves 32-33% of learner compute and 25-28% of total compute with a Ti actor.
TPU: ImageNet-1k (`tfds:imagenet2012`) stands in for JFT; `budget` scales total_epochs.

  # One point of the sweep (local): budget in learner steps, actor Ti or S.
  python -m big_vision_style.train --config \
    experiments/bad_students/compute_scaling.py:policy=learnability,actor=S,budget=800 \
    --workdir workdirs/bad_students/scaling/learnability_S_800
  # Sweep: for budget in 200 400 800 1600; for policy/actor in uniform/Ti learnability/Ti
  # learnability/S. On TPU add `tpu` (budget then means epochs: 3, 6, 12, 24, 45).

Args: those of common.ARGS, plus budget (learner steps locally, epochs on TPU).

TPU slice (`:tpu`): v4-16 (8 chips), 29.5 GiB per chip of 30.75 with the S/16 actor (the larger);
v4-8 runs out of memory (45.4 GiB) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.bad_students import common


def get_config(arg=None):
  arg = common.parse(arg, budget=0)  # 0: the default budget (800 steps / 90 epochs).
  config = common.base_config(arg)
  if arg.budget and not arg.runlocal:
    if arg.tpu:
      config.total_epochs = arg.budget
    else:
      config.total_steps = arg.budget
  return config
