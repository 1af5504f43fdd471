"""A config's train step as a compilable program, without data: for ahead-of-time compilation.

  program = programs.build_program(config, mesh)      # mesh: any devices, TPU topologies too
  program.fn.lower(*program.args).compile()

The step is built exactly as the loop builds it (methods.standalone, methods.jit_step,
Context.batch_spec): same method, same selection, same donation and shardings. Only what the
loop reads from disk is replaced by its shape: the batch's record (`example_from_config`),
frozen references (abstract parameters) and cached tables. `tools/aot.py` compiles it for real
TPU slices from a CPU host.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from big_vision_style import embedding_cache
from big_vision_style import methods
from big_vision_style import score_cache
from big_vision_style import selection
from big_vision_style.methods import distill
from big_vision_style.methods import rela

# Datasets whose class count cannot be read offline (`config.num_classes` overrides).
NUM_CLASSES = {'imagenet2012': 1000, 'cifar10': 10, 'cifar100': 100, 'fashion_mnist': 10,
               'captioned_fashion_mnist': 10, 'sklearn_digits': 10, 'image_text': None}


@dataclasses.dataclass
class Program:
  name: str
  fn: Any  # The jitted step (state donated, outputs replicated).
  args: tuple  # (state, frozen, batch, step): abstract, with shardings on the mesh.


def num_classes_of(config):
  if 'num_classes' in config:
    return config.num_classes
  name = config.data.name.split(':')[-1]
  if name not in NUM_CLASSES:
    raise ValueError(f'Unknown number of classes for dataset {config.data.name!r}: set '
                     'config.num_classes.')
  return NUM_CLASSES[name]


def example_from_config(config, num_classes=None) -> dict[str, jax.ShapeDtypeStruct]:
  """One preprocessed training record's shapes, as the data source and preprocessing would
  give them (image, label, id, text; the columns of cached tables, label noise and
  distillation's clusters)."""
  size = config.input.pp.image_size
  f32, i32 = jnp.float32, jnp.int32
  example = {'image': jax.ShapeDtypeStruct((size, size, config.input.get('channels', 3)), f32),
             'label': jax.ShapeDtypeStruct((), i32), 'id': jax.ShapeDtypeStruct((), i32)}
  if config.data.get('label_noise'):
    example['label_flipped'] = jax.ShapeDtypeStruct((), jnp.bool_)
  objective = config.get('objective', 'supervised')
  if objective == 'contrastive':
    example['text'] = jax.ShapeDtypeStruct((config.data.get('max_text_len', 64),), i32)
    sel = selection.parse(config, selection.CONTRASTIVE)
    if sel['reference'] == 'cached' and sel['policy'] not in ('uniform', 'hard_learner'):
      dim = config.reference_model.embed_dim
      example[embedding_cache.KEY] = jax.ShapeDtypeStruct((2 * dim,), f32)
  elif objective == 'supervised':
    sel = selection.parse(config, selection.CLASSIFICATION)
    if sel['reference'] == 'cached' and 'reference' in selection.needs(sel['policy']):
      example[score_cache.KEY] = jax.ShapeDtypeStruct((), f32)
  elif objective == 'distill':  # The column distill.prepare attaches (kmeans: int32).
    if distill.reads_clusters(distill.settings(config)):
      example[distill.KEY] = jax.ShapeDtypeStruct((), i32)
  if rela.config_of(config):
    dim = config.rela.get('target_dim') or _feature_dim(config, example, num_classes)
    example[rela.TARGET_KEY] = jax.ShapeDtypeStruct((dim,), f32)
  return example


def _feature_dim(config, example, num_classes) -> int:
  from big_vision_style import roles  # pylint: disable=g-import-not-at-top
  model = roles.build_role_model(config, 'learner', num_classes)
  out = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((1,) + example['image'].shape))[0][1]['pre_logits'])
  return int(out.shape[-1])


def build_program(config, mesh, *, phase: int = -1, total_steps: int | None = None) -> Program:
  """The jitted step of `config`'s phase `phase` (default the method's main, last one) and its
  abstract arguments on `mesh`."""
  num_classes = num_classes_of(config)
  total_steps = total_steps or config.get('total_steps') or 100_000  # Shapes do not depend on it.
  example = example_from_config(config, num_classes)
  ctx, built = methods.standalone(config, mesh, example, num_classes=num_classes,
                                  total_steps=int(total_steps))
  state = jax.eval_shape(built.init, jax.random.key(0))
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=ctx.replicated),
                       state)
  chosen = built.phases[phase]
  args = (state, built.frozen, ctx.batch_spec(built.super_batch_size),
          jax.ShapeDtypeStruct((), jnp.int32))
  name = f'{config.get("objective", "supervised")}/{chosen.name}'
  return Program(name=name, fn=methods.jit_step(chosen, ctx), args=args)
