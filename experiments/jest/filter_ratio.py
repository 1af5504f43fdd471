r"""JEST Fig. 3 analogue: filter ratio sweep, joint vs independent, learnability vs easy-reference.

  python -m big_vision_style.train --config \
      experiments/jest/filter_ratio.py:filter_ratio=0.8,method=joint,policy=learnability \
      --workdir workdirs/jest/fig3/learnability_joint_f0.8_s0
  # The i.i.d. baseline (f = 0):
  python -m big_vision_style.train --config experiments/jest/filter_ratio.py:policy=uniform \
      --workdir workdirs/jest/fig3/uniform_s0

Paper: f in {0.5, 0.8, 0.9}; joint beats independent and the gap grows with f; matching a
3B-example i.i.d. run takes 2B / 1B / 0.67B examples. Requires the curated reference
(experiments/jest/reference.py). Args: policy, method, filter_ratio, num_chunks, gain, seed,
steps, reference=pretrained|cached (with embedding_cache=PATH), runlocal, tpu.

TPU slice (`:tpu`): v4-128 (64 chips) at f = 0.8, 27.2 GiB per chip of 30.75 (v4-64 runs out);
v4-256 (128 chips) at filter_ratio=0.9, 27.2 GiB (v4-128 runs out) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.jest import common


def get_config(arg=None):
  return common.base_config(common.parse(arg))
