"""MoCLR (Tian, Henaff, van den Oord, 2021), the base objective of Divide and Contrast, as a
method of the trainer: `config.objective = 'moclr'`.

SimCLR's InfoNCE with BYOL's momentum target. Networks: the online encoder (any registered
model, built without a head: its pooled `pre_logits` are the representation), a projector MLP
and a predictor MLP; the target network is an exponential moving average (EMA) of the online
encoder and projector. An online linear classifier on the stop-gradient representation tracks
linear separability while training (monitoring only; it never shapes the features, and
examples with label < 0, distractors that belong to no class, are left out of it).

One step, on a batch of un-augmented images (the views are made on device, `views.py`):
  v1, v2 = two augmented views
  q_i = normalise(predictor(projector(encoder(v_i))))     online, with gradients
  k_i = normalise(projector_t(encoder_t(v_i)))            target, no gradients
  logits_12 = q_1 @ k_2^T / temperature                    [B, B] over the GLOBAL batch
  loss = 1/2 [InfoNCE(logits_12) + InfoNCE(logits_21)],
         InfoNCE(l) = mean_i (logsumexp_j l[i, j] - l[i, i])
  online <- AdamW step;  target <- m * target + (1 - m) * online (encoder and projector)
The positives of example i are its own other view's key; the negatives are the other examples'
keys of the whole global batch. Everything else in the step is per example, so the only
cross-device traffic of the loss is the keys' all-gather that GSPMD inserts for the [B, B]
product (B x d floats): the loss is the same whatever the number of devices. The momentum
rises from `momentum` to `momentum_end` on a cosine schedule (`momentum_schedule='constant'`
keeps it), as in BYOL (methods/byol.py, whose MLP, EMA and schedule this reuses).

`embed` (a prediction function) is the projector's hidden layer, which Divide and Contrast
clusters (methods/dnc.py). `config.moclr.init_from` (a finished MoCLR run's workdir) starts the
online and target networks from that run's (DnC's experts initialised from the base model);
the optimiser state starts fresh.

State (plain dict): `{'learner': {'params': {encoder, projector, predictor, classifier},
'opt'}, 'target': {'params': {encoder, projector}}}` (the target under 'params', like a role,
so that `checkpointing.load_trained_params(workdir, role='target')` reads it). All of the
step's FLOPs count as learner_train.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from big_vision_style import checkpointing
from big_vision_style import losses
from big_vision_style import optim
from big_vision_style import roles
from big_vision_style import views
from big_vision_style.methods import base
from big_vision_style.methods import byol

DEFAULTS = dict(projector_hidden=256, projector_dim=64, predictor_hidden=256, temperature=0.1,
                momentum=0.99, momentum_end=1.0, momentum_schedule='cosine', views=None,
                init_from=None)


class MLP(nn.Module):
  """Dense -> LayerNorm -> ReLU -> Dense, whose hidden activation DnC clusters (`hidden`)."""
  hidden: int
  out: int

  def setup(self):
    self.dense1, self.norm, self.dense2 = nn.Dense(self.hidden), nn.LayerNorm(), nn.Dense(self.out)

  def hidden_layer(self, x):
    return nn.relu(self.norm(self.dense1(x)))

  def __call__(self, x):
    return self.dense2(self.hidden_layer(x))


def normalise(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def info_nce(q, k, temperature: float):
  """Per-example InfoNCE of queries q [B, d] against keys k [B, d] (both unit norm): example
  i's positive is k[i], its negatives every other row of k. Returns [B]."""
  logits = (q @ k.T) / temperature
  return jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits)


class Moclr:
  """The MoCLR objective around an encoder: init, forward passes and the jitted step."""

  def __init__(self, encoder, num_classes: int, cfg=None):
    cfg = {**DEFAULTS, **dict(cfg or {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
      raise ValueError(f'Unknown config.moclr key(s) {sorted(unknown)}: expected '
                       f'{sorted(DEFAULTS)}.')
    if cfg['momentum_schedule'] not in ('cosine', 'constant'):
      raise ValueError(f'config.moclr.momentum_schedule={cfg["momentum_schedule"]!r}: expected '
                       'cosine or constant.')
    if not 0.0 <= cfg['momentum'] <= cfg['momentum_end'] <= 1.0:
      raise ValueError(f'config.moclr: need 0 <= momentum ({cfg["momentum"]}) <= momentum_end '
                       f'({cfg["momentum_end"]}) <= 1.')
    if not cfg['temperature'] > 0:
      raise ValueError(f'config.moclr.temperature={cfg["temperature"]} must be > 0.')
    self.cfg = cfg
    self.encoder = encoder
    self.num_classes = num_classes
    self.projector = MLP(cfg['projector_hidden'], cfg['projector_dim'])
    self.predictor = MLP(cfg['predictor_hidden'], cfg['projector_dim'])
    self.classifier = nn.Dense(num_classes)
    self.view_cfg = views.ViewConfig.make(cfg['views']) if cfg['views'] else views.BYOL

  # ----- Parameters -----
  def init(self, rng, images):
    k_enc, k_proj, k_pred, k_cls = jax.random.split(rng, 4)
    encoder = self.encoder.init(k_enc, images)['params']
    feats = self.encoder.apply({'params': encoder}, images)[1]['pre_logits']
    projector = self.projector.init(k_proj, feats)['params']
    z = self.projector.apply({'params': projector}, feats)
    return {'params': {'encoder': encoder, 'projector': projector,
                       'predictor': self.predictor.init(k_pred, z)['params'],
                       'classifier': self.classifier.init(k_cls, feats)['params']}}

  target_of = staticmethod(byol.Byol.target_of)

  # ----- Forward passes (also the prediction functions evaluators and DnC read) -----
  def features(self, params, images, *, train=False, rng=None):
    rngs = {'dropout': rng} if rng is not None else {}
    _, out = self.encoder.apply({'params': params['encoder']}, images, train=train, rngs=rngs)
    return out['pre_logits']

  def project(self, params, images, **kw):
    return self.projector.apply({'params': params['projector']},
                                self.features(params, images, **kw))

  def embed(self, params, images):
    """The projector's hidden layer: what DnC clusters (the paper's choice)."""
    return self.projector.apply({'params': params['projector']}, self.features(params, images),
                                method=MLP.hidden_layer)

  def predict(self, params, images):
    """Logits of the online classifier (monitoring; report linear-probe accuracy)."""
    return self.classifier.apply({'params': params['classifier']}, self.features(params, images))

  # ----- The step -----
  def loss(self, params, target, v1, v2, labels, rng):
    rng1, rng2 = jax.random.split(rng)
    feats1 = self.features(params, v1, train=True, rng=rng1)
    z1 = self.projector.apply({'params': params['projector']}, feats1)
    z2 = self.project(params, v2, train=True, rng=rng2)
    q1 = normalise(self.predictor.apply({'params': params['predictor']}, z1))
    q2 = normalise(self.predictor.apply({'params': params['predictor']}, z2))
    k1 = jax.lax.stop_gradient(normalise(self.project(target['params'], v1)))
    k2 = jax.lax.stop_gradient(normalise(self.project(target['params'], v2)))
    t = self.cfg['temperature']
    nce = jnp.mean(0.5 * (info_nce(q1, k2, t) + info_nce(q2, k1, t)))
    logits = self.classifier.apply({'params': params['classifier']},
                                   jax.lax.stop_gradient(feats1))
    labelled = (labels >= 0).astype(jnp.float32)  # Distractors have no class.
    xent = losses.softmax_xent(logits, jnp.maximum(labels, 0), num_classes=self.num_classes)
    count = jnp.maximum(labelled.sum(), 1.0)
    xent = jnp.sum(labelled * xent) / count
    accuracy = jnp.sum(labelled * (jnp.argmax(logits, -1) == labels)) / count
    return nce + xent, {'nce': nce, 'classifier_loss': xent, 'classifier_accuracy': accuracy}

  def make_step(self, tx, schedule, train_rng, *, total_steps: int):
    """The step `(state, frozen, batch, step) -> (state, measurements)`."""

    def step_fn(state, frozen, batch, step):
      del frozen  # MoCLR uses no frozen model.
      rng_views, rng_model = jax.random.split(jax.random.fold_in(train_rng, step))
      v1, v2 = views.two_views(rng_views, batch['image'], self.view_cfg)
      learner = state['learner']
      (_, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(
          learner['params'], state['target'], v1, v2, batch['label'], rng_model)
      updates, opt = tx.update(grads, learner['opt'], learner['params'])
      params = optax.apply_updates(learner['params'], updates)
      m = byol.momentum_at(step, total_steps, base=self.cfg['momentum'],
                           end=self.cfg['momentum_end'], schedule=self.cfg['momentum_schedule'])
      target = {'params': byol.ema(state['target']['params'], self.target_of(params), m)}
      measurements = {'train/loss': aux['nce'], 'train/grad_norm': optax.global_norm(grads),
                      'train/lr': schedule(step - 1), 'train/momentum': m,
                      'train/classifier_loss': aux['classifier_loss'],
                      'train/classifier_accuracy': aux['classifier_accuracy']}
      return {**state, 'learner': {'params': params, 'opt': opt}, 'target': target}, measurements

    return step_fn


def make_model(config, num_classes):
  return Moclr(roles.build_role_model(config, 'learner', None), num_classes, config.get('moclr'))


def load_networks(workdir: str, sharding):
  """(online params, {'params': target}) of a finished MoCLR run, replicated with `sharding`."""
  params, _ = checkpointing.load_trained_params(workdir, sharding=sharding)
  target, _ = checkpointing.load_trained_params(workdir, role='target', sharding=sharding)
  return params, {'params': target}


def build(ctx: base.Context) -> base.Built:
  if ctx.config.get('selection'):
    raise ValueError('config.selection works with the supervised and contrastive objectives, '
                     'not with MoCLR.')
  model = make_model(ctx.config, ctx.num_classes)
  tx, schedule = optim.make_optimizer(ctx.config.optax, ctx.total_steps)
  init_from = model.cfg['init_from']
  start = None
  if init_from and not ctx.abstract:
    start = load_networks(init_from, ctx.replicated)

  def init(rng):
    key, = jax.random.split(rng, 1)  # One trained role, as every method splits its keys.
    params = model.init(key, jnp.zeros(ctx.image_shape(), jnp.float32))['params']
    target = {'params': Moclr.target_of(params)}
    if start is not None:  # Initialised from a trained run (DnC's experts, init='base').
      params, target = start
    return {'learner': {'params': params, 'opt': tx.init(params)}, 'target': target}

  step = model.make_step(tx, schedule, ctx.train_rng, total_steps=ctx.total_steps)
  return base.Built(init=init, phases=[base.Phase('train', step, base.all_learner_train)],
                    super_batch_size=ctx.batch_size,
                    predict_fns={'predict': model.predict, 'features': model.features,
                                 'embed': model.embed},
                    tx=tx, schedule=schedule, models={'learner': model}, txs={'learner': tx})
