"""What the loop gives a method (`Context`) and what a method gives the loop (`Built`).

A method module (methods/supervised.py, contrastive.py, byol.py, or one registered from
anywhere with `methods.register`) defines:

  prepare(config, source) -> (source, one_off)   optional: attach per-example tables
                                                 (id_table.with_columns) and their one-off
                                                 FLOPs by category (flops.CATEGORIES)
  build(ctx: Context) -> Built                   everything else the loop runs

and the loop (train.py) does the rest the same way for every method: it jits each phase's step
with the state donated and replicated out, compiles it once, measures its FLOPs with XLA and
asks the phase to split them by category, runs evaluators on the functions in `predict_fns`,
and checkpoints the plain-dict state.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from big_vision_style import flops
from big_vision_style import input_pipeline


@dataclasses.dataclass
class Context:
  """The run a method is built for."""
  config: Any
  mesh: jax.sharding.Mesh
  num_classes: int | None
  total_steps: int
  example: dict[str, jax.ShapeDtypeStruct]  # One preprocessed training record, no batch axis.
  train_rng: jax.Array  # Steps fold their step number into it.
  # Build without reading anything from disk (ahead-of-time compilation, benchmarks): frozen
  # models get abstract parameters of the right shapes, cached tables placeholder constants.
  abstract: bool = False

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch_size(self) -> int:
    return self.config.input.batch_size

  def batch_spec(self, size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Abstract global batch of `size` records, sharded over 'data' (for compiling)."""
    sharding = input_pipeline.data_sharding(self.mesh)
    return {k: jax.ShapeDtypeStruct((size,) + tuple(v.shape), v.dtype, sharding=sharding)
            for k, v in self.example.items()}

  def image_shape(self) -> tuple[int, ...]:
    """(1, H, W, C): what models are initialised with."""
    return (1,) + tuple(self.example['image'].shape)


@dataclasses.dataclass
class Phase:
  """One program the loop runs for a stretch of steps (most methods have one)."""
  name: str
  # (state, frozen, batch, step) -> (state, measurements); plain, the loop jits it.
  step: Callable
  # (the whole compiled step's FLOPs, state, frozen) -> FLOPs per step by category.
  costs: Callable[[float, Any, Any], dict[str, float]]
  # Phases before the last: the step (read from the state, on the host) at which this phase
  # ended, or None while it runs; `end_metric` names it in every metrics row after.
  ended: Callable[[Any], int | None] | None = None
  end_metric: str | None = None


@dataclasses.dataclass
class Built:
  init: Callable[[jax.Array], dict]  # rng -> the plain-dict train state (jittable).
  phases: list[Phase]
  super_batch_size: int  # Examples each step reads (B; b when nothing is selected).
  frozen: dict = dataclasses.field(default_factory=dict)  # Never donated, never trained.
  # Costs paid before step 1 that building revealed (a pretrained reference's training).
  one_off: dict[str, float] = dataclasses.field(default_factory=dict)
  # Named functions of (params, *inputs) that evaluators choose by key (config.evals.*.pred):
  # 'predict' (logits, or a two-tower model's (zimg, ztxt, out)) and 'features' (pooled).
  predict_fns: dict[str, Callable] = dataclasses.field(default_factory=dict)
  # What a phase wrapper (ReLA) needs: the learner's optimiser and schedule, and the method's
  # hooks (features, classify, after_update, RELA_FROZEN); None if it cannot be wrapped.
  tx: Any = None
  schedule: Any = None
  rela_hooks: Any = None
  # The models and optimisers by role, for tools and tests that compose pieces of the step.
  models: dict = dataclasses.field(default_factory=dict)
  txs: dict = dataclasses.field(default_factory=dict)


def zero_costs() -> dict[str, float]:
  return {c: 0.0 for c in flops.CATEGORIES}


def all_learner_train(whole: float, state, frozen) -> dict[str, float]:
  """`Phase.costs` of a step that only trains the learner: all of it is learner_train."""
  del state, frozen
  return {**zero_costs(), 'learner_train': whole}
