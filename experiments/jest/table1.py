r"""JEST Table 1 analogue: JEST (f = 0.8, learnability, curated reference) against the SigLIP
baseline trained for many more iterations.

  python -m big_vision_style.train --config experiments/jest/table1.py:method_name=jest \
      --workdir workdirs/jest/table1_jest
  python -m big_vision_style.train --config experiments/jest/table1.py:method_name=siglip \
      --workdir workdirs/jest/table1_siglip

Paper (ViT-B/16, 256 px): JEST++ after 4B examples vs SigLIP after 40B: ImageNet zero-shot
76.9 vs 76.7, COCO I2T R@1 70.3 vs 65.2, T2I 53.3 vs 47.4 (JEST++ also pretrains its reference
on more curated data). Locally: JEST for `steps` iterations against the uniform run for 10x
that many, both reporting zero-shot accuracy on the Fashion-MNIST test split and retrieval on
its captioned version. On TPU, `tpu` selects the paper recipe with public data (common.py).

TPU slice (`:tpu`): v4-128 (64 chips): the step of filter_ratio.py:tpu at f = 0.8 (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.jest import common


def get_config(arg=None):
  arg = common.parse(arg, method_name='jest')
  if arg.method_name not in ('jest', 'siglip'):
    raise ValueError(f'method_name={arg.method_name!r}: expected jest or siglip.')
  if arg.method_name == 'siglip':
    arg = common.parse(_with(arg, policy='uniform', steps=10 * arg.steps))
  return common.base_config(arg)


def _with(arg, **changes):
  items = {**arg.to_dict(), **changes}
  del items['method_name']
  return ','.join(f'{k}={v}' for k, v in items.items() if v != '' and v is not None)
