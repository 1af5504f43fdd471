"""BYOL (Grill et al., 2020) as a method of the trainer: `config.objective = 'byol'`; and
`TwoViewMomentum`, the networks and step that BYOL shares with MoCLR (methods/moclr.py).

Networks. The online network is the encoder (any registered model, built without a head: its
pooled `pre_logits` are the representation), a projector MLP and a predictor MLP; the target
network is an exponential moving average (EMA) of the online encoder and projector. An online
linear classifier on the stop-gradient representation tracks how linearly separable the
features are while training (the released ReLA code does the same); it never shapes them.

One step, on a batch of un-augmented images (the views are made on device, `views.py`):
  v1, v2 = two augmented views
  p_i = predictor(projector(encoder(v_i)))            online, with gradients
  z_i = projector_t(encoder_t(v_i))                   target, no gradients
  loss = mean over the batch of 1/2 [(2 - 2 cos(p1, z2)) + (2 - 2 cos(p2, z1))]
         (BYOL's normalised squared error: the negative cosine, shifted to be >= 0)
         + cross-entropy of the online classifier on stop_gradient(encoder(v1))
  online <- AdamW step;  target <- m * target + (1 - m) * online (encoder and projector)
with the target momentum m rising from `momentum` to `momentum_end` on a cosine schedule
(BYOL's; `momentum_schedule='constant'` keeps it at `momentum`, as the released ReLA code does).
All of that but the loss on (p_i, z_i) and the classifier's loss is `TwoViewMomentum`'s; BYOL
and MoCLR each add their loss, their MLP, their defaults and their target's place in the state.

The heads use LayerNorm rather than BatchNorm: BYOL works without batch statistics (Richemond
et al., 2020), and without them the step stays a pure per-example function (no mutable batch
statistics in the state, and the same result whatever the number of devices).

State (plain dict): `{'learner': {'params': {encoder, projector, predictor, classifier}, 'opt'},
'target': {encoder, projector}}`. ReLA (methods/rela.py) uses the hooks `features`, `classify`,
`after_update` and `RELA_FROZEN` to run its own phase on the same state. All of the step's
FLOPs (the views and the EMA included) count as learner_train.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from big_vision_style import losses
from big_vision_style import optim
from big_vision_style import roles
from big_vision_style import views
from big_vision_style.methods import base

DEFAULTS = dict(projector_hidden=256, projector_dim=64, predictor_hidden=256, momentum=0.99,
                momentum_end=1.0, momentum_schedule='cosine', views=None)


class MLP(nn.Module):
  """BYOL's projector / predictor: Dense -> LayerNorm -> ReLU -> Dense."""
  hidden: int
  out: int

  # Compact, so its parameters are Dense_0, LayerNorm_0, Dense_1 (BYOL's checkpoints and
  # initialisation read those names; MoCLR's MLP names its layers, for DnC's `hidden_layer`).
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.LayerNorm()(nn.Dense(self.hidden)(x)))
    return nn.Dense(self.out)(x)


def momentum_at(step, total_steps: int, *, base: float, end: float, schedule: str):
  """Target EMA momentum at `step` (1-based): cosine from `base` to `end`, or constant."""
  if schedule == 'constant':
    return jnp.asarray(base, jnp.float32)
  if schedule != 'cosine':
    raise ValueError(f'byol.momentum_schedule={schedule!r}: expected cosine or constant.')
  progress = jnp.clip((step - 1) / max(total_steps - 1, 1), 0.0, 1.0)
  return end - (end - base) * (jnp.cos(math.pi * progress) + 1) / 2


def ema(target, online, momentum):
  return jax.tree.map(lambda t, o: momentum * t + (1 - momentum) * o, target, online)


def regression_loss(p, z):
  """2 - 2 cos(p, z) per example: BYOL's loss, 0 when aligned, 4 when opposite."""
  p = p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return 2 - 2 * jnp.sum(p * z, axis=-1)


class TwoViewMomentum:
  """An online encoder + projector + predictor regressed, on two views, onto an EMA target of
  the encoder + projector, with an online classifier: init, forward passes and the jitted step.

  A subclass sets NAME (its config field, `config.<NAME>`), DEFAULTS, MLP and LOSS (the name of
  its loss in `loss`'s aux; the step reports it as train/loss), and defines `objective` and
  `classifier_loss`; `head`, `target_nets` and `as_target` are its other choices.
  """
  NAME: str
  DEFAULTS: dict
  MLP: type[nn.Module]
  LOSS: str

  def __init__(self, encoder, num_classes: int, cfg=None):
    name, defaults = self.NAME, self.DEFAULTS
    cfg = {**defaults, **dict(cfg or {})}
    unknown = set(cfg) - set(defaults)
    if unknown:
      raise ValueError(f'Unknown config.{name} key(s) {sorted(unknown)}: expected '
                       f'{sorted(defaults)}.')
    if cfg['momentum_schedule'] not in ('cosine', 'constant'):
      raise ValueError(f'config.{name}.momentum_schedule={cfg["momentum_schedule"]!r}: expected '
                       'cosine or constant.')
    if not 0.0 <= cfg['momentum'] <= cfg['momentum_end'] <= 1.0:
      raise ValueError(f'config.{name}: need 0 <= momentum ({cfg["momentum"]}) <= momentum_end '
                       f'({cfg["momentum_end"]}) <= 1.')
    self.cfg = cfg
    self.encoder = encoder
    self.num_classes = num_classes
    self.projector = self.MLP(cfg['projector_hidden'], cfg['projector_dim'])
    self.predictor = self.MLP(cfg['predictor_hidden'], cfg['projector_dim'])
    self.classifier = nn.Dense(num_classes)
    self.view_cfg = views.ViewConfig.make(cfg['views']) if cfg['views'] else views.BYOL

  # ----- Parameters -----
  def init(self, rng, images):
    """`{'params': ...}`, like a flax module's init, so the trainer treats it as one."""
    k_enc, k_proj, k_pred, k_cls = jax.random.split(rng, 4)
    encoder = self.encoder.init(k_enc, images)['params']
    feats = self.encoder.apply({'params': encoder}, images)[1]['pre_logits']
    projector = self.projector.init(k_proj, feats)['params']
    z = self.projector.apply({'params': projector}, feats)
    return {'params': {'encoder': encoder, 'projector': projector,
                       'predictor': self.predictor.init(k_pred, z)['params'],
                       'classifier': self.classifier.init(k_cls, feats)['params']}}

  @staticmethod
  def target_of(params):
    """The target network starts as a copy of the online encoder and projector."""
    return {'encoder': params['encoder'], 'projector': params['projector']}

  # The target's networks as they stand in `state['target']`, and back: BYOL keeps them there
  # as they are (MoCLR overrides both).
  def target_nets(self, target):
    return target

  def as_target(self, nets):
    return nets

  def initial_target(self, params):
    """`state['target']` at the start: the online encoder and projector, copied."""
    return self.as_target(self.target_of(params))

  # ----- Forward passes (also the hooks ReLA and the evaluators use) -----
  def features(self, params, images, *, train=False, rng=None):
    rngs = {'dropout': rng} if rng is not None else {}
    _, out = self.encoder.apply({'params': params['encoder']}, images, train=train, rngs=rngs)
    return out['pre_logits']

  def classify(self, params, feats):
    return self.classifier.apply({'params': params['classifier']}, feats)

  def predict(self, params, images):
    """Logits of the online classifier (monitoring; report linear-probe accuracy)."""
    return self.classify(params, self.features(params, images))

  def project(self, params, images, **kw):
    return self.projector.apply({'params': params['projector']},
                                self.features(params, images, **kw))

  def after_update(self, state, step, total_steps):
    """The target EMA step, after every online update (ReLA's phase included)."""
    m = momentum_at(step, total_steps, base=self.cfg['momentum'], end=self.cfg['momentum_end'],
                    schedule=self.cfg['momentum_schedule'])
    online = self.target_of(state['learner']['params'])
    target = ema(self.target_nets(state['target']), online, m)
    return {**state, 'target': self.as_target(target)}, m

  # ----- The step -----
  @staticmethod
  def head(x):
    """What the online predictions and the target projections go through before the loss
    (MoCLR: unit norm); BYOL's `regression_loss` normalises its inputs itself."""
    return x

  def objective(self, p, t):
    """The self-supervised loss (a scalar) of the online predictions p = (p1, p2) of the two
    views against the target projections t = (t1, t2), both through `head`."""
    raise NotImplementedError

  def classifier_loss(self, logits, labels):
    """(cross-entropy, accuracy) of the online classifier, averaged over the batch."""
    raise NotImplementedError

  def loss(self, params, target, v1, v2, labels, rng):
    rng1, rng2 = jax.random.split(rng)
    feats1 = self.features(params, v1, train=True, rng=rng1)
    z1 = self.projector.apply({'params': params['projector']}, feats1)
    z2 = self.project(params, v2, train=True, rng=rng2)
    p1 = self.head(self.predictor.apply({'params': params['predictor']}, z1))
    p2 = self.head(self.predictor.apply({'params': params['predictor']}, z2))
    nets = self.target_nets(target)
    t1 = jax.lax.stop_gradient(self.head(self.project(nets, v1)))
    t2 = jax.lax.stop_gradient(self.head(self.project(nets, v2)))
    objective = self.objective((p1, p2), (t1, t2))
    logits = self.classify(params, jax.lax.stop_gradient(feats1))
    xent, accuracy = self.classifier_loss(logits, labels)
    return objective + xent, {self.LOSS: objective, 'classifier_loss': xent,
                              'classifier_accuracy': accuracy}

  def make_step(self, tx, schedule, train_rng, *, total_steps: int):
    """The step `(state, frozen, batch, step) -> (state, measurements)`."""

    def step_fn(state, frozen, batch, step):
      del frozen  # Neither BYOL nor MoCLR uses a frozen model.
      rng_views, rng_model = jax.random.split(jax.random.fold_in(train_rng, step))
      v1, v2 = views.two_views(rng_views, batch['image'], self.view_cfg)
      learner = state['learner']
      (_, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(
          learner['params'], state['target'], v1, v2, batch['label'], rng_model)
      updates, opt = tx.update(grads, learner['opt'], learner['params'])
      params = optax.apply_updates(learner['params'], updates)
      new_state, m = self.after_update({**state, 'learner': {'params': params, 'opt': opt}},
                                       step, total_steps)
      measurements = {'train/loss': aux[self.LOSS], 'train/grad_norm': optax.global_norm(grads),
                      'train/lr': schedule(step - 1), 'train/momentum': m,
                      'train/classifier_loss': aux['classifier_loss'],
                      'train/classifier_accuracy': aux['classifier_accuracy']}
      return new_state, measurements

    return step_fn


class Byol(TwoViewMomentum):
  """The BYOL objective around an encoder: init, forward passes and the jitted step."""
  NAME, DEFAULTS, MLP, LOSS = 'byol', DEFAULTS, MLP, 'byol'
  # Parameters that only the BYOL loss trains; ReLA's phase leaves them exactly as they are.
  RELA_FROZEN = ('projector', 'predictor')

  def objective(self, p, t):
    (p1, p2), (t1, t2) = p, t
    return jnp.mean(0.5 * (regression_loss(p1, t2) + regression_loss(p2, t1)))

  def classifier_loss(self, logits, labels):
    xent = jnp.mean(losses.softmax_xent(logits, labels, num_classes=self.num_classes))
    return xent, jnp.mean(jnp.argmax(logits, -1) == labels)


def build(ctx: base.Context) -> base.Built:
  if ctx.config.get('selection'):
    raise ValueError('config.selection works with the supervised and contrastive objectives, '
                     'not with BYOL.')
  model = Byol(roles.build_role_model(ctx.config, 'learner', None), ctx.num_classes,
               ctx.config.get('byol'))
  tx, schedule = optim.make_optimizer(ctx.config.optax, ctx.total_steps)

  def init(rng):
    key, = jax.random.split(rng, 1)  # One trained role, as every method splits its keys.
    params = model.init(key, jnp.zeros(ctx.image_shape(), jnp.float32))['params']
    return {'learner': {'params': params, 'opt': tx.init(params)},
            'target': model.initial_target(params)}

  step = model.make_step(tx, schedule, ctx.train_rng, total_steps=ctx.total_steps)
  return base.Built(init=init, phases=[base.Phase('train', step, base.all_learner_train)],
                    super_batch_size=ctx.batch_size,
                    predict_fns={'predict': model.predict, 'features': model.features},
                    tx=tx, schedule=schedule, rela_hooks=model)
