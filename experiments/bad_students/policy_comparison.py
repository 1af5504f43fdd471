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

TPU slice (`:tpu`): v4-16 (8 chips), 28.3 GiB per chip of 30.75 (policy=rho 19.9); v4-8
runs out of memory (37.2 / 31.3 GiB) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.bad_students import common


def get_config(arg=None):
  return common.base_config(common.parse(arg))
