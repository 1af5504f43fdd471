r"""Trains a Bad Students reference model, to be frozen and used for scoring.

  python -m big_vision_style.train --config experiments/bad_students/reference.py \
      --workdir workdirs/bad_students/reference_holdout
  # In-domain reference (trained on the learner's own training split), label noise 30%:
  python -m big_vision_style.train \
      --config experiments/bad_students/reference.py:split=train,label_noise=0.3 \
      --workdir workdirs/bad_students/reference_train_noise0.3

Args: runlocal, tpu, split=holdout|train, label_noise=F (noise applies to the train split only,
so a holdout reference is always clean, like the paper's curated held-out data), epochs=N,
seed=N.

TPU slice (`:tpu`): v4-8 (4 chips), the smallest, 20.5 GiB per chip of 30.75 (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.bad_students import common


def get_config(arg=None):
  arg = common.parse(arg, split='holdout', epochs=10.0)
  config = common.base_config(arg)
  config.input.split = arg.split
  # The reference is trained like any learner; its model is the (small) reference model.
  config.model_name = config.reference_model_name
  config.model = config.reference_model
  del config.selection  # A plain, uniformly sampled run.
  if not arg.runlocal:
    if 'total_steps' in config:
      del config.total_steps
    config.total_epochs = arg.epochs if not arg.tpu else 30
  config.evals.test.log_steps = 200
  return config
