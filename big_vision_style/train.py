r"""The trainer: one flat loop, big_vision style.

  python -m big_vision_style.train --config experiments/baseline/fashion_mnist.py:runlocal \
      --workdir workdirs/baseline

A restart with the same --workdir resumes from the last checkpoint, with the data iterator
where it stopped: an interrupted-and-resumed run ends with exactly the parameters of an
uninterrupted one. SIGTERM (a preempted TPU VM) saves a checkpoint before exiting.

The train state is a plain dict keyed by role: `{'learner': {'params', 'opt'}}`, plus
`'actor'` (the online actor of Bad Students) and `'reference'` (only when the reference trains
online). A pretrained reference is frozen: its parameters are passed beside the state, never
donated, never given to an optimiser. With `config.selection`, each step draws a super-batch,
scores it, selects the learner's batch on device and updates the learner and the actor on the
selected examples, all inside one jitted step (see `make_update_fn`).

`config.objective` picks what the learner optimises: 'supervised' (default, everything above)
or 'byol' (self-supervised, byol.py: the state adds the EMA `'target'` network). With
`config.rela` (rela.py) training starts with ReLA's phase, regressing a prior's precomputed
targets, and switches to the objective once; its switch state lives in `state['rela']`.
`config.input.data_ratio` r < 1 trains every epoch on a fresh random r of the training split.
'contrastive' trains a two-tower image-text model (image_text.py) with SigLIP / CLIP losses
and ActiveCLIP or JEST selection of each batch from a super-batch.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time

from absl import app
from absl import flags
from etils import epath
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags
import numpy as np

from big_vision_style import byol
from big_vision_style import checkpointing
from big_vision_style import datasets
from big_vision_style import evaluators
from big_vision_style import embedding_cache
from big_vision_style import flops
from big_vision_style import image_text
from big_vision_style import input_pipeline
from big_vision_style import metrics_writer
from big_vision_style import models
from big_vision_style import optim
from big_vision_style import preprocess
from big_vision_style import rela
from big_vision_style import score_cache
from big_vision_style import selection
from big_vision_style import sharding
from big_vision_style import steps

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, `path.py:arg`.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints and metrics go.')


def total_steps_of(config, num_train_examples: int) -> int:
  if config.get('total_steps'):
    return int(config.total_steps)
  if config.get('total_epochs'):
    return int(config.total_epochs * num_train_examples // config.input.batch_size)
  raise ValueError('Set config.total_steps or config.total_epochs.')


def validate(config, mesh, super_batch_size: int):
  n = mesh.shape['data']
  if config.input.batch_size % n:
    raise ValueError(
        f'config.input.batch_size={config.input.batch_size} is not divisible by the {n} devices '
        f'of the data axis; use a multiple of {n} (or fewer devices via config.mesh_devices).')
  if super_batch_size % n:
    raise ValueError(
        f'The super-batch of {super_batch_size} examples (config.input.batch_size / (1 - '
        f'config.selection.filter_ratio)) is not divisible by the {n} devices of the data axis; '
        f'choose batch_size and filter_ratio so that it is a multiple of {n}.')
  for name, ev in config.get('evals', {}).items():
    if ev.get('batch_size', 1024) % n:
      raise ValueError(f'config.evals.{name}.batch_size={ev.batch_size} is not divisible by the '
                       f'{n} devices of the data axis; use a multiple of {n}.')
  if not 0.0 <= config.get('label_smoothing', 0.0) < 1.0:
    raise ValueError(f'config.label_smoothing={config.label_smoothing} must be in [0, 1).')
  input_pipeline.epoch_size(1, config.input.get('data_ratio', 1.0))  # Raises if not in (0, 1].
  objective = config.get('objective', 'supervised')
  if objective not in OBJECTIVES:
    raise ValueError(f'config.objective={objective!r}: expected one of {", ".join(OBJECTIVES)}.')
  if (objective == 'byol' or rela.config_of(config)) and config.get('selection'):
    raise ValueError('config.selection works with the supervised and contrastive objectives, '
                     'without ReLA.')
  if objective == 'contrastive' and rela.config_of(config):
    raise ValueError('config.rela is not implemented for the contrastive objective.')


OBJECTIVES = ('supervised', 'byol', 'contrastive')


def selection_config(config):
  """`config.selection` with defaults; no selection block means uniform i.i.d. batches."""
  sel = dict(policy='uniform', filter_ratio=0.0, method='sample', temperature=1.0,
             reference='pretrained', reference_workdir=None, score_cache=None)
  sel.update(dict(config.get('selection') or {}))
  if sel['policy'] not in selection.POLICIES:
    raise ValueError(f'config.selection.policy={sel["policy"]!r}: expected one of '
                     f'{", ".join(selection.POLICIES)}.')
  if sel['reference'] not in ('pretrained', 'online', 'cached'):
    raise ValueError(f'config.selection.reference={sel["reference"]!r}: expected pretrained, '
                     'online or cached.')
  return sel


def make_update_fn(models_by_role, txs, schedule, train_rng, replicated, mesh, *, num_classes,
                   label_smoothing, sel, batch_size):
  """The jitted step `(state, frozen, batch, step) -> (state, measurements)`.

  `batch` is the super-batch (B examples, sharded over `data`). Without selection B equals the
  learner's batch b and the step is a plain update. With it:
    1. score: per-example losses of the roles the policy needs, on the whole super-batch
       (evaluation mode, plain cross-entropy; cached reference losses come with the batch);
    2. select b of B indices over the *global* super-batch (selection.select_indices) and
       gather them so that only the selected examples move between devices;
    3. update the learner and the online actor on exactly those examples; an online
       reference trains on the whole super-batch (ClassAct-Online).
  """
  needs = selection.needs(sel['policy'])
  selecting = batch_size != sel['super_batch_size'] or sel['policy'] != 'uniform'

  def update_fn(state, frozen, batch, step):
    rng = jax.random.fold_in(train_rng, step)
    rng_select, rng_learner, rng_actor, rng_reference = jax.random.split(rng, 4)
    measurements = {}

    def score_loss(role, params):
      return steps.per_example_loss(models_by_role[role], params, batch, num_classes=num_classes)

    if selecting:
      losses_by_role = {}
      if 'actor' in needs:
        losses_by_role['actor_loss'] = score_loss('actor', state['actor']['params'])
      if 'learner' in needs:
        losses_by_role['learner_loss'] = score_loss('learner', state['learner']['params'])
      if 'reference' in needs:
        if sel['reference'] == 'cached':
          losses_by_role['reference_loss'] = batch['reference_loss']
        elif sel['reference'] == 'online':
          losses_by_role['reference_loss'] = score_loss('reference', state['reference']['params'])
        else:
          losses_by_role['reference_loss'] = score_loss('reference', frozen['reference'])
      scores = selection.score(sel['policy'], num_examples=batch['label'].shape[0],
                               **losses_by_role)
      indices = selection.select_indices(scores, batch_size, rng_select, method=sel['method'],
                                         temperature=sel['temperature'])
      chosen = selection.gather(batch, indices, mesh)
      # What the policy prefers: mean score of selected vs unselected, and label noise picked.
      is_chosen = jnp.zeros(scores.shape, bool).at[indices].set(True)
      num_rest = max(scores.shape[0] - batch_size, 1)
      measurements['selection/score_selected'] = jnp.mean(scores[indices])
      measurements['selection/score_unselected'] = jnp.sum(jnp.where(is_chosen, 0, scores)) / num_rest
      if 'label_flipped' in batch:
        measurements['selection/flipped_selected'] = jnp.mean(chosen['label_flipped'])
        measurements['selection/flipped_superbatch'] = jnp.mean(batch['label_flipped'])
      for name, loss in losses_by_role.items():
        measurements[f'selection/{name}'] = jnp.mean(loss)
    else:
      chosen = batch

    new_state = dict(state)  # Entries no role updates (ReLA's switch state) pass through.
    update = functools.partial(steps.sgd_step, num_classes=num_classes,
                               label_smoothing=label_smoothing)
    new_state['learner'], m = update(models_by_role['learner'], txs['learner'], state['learner'],
                                     chosen, rng_learner)
    measurements.update({'train/loss': m['loss'], 'train/grad_norm': m['grad_norm'],
                         'train/lr': schedule(step - 1)})
    if 'actor' in state:  # Same objective as the learner, on the same selected examples.
      new_state['actor'], m = update(models_by_role['actor'], txs['actor'], state['actor'],
                                     chosen, rng_actor)
      measurements['actor/loss'] = m['loss']
    if 'reference' in state:  # Online reference: sees the whole super-batch.
      new_state['reference'], m = update(models_by_role['reference'], txs['reference'],
                                         state['reference'], batch, rng_reference)
      measurements['reference/loss'] = m['loss']
    return new_state, measurements

  return jax.jit(update_fn, donate_argnums=(0,), out_shardings=(replicated, replicated))


def measure_categories(models_by_role, txs, state, frozen, batch_spec, chosen_spec, *,
                       num_classes, label_smoothing, sel):
  """FLOPs per step by category, each from XLA's cost analysis of that piece compiled alone.

  Categories: learner_train, scoring (actor or learner forwards on the super-batch),
  actor_train, reference_scoring, reference_train. The whole step is measured too, by the
  caller; whatever it holds beyond these pieces (Gumbel noise, top-k, gather) is selection
  overhead and is added to `scoring`.
  """
  needs = selection.needs(sel['policy'])
  selecting = sel['super_batch_size'] != chosen_spec['image'].shape[0] or sel['policy'] != 'uniform'
  rng = jax.random.key(0)

  def train_cost(role, spec):
    fn = jax.jit(functools.partial(steps.sgd_step, models_by_role[role], txs[role],
                                   num_classes=num_classes, label_smoothing=label_smoothing))
    return flops.compile_and_measure(fn, state[role], spec, rng)[1].flops

  def score_cost(role, params):
    fn = jax.jit(functools.partial(steps.per_example_loss, models_by_role[role],
                                   num_classes=num_classes))
    return flops.compile_and_measure(fn, params, batch_spec)[1].flops

  cost = {c: 0.0 for c in flops.CATEGORIES}
  cost['learner_train'] = train_cost('learner', chosen_spec)
  if 'actor' in state:
    cost['actor_train'] = train_cost('actor', chosen_spec)
  if 'reference' in state:
    cost['reference_train'] = train_cost('reference', batch_spec)
  if selecting:
    if 'actor' in needs:
      cost['scoring'] += score_cost('actor', state['actor']['params'])
    if 'learner' in needs:
      cost['scoring'] += score_cost('learner', state['learner']['params'])
    if 'reference' in needs and sel['reference'] != 'cached':
      params = (state['reference']['params'] if sel['reference'] == 'online'
                else frozen['reference'])
      cost['reference_scoring'] = score_cost('reference', params)
  return cost


def load_config(config_arg: str):
  """`path.py:arg` -> ConfigDict, as --config does (for tools that run outside absl flags)."""
  path, _, arg = config_arg.partition(':')
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def build_role_model(config, role: str, num_classes: int):
  prefix = '' if role == 'learner' else f'{role}_'
  name = config.get(f'{prefix}model_name', config.model_name)
  return models.get_model(name).Model(num_classes=num_classes,
                                      **config.get(f'{prefix}model' if prefix else 'model'))


def load_reference(config, num_classes: int):
  """(model, frozen params, its training FLOPs) of the pretrained reference named by config."""
  workdir = dict(config.get('selection') or {}).get('reference_workdir')
  if not workdir:
    raise ValueError('config.selection.reference_workdir is empty: set it to the workdir of a '
                     'finished reference run (experiments/bad_students/reference.py, or '
                     'experiments/jest/reference.py for image-text).')
  params, meta = checkpointing.load_trained_params(workdir)
  return build_role_model(config, 'reference', num_classes), params, float(
      sum(meta['flops'].values()))


def compute_reference_scores(config):
  """Scores every training example with the frozen reference: (ids, losses, meta)."""
  mesh = sharding.make_mesh(config.get('mesh_devices'))
  source = datasets.get_source(config.data, config.input.get('split', 'train'))
  model, params, _ = load_reference(config, source.num_classes)
  pp = preprocess.make(**dict(config.input.pp))
  bs = config.get('score_cache_batch_size', 1024)
  ids, scores = score_cache.compute(model, params, source, pp, mesh, batch_size=bs,
                                    num_classes=source.num_classes)
  spec = {k: jax.ShapeDtypeStruct((bs,) + np.shape(v), np.asarray(v).dtype)
          for k, v in pp(source[0]).items()}
  per_batch = flops.compile_and_measure(jax.jit(functools.partial(
      steps.per_example_loss, model, num_classes=source.num_classes)), params, spec)[1].flops
  meta = {'reference_workdir': selection_config(config)['reference_workdir'],
          'flops': per_batch * len(ids) / bs, 'num_examples': len(ids)}
  return ids, scores, meta


def train(config, workdir: str, *, stop_after_step: int | None = None):
  """Trains (or resumes) and returns (the final metrics row, the final train state).

  `stop_after_step` simulates a preemption at that step (used by the resume tests).
  """
  sharding.maybe_initialize_distributed(config)
  mesh = sharding.make_mesh(config.get('mesh_devices'))
  objective = config.get('objective', 'supervised')
  rela_cfg = rela.config_of(config)
  batch_size = config.input.batch_size
  if objective == 'contrastive':
    sel = image_text.selection_config(config)  # Adds super_batch_size.
    needs = image_text.roles_needed(sel)
  else:
    sel = selection_config(config)
    sel['super_batch_size'] = selection.super_batch_size(batch_size, sel['filter_ratio'])
    needs = selection.needs(sel['policy'])
  validate(config, mesh, sel['super_batch_size'])
  replicated = NamedSharding(mesh, P())
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # Local or gs://.

  # ----- Data: the pipeline yields super-batches of B = b / (1 - f) examples -----
  train_source = datasets.get_source(config.data, config.input.get('split', 'train'))
  num_classes = train_source.num_classes
  one_off = {c: 0.0 for c in flops.CATEGORIES}  # Costs paid before step 1.
  cache = None
  if objective == 'contrastive' and sel['reference'] == 'cached' and 'reference' in needs:
    if not sel['embedding_cache']:
      raise ValueError("config.selection.reference='cached' needs config.selection."
                       'embedding_cache: the path of a reference embedding cache (python -m '
                       'big_vision_style.tools.reference_embeddings).')
    cache = embedding_cache.load(sel['embedding_cache'])
    train_source = embedding_cache.with_cached_embeddings(train_source, cache)
    one_off['reference_scoring'] = float(cache.table.meta.get('flops', 0.0))
    one_off['reference_train'] = float(cache.table.meta.get('reference_train_flops', 0.0))
  elif sel['reference'] == 'cached' and 'reference' in needs:
    cache = score_cache.load(sel['score_cache'])
    train_source = score_cache.WithCachedScores(train_source, cache)
    one_off['reference_scoring'] = float(cache.meta.get('flops', 0.0))
  if rela_cfg:  # ReLA-D: the prior's targets, looked up by id; its one-off costs.
    targets = rela.load_targets(rela_cfg['targets'])
    train_source = rela.with_targets(train_source, targets)
    one_off['prior_embedding'] = float(targets.meta.get('flops', 0.0))
    one_off['prior_train'] = float(targets.meta.get('prior_train_flops', 0.0))
  pp_kwargs = dict(config.input.get('pp', {}))
  pp_train = preprocess.make(augment=tuple(config.input.get('augment', ())), **pp_kwargs)
  pp_eval = preprocess.make(**pp_kwargs)
  data_ratio = config.input.get('data_ratio', 1.0)
  total_steps = total_steps_of(config, input_pipeline.epoch_size(len(train_source), data_ratio))
  train_iter = input_pipeline.make_train_iterator(
      train_source, global_batch_size=sel['super_batch_size'], seed=config.seed,
      preprocess_fn=pp_train, num_threads=config.input.get('num_threads', 2),
      prefetch=config.input.get('prefetch', 4), data_ratio=data_ratio)

  # ----- Models by role, optimisers, train state -----
  if objective == 'byol':  # The "model" is the encoder with BYOL's heads (byol.Byol).
    models_by_role = {'learner': byol.Byol(build_role_model(config, 'learner', None),
                                           num_classes, config.get('byol'))}
  else:
    models_by_role = {'learner': build_role_model(config, 'learner', num_classes)}
  # What ReLA's phase needs from the objective: features, the monitoring classifier, ...
  hooks = (models_by_role['learner'] if objective == 'byol' else None
           if objective == 'contrastive' else
           rela.Supervised(models_by_role['learner'], num_classes))
  tx, schedule = optim.make_optimizer(config.optax, total_steps)
  txs = {'learner': tx}
  roles = ['learner']
  if 'actor' in needs:
    models_by_role['actor'] = build_role_model(config, 'actor', num_classes)
    txs['actor'] = optim.make_optimizer(config.get('actor_optax', config.optax), total_steps)[0]
    roles.append('actor')
  frozen = {}
  if 'reference' in needs and sel['reference'] == 'online':
    models_by_role['reference'] = build_role_model(config, 'reference', num_classes)
    txs['reference'] = optim.make_optimizer(config.reference_optax, total_steps)[0]
    roles.append('reference')
  elif 'reference' in needs and sel['reference'] == 'pretrained':
    models_by_role['reference'], ref_params, one_off['reference_train'] = load_reference(
        config, num_classes)
    frozen['reference'] = jax.device_put(ref_params, replicated)
  image_shape = (1, config.input.pp.image_size, config.input.pp.image_size,
                 config.input.get('channels', 1))
  text_shape = (1,) + np.shape(train_source[0]['text']) if objective == 'contrastive' else None

  if rela_cfg:
    transport = rela.Transport(targets.value_shape[0])
    transport_tx = optim.make_optimizer(config.optax, total_steps)[0]

  def init(rng):
    state = {}
    for role, role_rng in zip(roles, jax.random.split(rng, len(roles))):
      if objective == 'contrastive':
        params = image_text.init_params(models_by_role[role], role_rng, image_shape, text_shape)
      else:
        params = models_by_role[role].init(role_rng, jnp.zeros(image_shape, jnp.float32))[
            'params']
      state[role] = {'params': params, 'opt': txs[role].init(params)}
    if objective == 'byol':
      state['target'] = byol.Byol.target_of(state['learner']['params'])
    if rela_cfg:
      feature_dim = hooks.features(state['learner']['params'],
                                   jnp.zeros(image_shape, jnp.float32)).shape[-1]
      state['rela'] = rela.init_state(jax.random.fold_in(rng, 1), transport, transport_tx,
                                      feature_dim)
    return state

  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  state = jax.jit(init, out_shardings=replicated)(init_rng)
  for role in models_by_role:
    params = state[role]['params'] if role in state else frozen[role]
    logging.info('%s: %s %s, %.3fM parameters%s', role,
                 config.get('model_name' if role == 'learner' else f'{role}_model_name'),
                 dict(config.get('model' if role == 'learner' else f'{role}_model')),
                 sum(x.size for x in jax.tree.leaves(params)) / 1e6,
                 ' (frozen)' if role in frozen else '')

  if objective == 'byol':
    update_fn = models_by_role['learner'].make_update_fn(tx, schedule, train_rng, replicated,
                                                         total_steps=total_steps)
  elif objective == 'contrastive':
    update_fn = image_text.make_update_fn(models_by_role, txs, schedule, train_rng, replicated,
                                          mesh, sel=sel, batch_size=batch_size,
                                          loss=config.get('contrastive_loss', 'sigmoid'),
                                          cache=cache)
  else:
    update_fn = make_update_fn(models_by_role, txs, schedule, train_rng, replicated, mesh,
                               num_classes=num_classes,
                               label_smoothing=config.get('label_smoothing', 0.0), sel=sel,
                               batch_size=batch_size)
  rela_fn = rela.make_update_fn(hooks, tx, transport, transport_tx, schedule, train_rng,
                                replicated, cfg=rela_cfg, num_classes=num_classes,
                                total_steps=total_steps) if rela_cfg else None

  # ----- Checkpoint: resume if there is one -----
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.get('ckpt_keep', 2))
  counter = flops.FlopCounter(one_off)  # One-off costs (reference training, score cache).
  start_step, wall_s_before = 0, 0.0
  if (latest := ckpt.latest_step()) is not None:
    state, data_state, meta = ckpt.restore(latest, checkpointing.abstract_like(state))
    train_iter.set_state(data_state)
    counter = flops.FlopCounter(meta['flops'])
    start_step, wall_s_before = int(meta['step']), float(meta['wall_s'])
    logging.info('Resumed from %s at step %d.', ckpt.directory, start_step)

  # ----- Compile once, measure the FLOPs of exactly what runs -----
  t0 = time.time()
  def spec(size):
    return {k: jax.ShapeDtypeStruct((size,) + np.shape(v), np.asarray(v).dtype,
                                    sharding=input_pipeline.data_sharding(mesh))
            for k, v in pp_eval(train_source[0]).items()}

  step_spec = jax.ShapeDtypeStruct((), jnp.int32)
  update_compiled, update_cost = flops.compile_and_measure(
      update_fn, state, frozen, spec(sel['super_batch_size']), step_spec)
  if objective == 'byol':  # All of it trains the learner (the EMA and views included).
    step_cost = {c: 0.0 for c in flops.CATEGORIES}
    step_cost['learner_train'] = update_cost.flops
  elif objective == 'contrastive':
    step_cost = image_text.measure_categories(
        models_by_role, txs, state, frozen, spec(sel['super_batch_size']), spec(batch_size),
        sel=sel, loss=config.get('contrastive_loss', 'sigmoid'))
    # What the whole step holds beyond its pieces: selection overhead (sampler, gather), or,
    # with i.i.d. batches, bits of the update itself (the learning-rate schedule).
    iid = sel['policy'] == 'uniform' and sel['super_batch_size'] == batch_size
    step_cost['learner_train' if iid else 'scoring'] += update_cost.flops - sum(
        step_cost.values())
  else:
    step_cost = measure_categories(models_by_role, txs, state, frozen,
                                   spec(sel['super_batch_size']), spec(batch_size),
                                   num_classes=num_classes,
                                   label_smoothing=config.get('label_smoothing', 0.0), sel=sel)
    # Selection overhead (noise, top-k, gather) is what the whole step holds beyond its pieces.
    step_cost['scoring'] += update_cost.flops - sum(step_cost.values())
  if rela_fn is not None:  # ReLA's phase is its own program, with its own cost.
    rela_compiled, rela_cost = flops.compile_and_measure(rela_fn, state, frozen,
                                                         spec(batch_size), step_spec)
    logging.info('Compiled the ReLA step: %.4g FLOPs per step.', rela_cost.flops)
  logging.info('Compiled the update in %.1fs: %.4g FLOPs per step (XLA: %.4g per device x %d '
               'devices, loop correction %.3g); by category: %s.', time.time() - t0,
               update_cost.flops, update_cost.xla_flops, update_cost.num_devices,
               update_cost.loop_correction, {k: f'{v:.3g}' for k, v in step_cost.items()})

  model = models_by_role['learner']
  if objective == 'byol':
    predict = model.predict  # The online classifier.
  elif objective == 'contrastive':  # (zimg, ztxt, out), either input may be None.
    predict = lambda params, images, texts: model.apply({'params': params}, images, texts)
  else:
    predict = lambda params, images: model.apply({'params': params}, images)[0]
  features = hooks.features if hooks else None  # Pooled encoder features (linear probes).
  evals = {}
  for name, ev_cfg in config.get('evals', {}).items():
    ev_cfg = dict(ev_cfg)
    module = evaluators.get_evaluator(ev_cfg.pop('type'))
    every = ev_cfg.pop('log_steps')
    # An evaluator may read other data than the training source (`data`, e.g. ImageNet for
    # the zero-shot evaluation of an image-text model trained on web pairs).
    source = datasets.get_source(ev_cfg.pop('data', None) or config.data, ev_cfg.pop('split'))
    if 'fit_split' in ev_cfg:  # Evaluators that fit on a split first (linear probe).
      ev_cfg['fit_source'] = datasets.get_source(config.data, ev_cfg.pop('fit_split'))
    fn = features if getattr(module, 'USES_FEATURES', False) else predict
    evals[name] = (every, module.Evaluator(fn, source=source, preprocess_fn=pp_eval,
                                           mesh=mesh, **ev_cfg))

  writer = metrics_writer.MetricsWriter(workdir, total_steps=total_steps,
                                        resume_step=start_step)
  stop = checkpointing.StopRequest()
  log_every = config.get('log_training_steps', 50)
  ckpt_every = config.get('ckpt_steps', 1000)
  loop_t0 = time.time()
  row = {}

  def save(step):
    meta = {'step': step, 'flops': counter.state_dict(),
            'wall_s': wall_s_before + time.time() - loop_t0}
    ckpt.save(step, state, train_iter.get_state(), meta)

  # ReLA's phase runs until the state says it switched (read back every ReLA step only).
  in_rela = rela_fn is not None and not bool(jax.device_get(state['rela']['switched']))
  switch_step = (int(jax.device_get(state['rela']['switch_step']))
                 if rela_fn is not None and not in_rela else None)
  for step in range(start_step + 1, total_steps + 1):
    batch = input_pipeline.to_global(next(train_iter), mesh)
    switched_now = False
    if in_rela:
      state, measurements = rela_compiled(state, frozen, batch, jnp.asarray(step, jnp.int32))
      counter.add('learner_train', rela_cost.flops)
      if bool(jax.device_get(measurements['rela/switched'])):
        in_rela, switched_now, switch_step = False, True, step
        logging.info('ReLA: switched to the %s objective after step %d.', objective, step)
    else:
      state, measurements = update_compiled(state, frozen, batch, jnp.asarray(step, jnp.int32))
      for category, cost in step_cost.items():
        counter.add(category, cost)

    is_last = step == total_steps
    due_evals = [n for n, (every, _) in evals.items() if is_last or step % every == 0]
    if is_last or step % log_every == 0 or due_evals or switched_now:
      row = {'examples_seen': step * batch_size,
             'examples_scored': step * sel['super_batch_size'],
             **{k: float(v) for k, v in jax.device_get(measurements).items()},
             **counter.metrics(),
             'wall_s': wall_s_before + time.time() - loop_t0}
      if switch_step is not None:
        row['rela/switch_step'] = switch_step
      for name in due_evals:
        for metric, value in evals[name][1].run(state['learner']['params']):
          row[f'eval/{name}/{metric}'] = value
      writer.write(step, row)
      writer.progress(step, row)

    preempted = bool(stop) or ckpt.reached_preemption(step) or step == stop_after_step
    if is_last or step % ckpt_every == 0 or preempted:
      save(step)
    if preempted and not is_last:
      logging.warning('Stopping at step %d (%s); checkpoint saved, rerun to resume.', step,
                      stop.signal_name or 'preemption')
      break

  writer.flush()
  ckpt.close()
  if total_steps > start_step and step < total_steps:  # Stopped early: not a final row.
    return {'step': step, **row, 'preempted': True}, state
  if total_steps <= start_step:  # Already finished: its final row is the last one logged.
    logged = metrics_writer.read_metrics(workdir)
    row = {k: v for k, v in (logged[-1] if logged else {}).items() if k != 'step'}
    return {'step': start_step, **row}, state
  return {'step': step, **row}, state


class QuietLibraries(logging.Filter):
  """Orbax logs dozens of INFO lines per save; keep its warnings, drop its chatter."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def setup_script_logging():
  """INFO logging without orbax's chatter, for scripts that call `train` in a loop."""
  # absl (imported here) already installed a root handler, so basicConfig may be a no-op: set
  # the level and the filter on what is there.
  logging.basicConfig(format='%(asctime)s %(message)s')
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers:
    handler.addFilter(QuietLibraries())


def train_once(config, workdir: str) -> dict:
  """Trains (or resumes) unless `<workdir>/final.json` says the run finished; returns its final
  row (with `run_wall_s`). For sweeps that are rerun after an interruption."""
  marker = os.path.join(workdir, 'final.json')
  if os.path.exists(marker):
    with open(marker) as f:
      return json.load(f)
  t0 = time.time()
  final, _ = train(config, workdir)
  if final.get('preempted'):  # SIGTERM or a preemption notice: stop the sweep, mark nothing.
    raise SystemExit(f'{workdir} stopped at step {final["step"]} before its end; rerun the '
                     'sweep to resume it.')
  final = {**final, 'run_wall_s': time.time() - t0}
  with open(marker + '.tmp', 'w') as f:
    json.dump(final, f)
  os.replace(marker + '.tmp', marker)  # Atomic: a marker always means a finished run.
  return final


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers + logging.getLogger('absl').handlers:
    handler.addFilter(QuietLibraries())
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
