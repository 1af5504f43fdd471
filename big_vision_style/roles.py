"""The models a run holds, by role, and loading a frozen one from another run's workdir.

Roles: 'learner' (the model being trained), 'actor' (Bad Students' / ActiveCLIP's small online
scorer), 'reference' (a frozen pretrained model, or one trained online). A role's model comes
from `config.<role>_model_name` and `config.<role>_model` (the learner's from `model_name` and
`model`). Frozen parameters are restored onto this run's devices, whatever device layout (or
number of hosts) trained them.
"""
from __future__ import annotations

import jax

from big_vision_style import checkpointing
from big_vision_style import models


def build_role_model(config, role: str, num_classes):
  prefix = '' if role == 'learner' else f'{role}_'
  name = config.get(f'{prefix}model_name', config.model_name)
  return models.get_model(name).Model(num_classes=num_classes,
                                      **config.get(f'{prefix}model' if prefix else 'model'))


def reference_workdir(config) -> str:
  workdir = dict(config.get('selection') or {}).get('reference_workdir')
  if not workdir:
    raise ValueError('config.selection.reference_workdir is empty: set it to the workdir of a '
                     'finished reference run (experiments/bad_students/reference.py, or '
                     'experiments/jest/reference.py for image-text).')
  return workdir


def load_reference(config, num_classes):
  """(model, frozen params, its training FLOPs) of the pretrained reference named by config.
  The parameters are host numpy arrays (put them on the mesh with `jax.device_put`)."""
  params, meta = checkpointing.load_trained_params(reference_workdir(config))
  return build_role_model(config, 'reference', num_classes), params, float(
      sum(meta['flops'].values()))


def frozen_reference(ctx, init):
  """(model, params on the mesh, training FLOPs) of the frozen reference of `ctx.config`.
  `init(model, rng) -> params`. With `ctx.abstract`, nothing is read: the parameters are
  abstract (jax.ShapeDtypeStruct, replicated) and the training FLOPs 0."""
  if ctx.abstract:
    model = build_role_model(ctx.config, 'reference', ctx.num_classes)
    shapes = jax.eval_shape(lambda: init(model, jax.random.key(0)))
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                         sharding=ctx.replicated), shapes)
    return model, params, 0.0
  model, params, train_flops = load_reference(ctx.config, ctx.num_classes)
  return model, jax.device_put(params, ctx.replicated), train_flops
