r"""JEST Fig. 4 analogue: FLOPs per iteration of i.i.d. training, JEST with a live reference,
JEST with cached reference embeddings and Flexi-JEST, and Flexi-JEST's learning curve.

  python -m big_vision_style.train --config experiments/jest/flexi.py:reference=cached,\
embedding_cache=workdirs/jest/reference_curated/train_embeddings.npz \
      --workdir workdirs/jest/flexi_s0

Flexi-JEST scores the super-batch with the learner at a coarse patch size (local: 16 on 32 px,
4 tokens instead of 16; paper: 32 instead of 16 on 256 px) and trains half of the selected
batch at each patch size. Paper, per iteration as % of i.i.d.: JEST 400 (live reference), 233
(cached), Flexi-JEST about 110. The per-iteration numbers come from XLA's cost analysis of the
compiled pieces (reproduce.py `flops_per_iteration`); flexi_cost.py takes Flexi's 170% apart
(`towers=` reshapes the local towers to the paper's proportions). Args as filter_ratio.py.

TPU slice (`:tpu`): v4-64 (32 chips), 26.9 GiB per chip of 30.75; v4-32 runs out of memory
(52.6 GiB) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.jest import common


def get_config(arg=None):
  return common.base_config(common.parse(arg, flexi=True))
