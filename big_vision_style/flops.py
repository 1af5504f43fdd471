"""FLOPs measured from XLA's cost analysis of the compiled step functions, and counters by category.

Two facts about XLA's numbers shape this module:
  * A compiled SPMD program's cost analysis is *per device*; the global figure is that times
    the number of devices the program runs on (each of them executes its partition).
  * HloCostAnalysis counts a while-loop body once, whatever its trip count. We therefore walk
    the step's jaxpr, and for every `scan` of length L add (L - 1) times the XLA cost of its
    body (lowered on its own), recursively. Loops with a data-dependent trip count (`while`)
    cannot be corrected; they are reported in `StepCost.uncorrected_loops`.
Analytic formulas (e.g. `models.vit.analytic_forward_flops`) serve only as a cross-check.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.extend.core as jex_core

# Categories of compute, as the Bad Students paper breaks total cost down. `scoring` holds the
# scoring forwards of the actor (or, for RHO, the learner) and the selection itself. ReLA adds
# its prior's one-off costs: embedding the training set once, and training the prior (zero for
# a random prior, and free for a public one).
CATEGORIES = ('learner_train', 'scoring', 'actor_train', 'reference_scoring', 'reference_train',
              'prior_embedding', 'prior_train')


def _flops_of(cost_analysis: Any) -> float:
  # Older jax returns a list with one dict per program; newer returns the dict.
  if isinstance(cost_analysis, (list, tuple)):
    cost_analysis = cost_analysis[0] if cost_analysis else {}
  return float((cost_analysis or {}).get('flops', 0.0))


@dataclasses.dataclass(frozen=True)
class StepCost:
  flops: float  # Global FLOPs of one call: xla_flops * num_devices + loop_correction.
  xla_flops: float  # As reported by XLA (per device for a compiled program).
  num_devices: int
  loop_correction: float
  uncorrected_loops: int


def _varying_axes(aval) -> tuple[str, ...]:
  """The mesh axes over which a value inside shard_map differs per device (jax's typing of it
  moved from `aval.vma` to `aval.mat.varying`)."""
  mat = getattr(aval, 'mat', None)
  axes = mat.varying if mat is not None else getattr(aval, 'vma', ())
  return tuple(sorted(axes))


def _jaxpr_xla_flops(closed_jaxpr, mesh=None) -> float:
  """XLA's FLOPs of one jaxpr. `mesh`: the jaxpr is the inside of a shard_map over it (it may
  use collectives over its axes), so it is lowered inside a shard_map whose per-device shapes
  are the jaxpr's own; the figure is per device, like the body's."""
  fn = jex_core.jaxpr_as_fun(closed_jaxpr)
  avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed_jaxpr.jaxpr.invars]
  if mesh is not None:
    from big_vision_style.selection import batch as selection  # pylint: disable=g-import-not-at-top
    P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name
    body = fn
    in_axes = [_varying_axes(v.aval) for v in closed_jaxpr.jaxpr.invars]
    out_axes = [_varying_axes(v.aval) for v in closed_jaxpr.jaxpr.outvars]

    def fn(*args):
      # Inputs enter replicated; those the body types as per-device values become so again,
      # and per-device outputs leave stacked along a new axis (nothing is added to compute).
      args = [jax.lax.pcast(x, axes, to='varying') if axes else x
              for x, axes in zip(args, in_axes)]
      return [x[None] if axes else x for x, axes in zip(body(*args), out_axes)]

    out_specs = [P(axes) if axes else P() for axes in out_axes]
    shard_map = selection.shard_map
    fn = shard_map(fn, mesh=mesh, in_specs=P(), out_specs=out_specs)
  return _flops_of(jax.jit(fn).lower(*avals).cost_analysis())


def _as_closed(j):
  return j if isinstance(j, jex_core.ClosedJaxpr) else jex_core.ClosedJaxpr(j, ())


def loop_correction(jaxpr, mesh=None) -> tuple[float, int]:
  """FLOPs that XLA misses because it counts each loop body once; and # uncorrectable loops.

  A scan of length L whose body truly costs T = xla(body) + correction(body) contributes L*T,
  while XLA counted xla(body) once; the difference is (L-1)*xla(body) + L*correction(body).
  `mesh`: set inside a shard_map (whose scans may hold collectives, e.g. jest.sample_joint).
  """
  jaxpr = jaxpr.jaxpr if isinstance(jaxpr, jex_core.ClosedJaxpr) else jaxpr
  extra, uncorrected = 0.0, 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'scan':
      body = _as_closed(eqn.params['jaxpr'])
      length = eqn.params['length']
      if length == 0:  # No loop is emitted for an empty scan: nothing counted, nothing to add.
        continue
      sub_extra, sub_unc = loop_correction(body, mesh)
      extra += (length - 1) * _jaxpr_xla_flops(body, mesh) + length * sub_extra
      uncorrected += sub_unc
      continue
    scale, sub_mesh = 1, mesh
    if name == 'while':
      uncorrected += 1
    elif name == 'shard_map':
      # Bodies see per-device shapes, so their corrections are per device.
      scale, sub_mesh = eqn.params['mesh'].size, eqn.params['mesh']
    for sub in jex_core.jaxprs_in_params(eqn.params):
      sub_extra, sub_unc = loop_correction(sub, sub_mesh)
      extra += scale * sub_extra
      uncorrected += sub_unc
  return extra, uncorrected


def _num_devices(compiled) -> int:
  shardings = jax.tree.leaves(compiled.input_shardings)
  return max([len(s.device_set) for s in shardings] or [1])


def measure_compiled(compiled, jaxpr=None) -> StepCost:
  """Cost of one call of an AOT-compiled function (`jax.jit(f).trace(...).lower().compile()`)."""
  per_device = _flops_of(compiled.cost_analysis())
  n = _num_devices(compiled)
  extra, unc = loop_correction(jaxpr) if jaxpr is not None else (0.0, 0)
  if unc:
    logging.warning('%d while-loop(s) with unknown trip count: their bodies are counted once.',
                    unc)
  return StepCost(per_device * n + extra, per_device, n, extra, unc)


def compile_and_measure(jitted_fn, *args, **kwargs):
  """Traces, compiles and measures `jitted_fn` once; returns (compiled, StepCost).

  The trainer runs the returned executable itself, so the FLOPs reported are those of the very
  program that trains.
  """
  traced = jitted_fn.trace(*args, **kwargs)
  compiled = traced.lower().compile()
  return compiled, measure_compiled(compiled, traced.jaxpr)


def measure_lowered(jitted_fn, *args, **kwargs) -> StepCost:
  """Global cost from the lowered (not yet partitioned or compiled) program: cheap, no compile."""
  traced = jitted_fn.trace(*args, **kwargs)
  xla = _flops_of(traced.lower().cost_analysis())
  extra, unc = loop_correction(traced.jaxpr)
  return StepCost(xla + extra, xla, 1, extra, unc)


class FlopCounter:
  """Cumulative FLOPs by category; checkpointed with the train state."""

  def __init__(self, totals: dict[str, float] | None = None):
    self.totals = {c: 0.0 for c in CATEGORIES}
    self.totals.update(totals or {})

  def add(self, category: str, flops: float):
    if category not in self.totals:
      raise KeyError(f'Unknown FLOP category {category!r}; expected one of {CATEGORIES}.')
    self.totals[category] += float(flops)

  @property
  def total(self) -> float:
    return sum(self.totals.values())

  def metrics(self) -> dict[str, float]:
    """Per category, and the four amortisation levels of Bad Students (Fig. 5)."""
    t = self.totals
    out = {f'flops/{c}': v for c, v in t.items()}
    out['flops/learner'] = t['learner_train']
    out['flops/scoring'] = t['scoring']
    out['flops/actor'] = t['actor_train']
    out['flops/reference'] = t['reference_scoring'] + t['reference_train']
    out['flops/total'] = self.total  # Everything counted.
    out['flops/total_pretrained_reference'] = self.total - t['reference_train']
    out['flops/total_cached_reference'] = (self.total - t['reference_train'] -
                                           t['reference_scoring'])
    out['flops/total_learner_only'] = t['learner_train']  # Fully amortised.
    # ReLA: the prior's costs, and the total when the prior is free (a public model).
    out['flops/prior'] = t['prior_embedding'] + t['prior_train']
    out['flops/total_free_prior'] = self.total - t['prior_train']
    return out

  def state_dict(self) -> dict[str, float]:
    return dict(self.totals)
