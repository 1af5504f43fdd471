"""Supervised classification (cross-entropy), with Bad Students' online batch selection.

  config.objective = 'supervised'               # the default
  config.selection = dict(policy='learnability', filter_ratio=0.5, method='sample',
                          temperature=1.0, reference='pretrained' | 'online' | 'cached',
                          reference_workdir=..., score_cache=...)

State (plain dict, by role): `{'learner': {'params', 'opt'}}`, plus `'actor'` (the small online
actor, when the policy reads it) and `'reference'` (only when the reference trains online,
ClassAct-Online). A pretrained reference is frozen: its parameters are in `frozen`, never
donated, never given to an optimiser. Cached reference losses come with the batch
(score_cache.py, looked up by example id).

One step, on a super-batch of B = b / (1 - f) examples sharded over 'data':
  1. score: per-example losses of the models the policy reads (selection/policies.py) on the
     whole super-batch (evaluation mode, plain cross-entropy);
  2. select b of B over the *global* super-batch (selection.select_indices) and gather them,
     so that only the selected examples move between devices (selection.gather);
  3. update the learner and the online actor on exactly those examples; an online reference
     trains on the whole super-batch.
Without selection B = b and the step is a plain update.

FLOPs by category, each piece compiled alone: learner_train, actor_train, reference_train,
scoring (actor or, for RHO, learner forwards over B), reference_scoring (the live reference's
forward over B). Whatever the whole step holds beyond its pieces (Gumbel noise, top-k, the
gather) is selection overhead, added to scoring.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from big_vision_style import flops
from big_vision_style import id_table
from big_vision_style import optim
from big_vision_style.methods import rela
from big_vision_style import roles
from big_vision_style import score_cache
from big_vision_style import selection
from big_vision_style import steps
from big_vision_style.methods import base


def selection_config(config) -> dict:
  return selection.parse(config, selection.CLASSIFICATION)


def prepare(config, source):
  """Cached reference losses ride with the records; their one-off cost is the scoring pass."""
  sel = selection_config(config)
  one_off = base.zero_costs()
  if sel['reference'] == 'cached' and 'reference' in selection.needs(sel['policy']):
    cache = score_cache.load(sel['score_cache'])
    source = id_table.with_columns(source, {score_cache.KEY: cache})
    workdir = sel.get('reference_workdir') or None
    id_table.check_provenance(cache, config, source=source, expect={
        'reference_workdir': workdir, 'reference_step': id_table.latest_checkpoint_step(workdir)})
    one_off['reference_scoring'] = float(cache.meta.get('flops', 0.0))
    # The reference was trained to make the cache: "all counted" must include it, as it does
    # for a live reference (which build() counts when it loads the checkpoint).
    one_off['reference_train'] = float(cache.meta.get('reference_train_flops', 0.0))
  return source, one_off


def build(ctx: base.Context) -> base.Built:
  config, num_classes = ctx.config, ctx.num_classes
  sel = selection_config(config)
  label_smoothing = config.get('label_smoothing', 0.0)
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f'config.label_smoothing={label_smoothing} must be in [0, 1).')
  needs = selection.needs(sel['policy'])
  tx, schedule = optim.make_optimizer(config.optax, ctx.total_steps)
  models = {'learner': roles.build_role_model(config, 'learner', num_classes)}
  txs = {'learner': tx}
  if 'actor' in needs:
    models['actor'] = roles.build_role_model(config, 'actor', num_classes)
    txs['actor'] = optim.make_optimizer(config.get('actor_optax', config.optax),
                                        ctx.total_steps)[0]
  frozen, one_off_reference = {}, 0.0
  if 'reference' in needs and sel['reference'] == 'online':
    models['reference'] = roles.build_role_model(config, 'reference', num_classes)
    txs['reference'] = optim.make_optimizer(config.reference_optax, ctx.total_steps)[0]
  elif 'reference' in needs and sel['reference'] == 'pretrained':
    models['reference'], frozen['reference'], one_off_reference = roles.frozen_reference(
        ctx, lambda model, rng: model.init(rng, jnp.zeros(ctx.image_shape()))['params'])

  def init(rng):
    trained = list(txs)  # learner, actor, online reference: one key each, in that order.
    state = {}
    for role, key in zip(trained, jax.random.split(rng, len(trained))):
      params = models[role].init(key, jnp.zeros(ctx.image_shape(), jnp.float32))['params']
      state[role] = {'params': params, 'opt': txs[role].init(params)}
    return state

  update = functools.partial(steps.sgd_step, num_classes=num_classes,
                             label_smoothing=label_smoothing)
  b = ctx.batch_size

  def step(state, frozen, batch, step):
    rng = jax.random.fold_in(ctx.train_rng, step)
    rng_select, rng_learner, rng_actor, rng_reference = jax.random.split(rng, 4)
    measurements = {}
    chosen = batch
    if sel['selecting']:
      chosen, measurements = _select(models, sel, state, frozen, batch, b, rng_select, ctx.mesh,
                                     num_classes)
    new_state = dict(state)  # Entries no role updates (ReLA's switch state) pass through.
    new_state['learner'], m = update(models['learner'], txs['learner'], state['learner'],
                                     chosen, rng_learner)
    measurements.update({'train/loss': m['loss'], 'train/grad_norm': m['grad_norm'],
                         'train/lr': schedule(step - 1)})
    if 'actor' in state:  # Same objective as the learner, on the same selected examples.
      new_state['actor'], m = update(models['actor'], txs['actor'], state['actor'], chosen,
                                     rng_actor)
      measurements['actor/loss'] = m['loss']
    if 'reference' in state:  # Online reference: sees the whole super-batch.
      new_state['reference'], m = update(models['reference'], txs['reference'],
                                         state['reference'], batch, rng_reference)
      measurements['reference/loss'] = m['loss']
    return new_state, measurements

  def costs(whole, state, frozen):
    cost = _measure_categories(models, txs, state, frozen, ctx.batch_spec(sel['super_batch_size']),
                               ctx.batch_spec(b), num_classes=num_classes,
                               label_smoothing=label_smoothing, sel=sel)
    cost['scoring'] += whole - sum(cost.values())  # Noise, top-k, gather.
    return cost

  learner = models['learner']
  hooks = rela.Supervised(learner, num_classes)  # Features before the head, and the head.
  return base.Built(
      init=init, phases=[base.Phase('train', step, costs)],
      super_batch_size=sel['super_batch_size'], frozen=frozen,
      one_off={'reference_train': one_off_reference},
      predict_fns={'predict': lambda params, images: learner.apply({'params': params}, images)[0],
                   'features': hooks.features},
      tx=tx, schedule=schedule, rela_hooks=hooks, models=models, txs=txs)


def _select(models, sel, state, frozen, batch, b, rng, mesh, num_classes):
  """(the b chosen examples, what the policy preferred): scoring, selection and gather."""
  needs = selection.needs(sel['policy'])

  def score_loss(role, params):
    return steps.per_example_loss(models[role], params, batch, num_classes=num_classes)

  losses = {}
  if 'actor' in needs:
    losses['actor_loss'] = score_loss('actor', state['actor']['params'])
  if 'learner' in needs:
    losses['learner_loss'] = score_loss('learner', state['learner']['params'])
  if 'reference' in needs:
    if sel['reference'] == 'cached':
      losses['reference_loss'] = batch[score_cache.KEY]
    elif sel['reference'] == 'online':
      losses['reference_loss'] = score_loss('reference', state['reference']['params'])
    else:
      losses['reference_loss'] = score_loss('reference', frozen['reference'])
  scores = selection.score(sel['policy'], num_examples=batch['label'].shape[0], **losses)
  indices = selection.select_indices(scores, b, rng, method=sel['method'],
                                     temperature=sel['temperature'])
  chosen, fallback = selection.gather(batch, indices, mesh, return_fallback=True)
  # What the policy prefers: mean score of selected vs unselected, and label noise picked.
  is_chosen = jnp.zeros(scores.shape, bool).at[indices].set(True)
  num_rest = max(scores.shape[0] - b, 1)
  m = {'selection/score_selected': jnp.mean(scores[indices]),
       'selection/score_unselected': jnp.sum(jnp.where(is_chosen, 0, scores)) / num_rest,
       'selection/gather_fallback': fallback}  # 1: this step's rows moved the long way.
  if 'label_flipped' in batch:
    m['selection/flipped_selected'] = jnp.mean(chosen['label_flipped'])
    m['selection/flipped_superbatch'] = jnp.mean(batch['label_flipped'])
  for name, loss in losses.items():
    m[f'selection/{name}'] = jnp.mean(loss)
  return chosen, m


def _measure_categories(models, txs, state, frozen, batch_spec, chosen_spec, *, num_classes,
                        label_smoothing, sel):
  """FLOPs per step by category (module doc), each piece compiled alone."""
  needs = selection.needs(sel['policy'])
  rng = jax.random.key(0)

  def train_cost(role, spec):
    fn = jax.jit(functools.partial(steps.sgd_step, models[role], txs[role],
                                   num_classes=num_classes, label_smoothing=label_smoothing))
    return flops.compile_and_measure(fn, state[role], spec, rng)[1].flops

  def score_cost(role, params):
    fn = jax.jit(functools.partial(steps.per_example_loss, models[role],
                                   num_classes=num_classes))
    return flops.compile_and_measure(fn, params, batch_spec)[1].flops

  cost = base.zero_costs()
  cost['learner_train'] = train_cost('learner', chosen_spec)
  if 'actor' in state:
    cost['actor_train'] = train_cost('actor', chosen_spec)
  if 'reference' in state:
    cost['reference_train'] = train_cost('reference', batch_spec)
  if sel['selecting']:
    if 'actor' in needs:
      cost['scoring'] += score_cost('actor', state['actor']['params'])
    if 'learner' in needs:
      cost['scoring'] += score_cost('learner', state['learner']['params'])
    if 'reference' in needs and sel['reference'] != 'cached':
      params = (state['reference']['params'] if sel['reference'] == 'online'
                else frozen['reference'])
      cost['reference_scoring'] = score_cost('reference', params)
  return cost
