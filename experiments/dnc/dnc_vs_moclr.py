r"""DnC vs MoCLR at equal total compute, on the uncurated and on the curated pool (the paper's
main comparison; claim: +1 to 3 points of linear accuracy on uncurated data, within noise on
curated data).

  # DnC (every stage: base, embed, k-means, experts, distillation; resumable):
  python -m big_vision_style.tools.dnc --config experiments/dnc/dnc_vs_moclr.py:pool=uncurated,k=5 \
      --workdir workdirs/dnc/dnc/uncurated_k5_base_s0
  # The equal-compute baseline: the same budget as plain MoCLR (curation_gap.py's run):
  python -m big_vision_style.train --config experiments/dnc/dnc_vs_moclr.py:method=moclr \
      --workdir workdirs/dnc/moclr/uncurated_s0
  # Smoke (seconds) and paper scale (see common.py; v4-16, experts_parallel over sub-meshes):
  ...dnc_vs_moclr.py:runlocal      ...dnc_vs_moclr.py:tpu,k=10,parallel=2
  # Only the distillation stage's step, for compiling it (placeholder teachers, nothing read):
  python -m big_vision_style.tools.aot --config experiments/dnc/dnc_vs_moclr.py:tpu,stage=distill \
      --topology v4-16

A DnC run's `flops/total` counts every stage and equals the budget of `steps` MoCLR steps to
within one distillation step (methods/dnc.py).

Args: method=dnc|moclr, pool=uncurated|curated, k, init=base|scratch, steps (the budget, in
MoCLR steps), base_fraction, experts_fraction, expert_heads=own_cluster|all,
target=projection|embed|features, parallel (experts at once), zipf, distractors, pool_seed,
seed, batch, lr, temperature, runlocal, tpu, stage=distill (the distillation stage alone, from
placeholders: for compiling its step).

TPU slice (`:tpu`): v4-16 (8 chips) for the whole pipeline. Its MoCLR step (base, experts;
ViT-B/16, two views of 4096) fits v4-8 (4 chips), the smallest, at 27.1 GiB per chip of 30.75;
its distillation step (K = 5: the student and 6 teachers on one view of 4096) needs v4-16, 28.4
GiB per chip, and runs out of memory on v4-8 (results/aot: compiled ahead of time with libtpu
0.0.42.1; `:tpu,stage=distill` is that step's config, with placeholder teachers). K = 10 (11
teachers) is not compiled.
"""
from experiments.dnc import common


def get_config(arg=None):
  return common.make_config(common.parse(arg))
