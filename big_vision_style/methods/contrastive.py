"""Contrastive image-text training with ActiveCLIP and JEST batch selection.

  config.objective = 'contrastive'
  config.model_name = 'two_towers'               # models/two_towers.py
  config.contrastive_loss = 'sigmoid'            # SigLIP; or 'softmax' (CLIP)
  config.selection = dict(
      policy='learnability',     # uniform | learnability | easy_reference | hard_learner
      method='joint',            # joint: JEST's chunked sampler; independent: per-pair scores
      filter_ratio=0.8,          # B = b / (1 - f)
      num_chunks=16, gain=1.0,   # JEST's N and its score multiplier (the paper's is 100)
      scorer='learner',          # whose embeddings score: 'learner' (JEST) or 'actor'
                                 # (ActiveCLIP's small online actor; needs config.actor_model)
      reference='pretrained',    # pretrained (a frozen two-tower run) | cached (embeddings)
      reference_workdir=..., embedding_cache=...,
      score_patch_size=None,     # Flexi-JEST: score at this (coarser) patch size, and train
                                 # half of the selected batch at it, half at the native one
      reuse_scoring_forward=False)  # the scorer's gradient step reuses its scoring forward

One step, on a super-batch of B pairs (sharded over 'data'):
  1. embed the super-batch with the scorer (and the reference, unless its embeddings come
     cached with the batch), in evaluation mode, at `score_patch_size` if set;
  2. select b pairs: JEST's joint sampler (jest.sample_joint: never forms B x B) or independent
     per-pair scores (jest.select_independent: the diagonal of the same matrix, ActiveCLIP);
     'uniform' draws b of B uniformly;
  3. gather them (selection.gather: only the selected pairs move) and update the learner with
     the contrastive loss of the selected batch; an online actor trains on the same batch.
     With `reuse_scoring_forward`, the model that scored does not run its forward over the b
     again: its backward uses the chosen rows of the scoring forward's activations
     (selection/forward_reuse.py). Not with Flexi-JEST, which scores at another patch size.
The selected sub-batch's learnability (sum of S over its b x b pairs, divided by b) and the
fraction of corrupted pairs chosen are logged: the two things selection is meant to change.

FLOPs by category (XLA cost analysis of each piece compiled alone): learner_train (forward +
backward on b), scoring (the scorer's forward over B, plus whatever the whole step holds
beyond its pieces: the sampler, the gather), actor_train, reference_scoring (the live
reference's forward over B; zero when cached). With the forward reused, the scorer's train
category is its step on b less its forward on b, each measured. By default it is not reused:
keeping all B pairs' activations until the choice is made costs B/b times the activation
memory of a plain step.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from big_vision_style import embedding_cache
from big_vision_style import flops
from big_vision_style import id_table
from big_vision_style import image_text
from big_vision_style import optim
from big_vision_style import roles
from big_vision_style import selection
from big_vision_style.methods import base
from big_vision_style.selection import jest


def selection_config(config) -> dict:
  return selection.parse(config, selection.CONTRASTIVE)


def roles_needed(sel) -> set[str]:
  """Which models the step runs beyond the learner's update: 'actor', 'reference', 'learner'
  (the learner's own scoring forward)."""
  out = {sel['scorer'] if r == 'scorer' else r
         for r in selection.reads(sel['policy'], selection.CONTRASTIVE)}
  if sel['scorer'] == 'actor' and sel['policy'] != 'uniform':
    out.add('actor')  # Trained online on the selected batch, even if the policy ignores it.
  return out


def reusing_role(sel) -> str | None:
  """The role whose train step reuses its scoring forward, if any (module doc)."""
  if sel['reuse_scoring_forward'] and sel['scorer'] in roles_needed(sel):
    return sel['scorer']
  return None


def prepare(config, source):
  """A cached reference's embeddings ride with the records, looked up by id."""
  sel = selection_config(config)
  one_off = base.zero_costs()
  if sel['reference'] == 'cached' and 'reference' in roles_needed(sel):
    if not sel['embedding_cache']:
      raise ValueError("config.selection.reference='cached' needs config.selection."
                       'embedding_cache: the path of a reference embedding cache (python -m '
                       'big_vision_style.tools.reference_embeddings).')
    cache = embedding_cache.load(sel['embedding_cache'])
    source = embedding_cache.with_cached_embeddings(source, cache)
    workdir = sel.get('reference_workdir') or None
    reference = roles.build_role_model(config, 'reference', 0)
    id_table.check_provenance(cache.table, config, source=source, expect={
        'dim': getattr(reference, 'embed_dim', None), 'reference_workdir': workdir,
        'reference_step': id_table.latest_checkpoint_step(workdir)})
    one_off['reference_scoring'] = float(cache.table.meta.get('flops', 0.0))
    one_off['reference_train'] = float(cache.table.meta.get('reference_train_flops', 0.0))
  return source, one_off


def build(ctx: base.Context) -> base.Built:
  config, sel, b = ctx.config, selection_config(ctx.config), ctx.batch_size
  loss = config.get('contrastive_loss', 'sigmoid')
  needed = roles_needed(sel)
  flexi = tuple(sel['score_patch_size']) if sel['score_patch_size'] else None
  reusing = reusing_role(sel)
  tx, schedule = optim.make_optimizer(config.optax, ctx.total_steps)
  models = {'learner': roles.build_role_model(config, 'learner', ctx.num_classes)}
  txs = {'learner': tx}
  if 'actor' in needed:
    models['actor'] = roles.build_role_model(config, 'actor', ctx.num_classes)
    txs['actor'] = optim.make_optimizer(config.get('actor_optax', config.optax),
                                        ctx.total_steps)[0]
  frozen, one_off, cache = {}, {}, None
  text_shape = (1,) + tuple(ctx.example['text'].shape)
  if 'reference' in needed and sel['reference'] == 'pretrained':
    models['reference'], frozen['reference'], one_off['reference_train'] = (
        roles.frozen_reference(ctx, lambda model, rng: image_text.init_params(
            model, rng, ctx.image_shape(), text_shape)))
  elif 'reference' in needed:  # Cached: the cache supplies the temperature and bias.
    cache = (embedding_cache.placeholder() if ctx.abstract else
             embedding_cache.load(sel['embedding_cache']))

  def init(rng):
    state = {}
    for role, key in zip(txs, jax.random.split(rng, len(txs))):
      params = image_text.init_params(models[role], key, ctx.image_shape(), text_shape)
      state[role] = {'params': params, 'opt': txs[role].init(params)}
    return state

  def reference_embeddings(frozen, batch):
    if 'reference' not in needed:
      return None
    if cache is not None:
      return cache.embeddings(batch[embedding_cache.KEY])
    return image_text.embed(models['reference'], frozen['reference'], batch['image'],
                            batch['text'])

  def step(state, frozen, batch, step):
    rng_select, = jax.random.split(jax.random.fold_in(ctx.train_rng, step), 1)
    measurements, chosen, scorer_emb, scorer_vjp, indices = {}, batch, None, None, None
    if sel['selecting']:
      scorer = sel['scorer']
      if reusing:
        scorer_emb, scorer_vjp = image_text.scoring_forward(
            models[scorer], state[scorer]['params'], _pixels_only(batch))
      elif scorer in needed:
        scorer_emb = image_text.embed(models[scorer], state[scorer]['params'], batch['image'],
                                      batch['text'], patch_size=flexi)
      reference_emb = reference_embeddings(frozen, batch)
      if sel['policy'] == 'uniform':
        indices = selection.select_indices(jnp.zeros([sel['super_batch_size']]), b, rng_select)
      elif sel['method'] == 'joint':
        indices = jest.sample_joint(scorer_emb, reference_emb, num_selected=b,
                                    num_chunks=sel['num_chunks'], rng=rng_select, mesh=ctx.mesh,
                                    policy=sel['policy'], loss=loss, gain=sel['gain']).indices
      else:
        indices = jest.select_independent(scorer_emb, reference_emb, num_selected=b,
                                          rng=rng_select, policy=sel['policy'], gain=sel['gain'])
      chosen, fallback = selection.gather(batch, indices, ctx.mesh, return_fallback=True)
      measurements['selection/gather_fallback'] = fallback  # 1: rows moved the long way.
      if sel['policy'] != 'uniform':
        # Score of the chosen sub-batch vs that of the first b (an i.i.d. batch), per pair.
        for name, idx in (('selected', indices), ('iid', jnp.arange(b))):
          measurements[f'selection/learnability_{name}'] = jest.batch_learnability(
              scorer_emb, reference_emb, idx, policy=sel['policy'], loss=loss) / b
      if 'corruption' in batch:  # Which pairs selection keeps: web noise should be avoided.
        measurements['selection/corrupted_selected'] = jnp.mean(chosen['corruption'] > 0)
        measurements['selection/corrupted_superbatch'] = jnp.mean(batch['corruption'] > 0)

    def train_role(role, patch):
      if role == reusing:
        return image_text.reusing_train_step(models[role], txs[role], state[role], scorer_emb,
                                             scorer_vjp, chosen, indices, ctx.mesh, loss=loss)
      return image_text.train_step(models[role], txs[role], state[role], _pixels_only(chosen),
                                   loss=loss, flexi_patch_size=patch)

    new_state = dict(state)
    new_state['learner'], m = train_role('learner', flexi)
    measurements.update({'train/loss': m['loss'], 'train/grad_norm': m['grad_norm'],
                         'train/lr': schedule(step - 1)})
    if 'actor' in state:  # ActiveCLIP: same objective, same selected batch, no Flexi.
      new_state['actor'], m = train_role('actor', None)
      measurements['actor/loss'] = m['loss']
    return new_state, measurements

  def costs(whole, state, frozen):
    if not sel['selecting'] and set(state) == {'learner'}:
      # The whole step is the learner's (the residual below would make it so anyway): no
      # second compile of it to say that.
      return base.all_learner_train(whole, state, frozen)
    cost = _measure_categories(models, txs, state, frozen, ctx.batch_spec(sel['super_batch_size']),
                               ctx.batch_spec(b), sel=sel, loss=loss)
    # What the whole step holds beyond its pieces: selection overhead (sampler, gather), or,
    # with i.i.d. batches, bits of the update itself (the learning-rate schedule).
    cost['scoring' if sel['selecting'] else 'learner_train'] += whole - sum(cost.values())
    return cost

  learner = models['learner']
  return base.Built(
      init=init, phases=[base.Phase('train', step, costs)],
      super_batch_size=sel['super_batch_size'], frozen=frozen, one_off=one_off,
      # (zimg, ztxt, out); either input may be None. No pooled features: no linear probe.
      predict_fns={'predict': lambda params, images, texts: learner.apply(
          {'params': params}, images, texts)},
      tx=tx, schedule=schedule, rela_hooks=None, models=models, txs=txs)


def _pixels_only(batch):
  return {'image': batch['image'], 'text': batch['text']}


def _measure_categories(models, txs, state, frozen, batch_spec, chosen_spec, *, sel, loss: str):
  """FLOPs of one step by category (module doc), each piece compiled alone."""
  batch_spec, chosen_spec = _pixels_only(batch_spec), _pixels_only(chosen_spec)
  flexi = tuple(sel['score_patch_size']) if sel['score_patch_size'] else None
  needed = roles_needed(sel)
  cost = base.zero_costs()

  def train_cost(role, patch):
    fn = jax.jit(functools.partial(image_text.train_step, models[role], txs[role], loss=loss,
                                   flexi_patch_size=patch))
    return flops.compile_and_measure(fn, state[role], chosen_spec)[1].flops

  def forward_cost(role, params, patch=None, spec=batch_spec):
    fn = jax.jit(lambda p, b: image_text.embed(models[role], p, b['image'], b['text'],
                                               patch_size=patch)[:2])
    return flops.compile_and_measure(fn, params, spec)[1].flops

  reusing = reusing_role(sel)
  for role in ('learner', 'actor'):
    if role in state:
      cost[f'{role}_train'] = train_cost(role, flexi if role == 'learner' else None)
      if role == reusing:  # Its forward over the chosen b was done while scoring.
        cost[f'{role}_train'] -= forward_cost(role, state[role]['params'], spec=chosen_spec)
  if sel['selecting'] and sel['policy'] != 'uniform':
    scorer = sel['scorer']
    if scorer in needed:
      cost['scoring'] = forward_cost(scorer, state[scorer]['params'], flexi)
    if 'reference' in needed and sel['reference'] == 'pretrained':
      cost['reference_scoring'] = forward_cost('reference', frozen['reference'])
  return cost
