r"""DnC ablations: the number of clusters K (3, 5, 10) and the experts' initialisation
(`init=base`: from the base model; `init=scratch`: random), at the same budget as
dnc_vs_moclr.py. The papers' descriptions differ on the initialisation, so both are run and
reported (experiments/dnc/reproduce.py).

  python -m big_vision_style.tools.dnc --config experiments/dnc/ablations.py:k=10,init=scratch \
      --workdir workdirs/dnc/dnc/uncurated_k10_scratch_s0
  ...ablations.py:runlocal,k=3          ...ablations.py:tpu,k=10,init=scratch

Args: as dnc_vs_moclr.py (k and init are the ablated ones).

TPU slice (`:tpu`): v4-16 (8 chips) for the whole pipeline. Its MoCLR step (base, experts;
ViT-B/16, two views of 4096) fits v4-8 (4 chips), the smallest, at 27.1 GiB per chip of 30.75;
its distillation step (K = 5: the student and 6 teachers on one view of 4096) needs v4-16, 28.4
GiB per chip, and runs out of memory on v4-8 (results/aot: compiled ahead of time with libtpu
0.0.42.1; `:tpu,stage=distill` is that step's config, with placeholder teachers). K = 10 (11
teachers) is not compiled.
"""
from experiments.dnc import common

GRID = dict(k=common.KS, init=common.INITS)


def get_config(arg=None):
  return common.make_config(common.parse(arg))
