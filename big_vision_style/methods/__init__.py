"""Methods by name (`config.objective`), as models and evaluators are looked up by name.

  method = methods.get_method('supervised')   # a module (or object) with build(ctx)
  methods.register('my_method', my_module)    # a new method, without touching train.py

Built-in methods live in this package, one file each: supervised.py (cross-entropy, with Bad
Students selection), contrastive.py (two towers, with ActiveCLIP / JEST / Flexi-JEST), byol.py.
Phase wrappers apply to any method whose config enables them: rela.py (ReLA: learn a prior's
representations first, then switch to the method). The interface is in base.py.
"""
from __future__ import annotations

import importlib

import jax

from big_vision_style import flops
from big_vision_style.methods import base

BUILTIN = ('supervised', 'contrastive', 'byol', 'moclr', 'distill')
_REGISTERED = {}


def register(name: str, method):
  """Makes `method` (anything with `build(ctx)`, and optionally `prepare(config, source)`)
  trainable as `config.objective = name`."""
  if name in BUILTIN:
    raise ValueError(f'{name!r} is a built-in method; register yours under another name.')
  _REGISTERED[name] = method


def unregister(name: str):
  _REGISTERED.pop(name, None)


def get_method(name: str):
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name in BUILTIN:
    return importlib.import_module(f'big_vision_style.methods.{name}')
  raise ValueError(f'config.objective={name!r}: expected one of '
                   f'{", ".join(BUILTIN + tuple(_REGISTERED))} (or register a method with '
                   'big_vision_style.methods.register).')


def _wrappers(config):
  """The phase wrappers this config enables, outermost last."""
  from big_vision_style.methods import rela  # pylint: disable=g-import-not-at-top
  return [rela] if rela.config_of(config) else []


def prepare(config, source):
  """(source with every per-example table the run reads, one-off FLOPs by category)."""
  one_off = base.zero_costs()
  for part in [get_method(config.get('objective', 'supervised'))] + _wrappers(config):
    if hasattr(part, 'prepare'):
      source, costs = part.prepare(config, source)
      for category, value in costs.items():
        one_off[category] += value
  return source, one_off


def build(ctx: base.Context) -> base.Built:
  built = get_method(ctx.config.get('objective', 'supervised')).build(ctx)
  for wrapper in _wrappers(ctx.config):
    built = wrapper.wrap(ctx, built)
  unknown = set(built.one_off) - set(flops.CATEGORIES)
  if unknown:
    raise ValueError(f'Unknown one-off FLOP categories {sorted(unknown)}; expected '
                     f'{flops.CATEGORIES}.')
  return built


def jit_step(phase: base.Phase, ctx: base.Context):
  """The one way a step is jitted: the state donated, state and measurements replicated."""
  return jax.jit(phase.step, donate_argnums=(0,), out_shardings=(ctx.replicated, ctx.replicated))


def standalone(config, mesh, example, *, num_classes, total_steps: int, abstract: bool = True,
               train_rng=None) -> tuple[base.Context, base.Built]:
  """(ctx, built) for `config` without a data source or the loop: benchmarks, ahead-of-time
  compilation and tests. `example`: one preprocessed record's jax.ShapeDtypeStructs."""
  ctx = base.Context(config=config, mesh=mesh, num_classes=num_classes, total_steps=total_steps,
                     example=example, abstract=abstract,
                     train_rng=jax.random.key(1) if train_rng is None else train_rng)
  return ctx, build(ctx)
