r"""Bad Students policy comparison (the paper's Fig. 2 / Table 2 analogue): uniform,
hard-learner, easy-reference, learnability and RHO at the same learner budget.

  # Local (Fashion-MNIST, CPU); the reference must exist first (reference.py):
  python -m big_vision_style.train \
      --config experiments/bad_students/policy_comparison.py:policy=learnability,seed=0 \
      --workdir workdirs/bad_students/learnability_s0
  # With 30% symmetric label noise:
  ...policy_comparison.py:policy=rho,label_noise=0.3
  # Paper scale on TPU (ViT-L learner, ViT-Ti actor, ImageNet-1k substituting for JFT):
  ...policy_comparison.py:tpu,policy=learnability

Args: policy, filter_ratio (f; super-batch b/(1-f), paper 0.5), method=sample|topk,
temperature, actor=B|S|Ti|mu, reference=pretrained|online|cached, reference_workdir,
score_cache, label_noise, steps, batch, lr, seed, runlocal, tpu.
"""
from experiments.bad_students import common


def get_config(arg=None):
  return common.base_config(common.parse(arg))
