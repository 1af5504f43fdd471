"""Contrastive image-text training with ActiveCLIP and JEST batch selection:
`config.objective = 'contrastive'` (the trainer's other objectives are in train.py / byol.py).

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
                                    # (forward_reuse.py); B/b x the activation memory

One step, on a super-batch of B pairs (sharded over 'data'):
  1. embed the super-batch with the scorer (and the reference, unless its embeddings come
     cached with the batch), in evaluation mode, at `score_patch_size` if set;
  2. select b pairs: JEST's joint sampler (jest.sample_joint: never forms B x B) or independent
     per-pair scores (jest.select_independent: the diagonal of the same matrix, ActiveCLIP);
     'uniform' draws b of B uniformly;
  3. gather them (selection.gather: only the selected pairs move) and update the learner with
     the contrastive loss of the selected batch; an online actor trains on the same batch.
     With `reuse_scoring_forward`, the model that scored (the learner in JEST, the actor in
     ActiveCLIP) does not run its forward over the b again: its backward uses the chosen rows
     of the scoring forward's activations (forward_reuse.py). Not with Flexi-JEST, which
     scores at another patch size than it trains.
The selected sub-batch's learnability (sum of S over its b x b pairs, divided by b) and the
fraction of corrupted pairs chosen are logged: the two things selection is meant to change.

FLOPs by category (XLA cost analysis of each piece compiled alone, as train.py does):
learner_train (forward + backward on b), scoring (the scorer's forward over B, plus whatever
the whole step holds beyond its pieces: the sampler, the gather), actor_train,
reference_scoring (the live reference's forward over B; zero when cached). With the scoring
forward reused, the scorer's train category is its step on b less its forward on b, each
measured; the gather of the chosen activations is then part of what the whole step holds
beyond its pieces (scoring). By default the forward is not reused: the backward needs the
activations of only b of the B pairs, and keeping all B's until the choice is made costs B/b
times the activation memory of a plain step.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from big_vision_style import contrastive
from big_vision_style import embedding_cache
from big_vision_style import flops
from big_vision_style import forward_reuse
from big_vision_style import jest
from big_vision_style import selection

POLICIES = ('uniform',) + jest.POLICIES
METHODS = ('joint', 'independent')
SCORERS = ('learner', 'actor')
REFERENCES = ('pretrained', 'cached')
DEFAULTS = dict(policy='uniform', method='joint', filter_ratio=0.0, num_chunks=1, gain=1.0,
                scorer='learner', reference='pretrained', reference_workdir=None,
                embedding_cache=None, score_patch_size=None, reuse_scoring_forward=False)


def selection_config(config) -> dict:
  """`config.selection` with defaults, checked; adds `super_batch_size` and `chunk_size`."""
  given = dict(config.get('selection') or {})
  unknown = set(given) - set(DEFAULTS)
  if unknown:
    raise ValueError(f'Unknown config.selection key(s) {sorted(unknown)} for the contrastive '
                     f'objective: expected {sorted(DEFAULTS)}.')
  sel = {**DEFAULTS, **given}
  for key, allowed in (('policy', POLICIES), ('method', METHODS), ('scorer', SCORERS),
                       ('reference', REFERENCES)):
    if sel[key] not in allowed:
      raise ValueError(f'config.selection.{key}={sel[key]!r}: expected one of {allowed}.')
  if sel['policy'] == 'uniform' and sel['score_patch_size']:
    raise ValueError('config.selection.score_patch_size (Flexi-JEST) needs a scoring policy; '
                     'with policy=uniform nothing is scored.')
  b = config.input.batch_size
  sel['super_batch_size'] = selection.super_batch_size(b, sel['filter_ratio'])
  if sel['policy'] != 'uniform' and sel['method'] == 'joint':
    jest.check_sizes(sel['super_batch_size'], b, sel['num_chunks'])
  if sel['score_patch_size'] and sel['reuse_scoring_forward']:
    raise ValueError('config.selection.reuse_scoring_forward cannot be used with Flexi-JEST '
                     '(score_patch_size): it scores at another patch size than it trains, so '
                     'the scoring forward holds no activation the gradient step could reuse.')
  if sel['score_patch_size'] and b % 2:
    raise ValueError(f'Flexi-JEST trains half of the batch at each patch size: '
                     f'config.input.batch_size={b} must be even.')
  return sel


def roles_needed(sel) -> set[str]:
  """Which models the step runs beyond the learner's update: 'actor', 'reference', 'learner'
  (the learner's own scoring forward)."""
  if sel['policy'] == 'uniform':
    return set()
  out = set()
  for role in jest.needs(sel['policy']):
    out.add(sel['scorer'] if role == 'learner' else 'reference')
  if sel['scorer'] == 'actor':
    out.add('actor')  # Trained online on the selected batch, even if the policy ignores it.
  return out


def reusing_role(sel) -> str | None:
  """The role whose train step reuses its scoring forward, if any (module doc)."""
  if sel['reuse_scoring_forward'] and sel['scorer'] in roles_needed(sel):
    return sel['scorer']
  return None


def embed(model, params, images, texts, *, patch_size=None) -> jest.Embeddings:
  zimg, ztxt, out = model.apply({'params': params}, images, texts, patch_size=patch_size)
  return jest.Embeddings(zimg, ztxt, out['t'], out['b'])


def init_params(model, rng, image_shape, text_shape):
  return model.init(rng, jnp.zeros(image_shape, jnp.float32),
                    jnp.ones(text_shape, jnp.int32))['params']


def loss_fn(model, params, batch, *, loss: str, flexi_patch_size=None):
  """Mean contrastive loss of `batch` (all b pairs as one contrastive batch). Flexi-JEST: the
  second half of the images goes through the image tower at `flexi_patch_size`."""
  if flexi_patch_size is None:
    e = embed(model, params, batch['image'], batch['text'])
    zimg = e.image
  else:
    half = batch['image'].shape[0] // 2
    native = embed(model, params, batch['image'][:half], batch['text'])
    coarse = embed(model, params, batch['image'][half:], None, patch_size=flexi_patch_size)
    zimg = jnp.concatenate([native.image, coarse.image], axis=0)
    e = native
  return jnp.mean(contrastive.per_example_loss(loss, zimg, e.text, e.temperature, e.bias))


def train_step(model, tx, role_state, batch, *, loss: str, flexi_patch_size=None):
  """One optimiser update of `{'params', 'opt'}` on the contrastive loss of `batch`."""
  value, grads = jax.value_and_grad(functools.partial(
      loss_fn, model, batch=batch, loss=loss, flexi_patch_size=flexi_patch_size))(
          role_state['params'])
  return _apply(tx, role_state, value, grads)


def scoring_forward(model, params, batch):
  """The scorer's embeddings of the super-batch and their VJP (for `reusing_train_step`)."""
  return jax.vjp(lambda p: embed(model, p, batch['image'], batch['text']), params)


def reusing_train_step(model, tx, role_state, scored, scored_vjp, chosen, indices, mesh, *,
                       loss: str):
  """`train_step` on `chosen` (the rows `indices` of the super-batch that `scoring_forward`
  embedded as `scored`), with no forward of its own (`reused_gradient`)."""
  value, grads = reused_gradient(model, role_state['params'], scored, scored_vjp, chosen,
                                 indices, mesh, loss=loss)
  return _apply(tx, role_state, value, grads)


def reused_gradient(model, params, scored, scored_vjp, chosen, indices, mesh, *, loss: str):
  """The loss of `chosen` and its gradient, as `loss_fn` and `jax.grad` would give them, but
  with the loss of the chosen rows' embeddings differentiated back through the scoring
  forward's activations of those rows instead of a new forward over them."""
  fn = lambda p, x: embed(model, p, x['image'], x['text'])
  sub_vjp = forward_reuse.sub_batch_vjp(fn, params, scored_vjp, _pixels_only(chosen), indices,
                                        mesh, full_size=scored.image.shape[0])
  rows = selection.gather({'image': scored.image, 'text': scored.text}, indices, mesh)
  value, cotangent = jax.value_and_grad(lambda e: jnp.mean(contrastive.per_example_loss(
      loss, e.image, e.text, e.temperature, e.bias)))(scored._replace(**rows))
  grads, = sub_vjp(cotangent)
  return value, grads


def _apply(tx, role_state, value, grads):
  updates, opt = tx.update(grads, role_state['opt'], role_state['params'])
  return ({'params': optax.apply_updates(role_state['params'], updates), 'opt': opt},
          {'loss': value, 'grad_norm': optax.global_norm(grads)})


def _pixels_only(batch):
  return {'image': batch['image'], 'text': batch['text']}


def make_update_fn(models_by_role, txs, schedule, train_rng, replicated, mesh, *, sel,
                   batch_size: int, loss: str, cache=None):
  """The jitted step `(state, frozen, batch, step) -> (state, measurements)` (module doc).

  `cache`: the reference's `embedding_cache.EmbeddingCache` when sel['reference'] == 'cached'
  (its embeddings arrive with the batch; the cache supplies the temperature and bias).
  """
  selecting = sel['policy'] != 'uniform' or sel['super_batch_size'] != batch_size
  needed = roles_needed(sel)
  flexi = sel['score_patch_size']
  flexi = tuple(flexi) if flexi else None
  reusing = reusing_role(sel)

  def reference_embeddings(frozen, batch):
    if 'reference' not in needed:
      return None
    if sel['reference'] == 'cached':
      return cache.embeddings(batch[embedding_cache.KEY])
    return embed(models_by_role['reference'], frozen['reference'], batch['image'],
                 batch['text'])

  def update_fn(state, frozen, batch, step):
    rng_select, = jax.random.split(jax.random.fold_in(train_rng, step), 1)
    measurements = {}
    if selecting:
      scorer = sel['scorer']
      scorer_emb = scorer_vjp = None
      if reusing:
        scorer_emb, scorer_vjp = scoring_forward(models_by_role[scorer],
                                                 state[scorer]['params'], _pixels_only(batch))
      elif scorer in needed:
        scorer_emb = embed(models_by_role[scorer], state[scorer]['params'], batch['image'],
                           batch['text'], patch_size=flexi)
      reference_emb = reference_embeddings(frozen, batch)
      if sel['policy'] == 'uniform':
        indices = selection.select_indices(jnp.zeros([sel['super_batch_size']]), batch_size,
                                           rng_select)
      elif sel['method'] == 'joint':
        indices = jest.sample_joint(scorer_emb, reference_emb, num_selected=batch_size,
                                    num_chunks=sel['num_chunks'], rng=rng_select, mesh=mesh,
                                    policy=sel['policy'], loss=loss, gain=sel['gain']).indices
      else:
        indices = jest.select_independent(scorer_emb, reference_emb, num_selected=batch_size,
                                          rng=rng_select, policy=sel['policy'],
                                          gain=sel['gain'])
      chosen = selection.gather(batch, indices, mesh)
      if sel['policy'] != 'uniform':
        # Score of the chosen sub-batch vs that of the first b (an i.i.d. batch), per pair.
        first = jnp.arange(batch_size)
        for name, idx in (('selected', indices), ('iid', first)):
          measurements[f'selection/learnability_{name}'] = jest.batch_learnability(
              scorer_emb, reference_emb, idx, policy=sel['policy'], loss=loss) / batch_size
      if 'corruption' in batch:  # Which pairs selection keeps: web noise should be avoided.
        measurements['selection/corrupted_selected'] = jnp.mean(chosen['corruption'] > 0)
        measurements['selection/corrupted_superbatch'] = jnp.mean(batch['corruption'] > 0)
    else:
      chosen = batch

    def train_role(role, patch):
      if role == reusing:
        return reusing_train_step(models_by_role[role], txs[role], state[role], scorer_emb,
                                  scorer_vjp, chosen, indices, mesh, loss=loss)
      return train_step(models_by_role[role], txs[role], state[role], _pixels_only(chosen),
                        loss=loss, flexi_patch_size=patch)

    new_state = dict(state)
    new_state['learner'], m = train_role('learner', flexi)
    measurements.update({'train/loss': m['loss'], 'train/grad_norm': m['grad_norm'],
                         'train/lr': schedule(step - 1)})
    if 'actor' in state:  # ActiveCLIP: same objective, same selected batch, no Flexi.
      new_state['actor'], m = train_role('actor', None)
      measurements['actor/loss'] = m['loss']
    return new_state, measurements

  return jax.jit(update_fn, donate_argnums=(0,), out_shardings=(replicated, replicated))


def measure_categories(models_by_role, txs, state, frozen, batch_spec, chosen_spec, *, sel,
                       loss: str):
  """FLOPs of one step by category (module doc), each piece compiled alone."""
  batch_spec, chosen_spec = _pixels_only(batch_spec), _pixels_only(chosen_spec)
  flexi = tuple(sel['score_patch_size']) if sel['score_patch_size'] else None
  needed = roles_needed(sel)
  selecting = sel['policy'] != 'uniform' or sel['super_batch_size'] != chosen_spec[
      'image'].shape[0]
  cost = {c: 0.0 for c in flops.CATEGORIES}

  def train_cost(role, patch):
    fn = jax.jit(functools.partial(train_step, models_by_role[role], txs[role], loss=loss,
                                   flexi_patch_size=patch))
    return flops.compile_and_measure(fn, state[role], chosen_spec)[1].flops

  def forward_cost(role, params, patch=None, spec=batch_spec):
    fn = jax.jit(lambda p, b: embed(models_by_role[role], p, b['image'], b['text'],
                                    patch_size=patch)[:2])
    return flops.compile_and_measure(fn, params, spec)[1].flops

  reusing = reusing_role(sel)
  for role in ('learner', 'actor'):
    if role in state:
      cost[f'{role}_train'] = train_cost(role, flexi if role == 'learner' else None)
      if role == reusing:  # Its forward over the chosen b was done while scoring.
        cost[f'{role}_train'] -= forward_cost(role, state[role]['params'], spec=chosen_spec)
  if selecting and sel['policy'] != 'uniform':
    scorer = sel['scorer']
    if scorer in needed:
      cost['scoring'] = forward_cost(scorer, state[scorer]['params'], flexi)
    if 'reference' in needed and sel['reference'] == 'pretrained':
      cost['reference_scoring'] = forward_cost('reference', frozen['reference'])
  return cost
