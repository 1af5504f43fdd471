"""ReLA (Sun, Jiang, Lin, NeurIPS 2024): learn a free prior's representations first, then switch.

A frozen prior embedded every training image once (`rela_targets.py`: PCA to the student's
feature size, z-scored per dimension); records carry their target by example id
(`with_targets`). Early in training the student learns to predict them:

  f_i  = encoder(v_i)                  v1, v2: two *mild* augmentations of the batch
  loss = 1/2 [(1 - cos(T f1, y)) + (1 - cos(T f2, y))], averaged over the batch

with T a linear "transport" head (its own parameters and optimiser, in `state['rela']`). The
objective's monitoring classifier keeps training on stop-gradient features, and its
`after_update` hook still runs (BYOL's target EMA follows the online encoder through this phase,
as in the released code). Parameters only the objective's own loss trains (BYOL's projector and
predictor: `RELA_FROZEN`) are left exactly as they are, not shrunk by weight decay.

Then training switches, once and for good, to the ordinary objective (BYOL or supervised), with
the same optimiser and learning-rate schedule. The switch rule, config.rela.switch:
  rule='plateau' (the released code's): fast = a_f fast + (1 - a_f) loss (a_f = 0.999),
      slow = a_s slow + (1 - a_s) fast (a_s = 0.99; an EMA of the fast EMA, as released),
      rho = exp(-max(slow - fast, 0)); switch once rho >= threshold (0.995). The EMAs start at
      fast = 1, slow = 2 (as released), so a fresh start never looks like a plateau.
      `max_fraction` < 1 also switches at that fraction of training at the latest.
  rule='fraction': switch after round(fraction * total_steps) steps.
`switch_step` is the last step trained with the ReLA loss. All of it (EMAs, rho, the flag,
the switch step, the transport head) lives in the train state, so resume is exact across the
switch.

ReLA is a phase that wraps any method whose `Built` offers `rela_hooks` (supervised, BYOL):
`wrap` prepends a 'rela' phase to the method's phases and adds `state['rela']`. The loop
compiles each phase's step separately and runs the ReLA one until the state says `switched`:
each step's FLOPs are those of the program that ran.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from big_vision_style import id_table
from big_vision_style import losses
from big_vision_style import optim
from big_vision_style import views
from big_vision_style.methods import base

TARGET_KEY = 'rela_target'  # The batch field that carries each example's target.
SWITCH_DEFAULTS = dict(rule='plateau', fast=0.999, slow=0.99, threshold=0.995, fraction=0.5,
                       max_fraction=1.0)
# Where the EMAs start (the released code's values): far apart, so rho starts at exp(-1).
FAST_INIT, SLOW_INIT = 1.0, 2.0


def config_of(config):
  """`config.rela` with defaults, or None when the run does not use ReLA."""
  cfg = config.get('rela')
  if not cfg or not cfg.get('targets'):
    return None
  cfg = dict(cfg)
  switch = {**SWITCH_DEFAULTS, **dict(cfg.get('switch') or {})}
  unknown = set(switch) - set(SWITCH_DEFAULTS)
  if unknown:
    raise ValueError(f'Unknown config.rela.switch key(s) {sorted(unknown)}: expected '
                     f'{sorted(SWITCH_DEFAULTS)}.')
  if switch['rule'] not in ('plateau', 'fraction'):
    raise ValueError(f'config.rela.switch.rule={switch["rule"]!r}: expected plateau or fraction.')
  for key in ('fraction', 'max_fraction'):
    if not 0.0 < switch[key] <= 1.0:
      raise ValueError(f'config.rela.switch.{key}={switch[key]} must be in (0, 1].')
  for key in ('fast', 'slow', 'threshold'):
    if not 0.0 < switch[key] < 1.0:
      raise ValueError(f'config.rela.switch.{key}={switch[key]} must be in (0, 1).')
  cfg['switch'] = switch
  cfg['views'] = views.ViewConfig.make(cfg['views']) if cfg.get('views') else views.MILD
  return cfg


# ----- Targets, attached to records by id (an id table with vector values) -----
def load_targets(path: str) -> id_table.IdTable:
  return id_table.load(path, what='ReLA target file', how=(
      'compute it with `python -m big_vision_style.rela_targets --config <the ReLA config>`'))


def with_targets(source, table: id_table.IdTable):
  """`source` whose records also carry `rela_target`; fails now if any id has no target."""
  return id_table.with_columns(source, {TARGET_KEY: table})


# ----- The transport head and its loss -----
class Transport(nn.Module):
  """The linear map from the student's pooled features to the target space."""
  dim: int

  @nn.compact
  def __call__(self, feats):
    return nn.Dense(self.dim, name='linear')(feats)


def transport_loss(pred, target):
  """1 - cos(pred, target) per example: 0 when aligned, whatever the scale."""
  pred = pred / jnp.maximum(jnp.linalg.norm(pred, axis=-1, keepdims=True), 1e-12)
  target = target / jnp.maximum(jnp.linalg.norm(target, axis=-1, keepdims=True), 1e-12)
  return 1 - jnp.sum(pred * target, axis=-1)


# ----- The switch rule -----
def init_switch():
  return {'fast': jnp.float32(FAST_INIT), 'slow': jnp.float32(SLOW_INIT),
          'rho': jnp.float32(0.0), 'switched': jnp.bool_(False), 'switch_step': jnp.int32(0)}


def update_switch(sw, loss, step, cfg, total_steps: int):
  """The switch state after a ReLA step with mean loss `loss` at `step` (1-based)."""
  fast = cfg['fast'] * sw['fast'] + (1 - cfg['fast']) * loss
  slow = cfg['slow'] * sw['slow'] + (1 - cfg['slow']) * fast
  rho = jnp.exp(-jnp.maximum(slow - fast, 0.0))
  if cfg['rule'] == 'plateau':
    fire = rho >= cfg['threshold']
    if cfg['max_fraction'] < 1.0:
      fire |= step >= max(round(cfg['max_fraction'] * total_steps), 1)
  else:
    fire = step >= max(round(cfg['fraction'] * total_steps), 1)
  return {'fast': fast.astype(jnp.float32), 'slow': slow.astype(jnp.float32),
          'rho': rho.astype(jnp.float32), 'switched': jnp.asarray(fire),
          'switch_step': jnp.where(fire, step, 0).astype(jnp.int32)}


def init_state(rng, transport: Transport, transport_tx, feature_dim: int):
  params = transport.init(rng, jnp.zeros((1, feature_dim), jnp.float32))['params']
  return {'transport': {'params': params, 'opt': transport_tx.init(params)}, **init_switch()}


# ----- What ReLA needs from an objective -----
class Supervised:
  """ReLA's hooks for the supervised objective: features before the head, and the head."""
  RELA_FROZEN = ()

  def __init__(self, model, num_classes: int):
    self.model, self.num_classes = model, num_classes
    self.head = nn.Dense(num_classes)

  def features(self, params, images, *, train=False, rng=None):
    rngs = {'dropout': rng} if rng is not None else {}
    return self.model.apply({'params': params}, images, train=train, rngs=rngs)[1]['pre_logits']

  def classify(self, params, feats):
    if 'head' not in params:
      raise ValueError('ReLA with the supervised objective needs a model whose classifier is a '
                       "Dense layer named 'head' (every registered model has one).")
    return self.head.apply({'params': params['head']}, feats)

  def after_update(self, state, step, total_steps):
    del step, total_steps
    return state, None


def make_step(objective, tx, transport, transport_tx, schedule, train_rng, *, cfg,
              num_classes: int, total_steps: int):
  """The ReLA step `(state, frozen, batch, step) -> (state, measurements)`."""
  switch_cfg, view_cfg = cfg['switch'], cfg['views']

  def loss_fn(params, transport_params, v1, v2, batch, rng):
    rng1, rng2 = jax.random.split(rng)
    feats1 = objective.features(params, v1, train=True, rng=rng1)
    feats2 = objective.features(params, v2, train=True, rng=rng2)
    target = batch[TARGET_KEY]
    predict = lambda f: transport.apply({'params': transport_params}, f)
    rela = jnp.mean(0.5 * (transport_loss(predict(feats1), target) +
                           transport_loss(predict(feats2), target)))
    logits = objective.classify(params, jax.lax.stop_gradient(feats1))
    xent = jnp.mean(losses.softmax_xent(logits, batch['label'], num_classes=num_classes))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return rela + xent, {'rela': rela, 'classifier_loss': xent, 'classifier_accuracy': accuracy}

  def update_fn(state, frozen, batch, step):
    del frozen  # The prior ran offline: its targets come with the batch.
    rng_views, rng_model = jax.random.split(jax.random.fold_in(train_rng, step))
    v1, v2 = views.two_views(rng_views, batch['image'], view_cfg)
    learner, rs = state['learner'], state['rela']
    (_, aux), (grads, t_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        learner['params'], rs['transport']['params'], v1, v2, batch, rng_model)
    updates, opt = tx.update(grads, learner['opt'], learner['params'])
    params = optax.apply_updates(learner['params'], updates)
    for key in objective.RELA_FROZEN:  # Untouched by this loss: no weight decay either.
      params[key] = learner['params'][key]
    t_updates, t_opt = transport_tx.update(t_grads, rs['transport']['opt'],
                                           rs['transport']['params'])
    t_params = optax.apply_updates(rs['transport']['params'], t_updates)
    switch = update_switch({k: rs[k] for k in ('fast', 'slow')}, aux['rela'], step, switch_cfg,
                           total_steps)
    new_state = {**state, 'learner': {'params': params, 'opt': opt},
                 'rela': {'transport': {'params': t_params, 'opt': t_opt}, **switch}}
    new_state, momentum = objective.after_update(new_state, step, total_steps)
    measurements = {'rela/loss': aux['rela'], 'rela/rho': switch['rho'],
                    'rela/fast': switch['fast'], 'rela/slow': switch['slow'],
                    'rela/switched': switch['switched'],
                    'train/grad_norm': optax.global_norm(grads), 'train/lr': schedule(step - 1),
                    'train/classifier_loss': aux['classifier_loss'],
                    'train/classifier_accuracy': aux['classifier_accuracy']}
    if momentum is not None:
      measurements['train/momentum'] = momentum
    return new_state, measurements

  return update_fn


# ----- The phase -----
def prepare(config, source):
  """ReLA-D: the prior's targets ride with the records, by id; its one-off costs."""
  cfg = config_of(config)
  targets = load_targets(cfg['targets'])
  source = with_targets(source, targets)
  prior = dict(cfg.get('prior') or {})
  recorded = targets.meta.get('prior') or {}
  expect = {'prior': {k: prior.get(k) for k in recorded} if prior and recorded else None,
            'prior_step': id_table.latest_checkpoint_step(prior.get('workdir')),
            'requested_dim': cfg.get('target_dim')}
  id_table.check_provenance(targets, config, source=source, expect=expect)
  one_off = {'prior_embedding': float(targets.meta.get('flops', 0.0)),
             'prior_train': float(targets.meta.get('prior_train_flops', 0.0))}
  return source, one_off


def wrap(ctx: base.Context, built: base.Built) -> base.Built:
  """`built` with ReLA's phase first (module doc)."""
  cfg = config_of(ctx.config)
  if built.rela_hooks is None:
    raise ValueError(f'config.rela is not implemented for the '
                     f'{ctx.config.get("objective", "supervised")} objective.')
  if ctx.config.get('selection'):
    raise ValueError('config.selection works with the supervised and contrastive objectives, '
                     'without ReLA.')
  hooks = built.rela_hooks
  dim = int(ctx.example[TARGET_KEY].shape[0])
  transport = Transport(dim)
  transport_tx = optim.make_optimizer(ctx.config.optax, ctx.total_steps)[0]
  inner_init = built.init

  def init(rng):
    state = inner_init(rng)
    feature_dim = hooks.features(state['learner']['params'],
                                 jnp.zeros(ctx.image_shape(), jnp.float32)).shape[-1]
    state['rela'] = init_state(jax.random.fold_in(rng, 1), transport, transport_tx, feature_dim)
    return state

  step = make_step(hooks, built.tx, transport, transport_tx, built.schedule, ctx.train_rng,
                   cfg=cfg, num_classes=ctx.num_classes, total_steps=ctx.total_steps)

  def ended(state):
    if not bool(jax.device_get(state['rela']['switched'])):
      return None
    return int(jax.device_get(state['rela']['switch_step']))

  phase = base.Phase('rela', step, base.all_learner_train, ended=ended,
                     end_metric='rela/switch_step')
  return dataclasses.replace(built, init=init, phases=[phase] + built.phases)
