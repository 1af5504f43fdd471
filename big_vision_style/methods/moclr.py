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
keeps it), as in BYOL: all but the loss, the MLP, the defaults and where the target stands in
the state is BYOL's (`byol.TwoViewMomentum`: config checks, networks, init, EMA and step).

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

from big_vision_style import checkpointing
from big_vision_style import losses
from big_vision_style import optim
from big_vision_style import roles
from big_vision_style.methods import base
from big_vision_style.methods import byol

DEFAULTS = dict(projector_hidden=256, projector_dim=64, predictor_hidden=256, temperature=0.1,
                momentum=0.99, momentum_end=1.0, momentum_schedule='cosine', views=None,
                init_from=None)


class MLP(nn.Module):
  """Dense -> LayerNorm -> ReLU -> Dense, whose hidden activation DnC clusters (`hidden_layer`).

  BYOL's layers, but in `setup` with named submodules (dense1, norm, dense2), so that
  `hidden_layer` can be applied on its own; MoCLR's checkpoints and initialisation read these
  names, so it does not share byol.MLP (Dense_0, LayerNorm_0, Dense_1)."""
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


class Moclr(byol.TwoViewMomentum):
  """The MoCLR objective around an encoder: init, forward passes and the jitted step (BYOL's
  skeleton, byol.TwoViewMomentum, with InfoNCE as the loss)."""
  NAME, DEFAULTS, MLP, LOSS = 'moclr', DEFAULTS, MLP, 'nce'

  def __init__(self, encoder, num_classes: int, cfg=None):
    super().__init__(encoder, num_classes, cfg)
    if not self.cfg['temperature'] > 0:
      raise ValueError(f'config.moclr.temperature={self.cfg["temperature"]} must be > 0.')

  # The target's networks stand under 'params' in `state['target']`, like a role's, so that
  # `checkpointing.load_trained_params(workdir, role='target')` reads them (DnC's init_from).
  def target_nets(self, target):
    return target['params']

  def as_target(self, nets):
    return {'params': nets}

  # ----- Forward passes beyond BYOL's (also the prediction functions DnC reads) -----
  def embed(self, params, images):
    """The projector's hidden layer: what DnC clusters (the paper's choice)."""
    return self.projector.apply({'params': params['projector']}, self.features(params, images),
                                method=MLP.hidden_layer)

  # ----- The step -----
  # InfoNCE compares unit vectors: the online predictions and target projections are
  # normalised as they are made (queries q_i, keys k_i).
  head = staticmethod(normalise)

  def objective(self, p, t):
    (q1, q2), (k1, k2) = p, t
    temperature = self.cfg['temperature']
    return jnp.mean(0.5 * (info_nce(q1, k2, temperature) + info_nce(q2, k1, temperature)))

  def classifier_loss(self, logits, labels):
    """Over the labelled examples only: distractors (label < 0) have no class."""
    labelled = (labels >= 0).astype(jnp.float32)
    xent = losses.softmax_xent(logits, jnp.maximum(labels, 0), num_classes=self.num_classes)
    count = jnp.maximum(labelled.sum(), 1.0)
    xent = jnp.sum(labelled * xent) / count
    return xent, jnp.sum(labelled * (jnp.argmax(logits, -1) == labels)) / count


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
    target = model.initial_target(params)
    if start is not None:  # Initialised from a trained run (DnC's experts, init='base').
      params, target = start
    return {'learner': {'params': params, 'opt': tx.init(params)}, 'target': target}

  step = model.make_step(tx, schedule, ctx.train_rng, total_steps=ctx.total_steps)
  return base.Built(init=init, phases=[base.Phase('train', step, base.all_learner_train)],
                    super_batch_size=ctx.batch_size,
                    predict_fns={'predict': model.predict, 'features': model.features,
                                 'embed': model.embed},
                    tx=tx, schedule=schedule, models={'learner': model}, txs={'learner': tx})
