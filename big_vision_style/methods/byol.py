"""BYOL (Grill et al., 2020) as a method of the trainer: `config.objective = 'byol'`.

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


class Byol:
  """The BYOL objective around an encoder: init, forward passes and the jitted step."""
  # Parameters that only the BYOL loss trains; ReLA's phase leaves them exactly as they are.
  RELA_FROZEN = ('projector', 'predictor')

  def __init__(self, encoder, num_classes: int, cfg=None):
    cfg = {**DEFAULTS, **dict(cfg or {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
      raise ValueError(f'Unknown config.byol key(s) {sorted(unknown)}: expected {sorted(DEFAULTS)}.')
    if cfg['momentum_schedule'] not in ('cosine', 'constant'):
      raise ValueError(f'config.byol.momentum_schedule={cfg["momentum_schedule"]!r}: expected '
                       'cosine or constant.')
    if not 0.0 <= cfg['momentum'] <= cfg['momentum_end'] <= 1.0:
      raise ValueError(f'config.byol: need 0 <= momentum ({cfg["momentum"]}) <= momentum_end '
                       f'({cfg["momentum_end"]}) <= 1.')
    self.cfg = cfg
    self.encoder = encoder
    self.num_classes = num_classes
    self.projector = MLP(cfg['projector_hidden'], cfg['projector_dim'])
    self.predictor = MLP(cfg['predictor_hidden'], cfg['projector_dim'])
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

  def _project(self, params, images, **kw):
    return self.projector.apply({'params': params['projector']},
                                self.features(params, images, **kw))

  def after_update(self, state, step, total_steps):
    """The target EMA step, after every online update (ReLA's phase included)."""
    m = momentum_at(step, total_steps, base=self.cfg['momentum'], end=self.cfg['momentum_end'],
                    schedule=self.cfg['momentum_schedule'])
    online = self.target_of(state['learner']['params'])
    return {**state, 'target': ema(state['target'], online, m)}, m

  # ----- The step -----
  def loss(self, params, target, v1, v2, labels, rng):
    rng1, rng2 = jax.random.split(rng)
    feats1 = self.features(params, v1, train=True, rng=rng1)
    z1 = self.projector.apply({'params': params['projector']}, feats1)
    z2 = self._project(params, v2, train=True, rng=rng2)
    p1 = self.predictor.apply({'params': params['predictor']}, z1)
    p2 = self.predictor.apply({'params': params['predictor']}, z2)
    t1 = jax.lax.stop_gradient(self._project(target, v1))
    t2 = jax.lax.stop_gradient(self._project(target, v2))
    byol = jnp.mean(0.5 * (regression_loss(p1, t2) + regression_loss(p2, t1)))
    logits = self.classify(params, jax.lax.stop_gradient(feats1))
    xent = jnp.mean(losses.softmax_xent(logits, labels, num_classes=self.num_classes))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return byol + xent, {'byol': byol, 'classifier_loss': xent, 'classifier_accuracy': accuracy}

  def make_step(self, tx, schedule, train_rng, *, total_steps: int):
    """The step `(state, frozen, batch, step) -> (state, measurements)`."""

    def step_fn(state, frozen, batch, step):
      del frozen  # BYOL uses no frozen model.
      rng_views, rng_model = jax.random.split(jax.random.fold_in(train_rng, step))
      v1, v2 = views.two_views(rng_views, batch['image'], self.view_cfg)
      learner = state['learner']
      (_, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(
          learner['params'], state['target'], v1, v2, batch['label'], rng_model)
      updates, opt = tx.update(grads, learner['opt'], learner['params'])
      params = optax.apply_updates(learner['params'], updates)
      new_state, m = self.after_update({**state, 'learner': {'params': params, 'opt': opt}},
                                       step, total_steps)
      measurements = {'train/loss': aux['byol'], 'train/grad_norm': optax.global_norm(grads),
                      'train/lr': schedule(step - 1), 'train/momentum': m,
                      'train/classifier_loss': aux['classifier_loss'],
                      'train/classifier_accuracy': aux['classifier_accuracy']}
      return new_state, measurements

    return step_fn


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
            'target': Byol.target_of(params)}

  step = model.make_step(tx, schedule, ctx.train_rng, total_steps=ctx.total_steps)
  return base.Built(init=init, phases=[base.Phase('train', step, base.all_learner_train)],
                    super_batch_size=ctx.batch_size,
                    predict_fns={'predict': model.predict, 'features': model.features},
                    tx=tx, schedule=schedule, rela_hooks=model)
