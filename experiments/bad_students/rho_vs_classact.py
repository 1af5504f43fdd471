r"""Bad Students Table 1 analogue: RHO-LOSS against ClassAct with three references.

Paper (ViT-B learner, Tiny reference): RHO 0% learner speed-up / -79% compute (the learner
scores its own super-batch); ClassAct-HO (held-out reference), in-domain reference and
ClassAct-Online (reference trained in parallel on the whole super-batch, 2x learning rate)
all about 17-18% learner / 2-3% compute.

  variant=rho        policy=rho, held-out reference
  variant=holdout    learnability, reference trained on the holdout split (ClassAct-HO)
  variant=in_domain  learnability, reference trained on the train split
                     (train it with reference.py:split=train)
  variant=online     learnability, reference trained online on the super-batch

  python -m big_vision_style.train \
    --config experiments/bad_students/rho_vs_classact.py:variant=online \
    --workdir workdirs/bad_students/rho_vs_classact/online

Args: those of common.ARGS plus variant. TPU: ViT-B/16 learner, ViT-Ti/16 actor and reference.

TPU slice (`:tpu`): v4-8 (4 chips), the smallest, 30.0 GiB per chip of 30.75 for the online
variant (the largest) (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.bad_students import common

_VARIANTS = {
    'rho': dict(policy='rho'),
    'holdout': dict(policy='learnability'),
    'in_domain': dict(policy='learnability'),
    'online': dict(policy='learnability', reference='online'),
}


def get_config(arg=None):
  arg = common.parse(arg, variant='holdout')
  if arg.variant not in _VARIANTS:
    raise ValueError(f'variant={arg.variant!r}: expected one of {", ".join(_VARIANTS)}.')
  config = common.base_config(arg)
  config.selection.update(_VARIANTS[arg.variant])
  if arg.variant == 'in_domain' and not arg.reference_workdir:
    config.selection.reference_workdir = 'workdirs/bad_students/reference_train'
  if arg.tpu:
    config.model = dict(variant='B/16', pool_type='gap', **common.TPU_BF16, remat=True)
  return config
