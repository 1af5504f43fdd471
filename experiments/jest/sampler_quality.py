r"""JEST Fig. 2 analogue: how well the chunked sampler approximates sampling sub-batches with
probability proportional to exp(gain * batch learnability), against brute-force Gibbs sampling,
and the learnability it reaches vs the filter ratio.

There is no training run of its own: experiments/jest/reproduce.py (`sampler_quality`) scores
one super-batch of 640 training pairs with the learner of the uniform run (this config's
`selection.reference_workdir` names the reference), draws sub-batches of 128 with N in
{1, ..., 128} chunks and runs 40 Gibbs sweeps (5,120 single-slot updates) on the dense 640 x
640 score matrix. Paper: the chunked sampler reaches the Gibbs value in 16-32 iterations where
Gibbs needs about 2,000. `get_config` returns the selection config those samples use.

TPU slice (`:tpu`): v4-128 (64 chips): the step of filter_ratio.py:tpu at f = 0.8 (results/aot: compiled ahead of time with libtpu 0.0.42.1, bf16 matmuls).
"""
from experiments.jest import common


def get_config(arg=None):
  return common.base_config(common.parse(arg))
