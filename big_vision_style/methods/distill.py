"""Divide and Contrast's distillation (stage 4) as a method: `config.objective = 'distill'`.

A student (the base model's architecture: `config.model_name` / `config.model`) learns to
predict the representation of every teacher (the base MoCLR model, then one expert per
cluster) through one regression head per teacher:

  v = one augmented view of the batch (on device, views.py); teachers and student see it
  t_j = normalise(teacher_j(v))                           frozen, no gradients
  l_j(x) = 0.5 * || head_j(student(v)) - t_j ||^2          per example
  loss = sum_j  sum_x w_j(x) l_j(x) / max(sum_x w_j(x), 1)
with w_base = 1 for every example and, for expert j of cluster c_j,
  expert_heads='own_cluster' (default): w_j(x) = [cluster(x) == c_j], the head learns its
      expert only where the expert was trained (elsewhere the expert is out of distribution and
      its output says little); this is our reading of the paper, which describes distilling
      each expert on its own data;
  expert_heads='all': w_j(x) = 1, every head on every example.
The cluster of each example comes from the clustering stage's id table
(`config.distill.cluster_table`, attached by id in `prepare`, its pool checked).

What a teacher outputs (`config.distill.target`): 'projection' (default: the online
projector's output, the space MoCLR's loss shapes), 'embed' (the projector's hidden layer, the
space DnC clusters) or 'features' (the encoder's pooled output). Heads are MLPs (Dense ->
LayerNorm -> ReLU -> Dense, `head_hidden`; 0 makes them linear).

Teachers are read from the finished MoCLR runs' checkpoints (`config.distill.teachers`, their
workdirs, base first), stacked along a leading axis, and live in `Built.frozen`: the loop never
donates or trains them, and the step runs them with one vmap (one forward program for any number
of teachers). Their networks are described by `config.moclr` (projector sizes) and the
student's `config.model`. The student's online classifier on stop-gradient features is for
monitoring, as in MoCLR; the distilled representation is evaluated with the linear probe.

FLOPs: the whole step (teacher forwards included) counts as learner_train; the teachers'
training is counted in their own stages (the DnC pipeline sums them).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from big_vision_style import checkpointing
from big_vision_style import id_table
from big_vision_style import losses
from big_vision_style import optim
from big_vision_style import roles
from big_vision_style import views
from big_vision_style.datasets import pools
from big_vision_style.methods import base
from big_vision_style.methods import moclr

DEFAULTS = dict(teachers=(), cluster_table=None, expert_heads='own_cluster', target='projection',
                head_hidden=256, views=None)
TARGETS = ('projection', 'embed', 'features')
EXPERT_HEADS = ('own_cluster', 'all')
KEY = 'cluster'  # The batch field with each example's cluster.


def settings(config) -> dict:
  cfg = {**DEFAULTS, **dict(config.get('distill') or {})}
  unknown = set(cfg) - set(DEFAULTS)
  if unknown:
    raise ValueError(f'Unknown config.distill key(s) {sorted(unknown)}: expected '
                     f'{sorted(DEFAULTS)}.')
  if not cfg['teachers']:
    raise ValueError('config.distill.teachers is empty: list the workdirs of the finished '
                     'MoCLR runs to distil (the base model first, then one expert per cluster).')
  if cfg['target'] not in TARGETS:
    raise ValueError(f'config.distill.target={cfg["target"]!r}: expected one of {TARGETS}.')
  if cfg['expert_heads'] not in EXPERT_HEADS:
    raise ValueError(f'config.distill.expert_heads={cfg["expert_heads"]!r}: expected one of '
                     f'{EXPERT_HEADS}.')
  if reads_clusters(cfg) and not cfg['cluster_table']:
    raise ValueError("config.distill.expert_heads='own_cluster' needs config.distill."
                     'cluster_table (the clustering stage\'s id table).')
  cfg['teachers'] = tuple(cfg['teachers'])
  return cfg


def reads_clusters(cfg) -> bool:
  """Whether the step reads each example's cluster (batch[KEY]): expert heads that train on
  their own cluster, when there are experts. `cfg`: `settings`' or the raw config.distill."""
  return cfg['expert_heads'] == 'own_cluster' and len(cfg['teachers']) > 1


def prepare(config, source):
  """Attaches each example's cluster (by id) when expert heads train on their own cluster."""
  cfg = settings(config)
  if not reads_clusters(cfg):
    return source, {}
  table = id_table.load(cfg['cluster_table'], what=pools.CLUSTER_TABLE_WHAT,
                        how=pools.CLUSTER_TABLE_HOW)
  recorded, current = table.meta.get('data'), pools.pool_data_config(config.data)
  if recorded is not None and recorded != current:
    raise ValueError(f'The {pools.CLUSTER_TABLE_WHAT} {cfg["cluster_table"]} was computed for '
                     f'another pool ({recorded} in the table, {current} here); '
                     f'{pools.CLUSTER_TABLE_HOW}.')
  return id_table.with_columns(source, {KEY: table}), {}


class Head(nn.Module):
  hidden: int
  out: int

  @nn.compact
  def __call__(self, x):
    if self.hidden:
      x = nn.relu(nn.LayerNorm()(nn.Dense(self.hidden)(x)))
    return nn.Dense(self.out)(x)


class Distill:
  """Student, heads and the frozen teachers' forward."""

  def __init__(self, config, num_classes: int):
    self.cfg = settings(config)
    self.num_teachers = len(self.cfg['teachers'])
    self.teacher = moclr.make_model(config, num_classes)  # The teachers' architecture.
    self.encoder = roles.build_role_model(config, 'learner', None)
    self.num_classes = num_classes
    self.classifier = nn.Dense(num_classes)
    self.view_cfg = views.ViewConfig.make(self.cfg['views']) if self.cfg['views'] else views.BYOL

  def teacher_output(self, params, images):
    """One teacher's (unnormalised) target for `images`."""
    target = self.cfg['target']
    if target == 'features':
      return self.teacher.features(params, images)
    if target == 'embed':
      return self.teacher.embed(params, images)
    return self.teacher.project(params, images)

  def targets(self, teachers, images):
    """[T, N, d] normalised targets of the stacked teachers."""
    out = jax.vmap(self.teacher_output, in_axes=(0, None))(teachers, images)
    return jax.lax.stop_gradient(moclr.normalise(out))

  def init(self, rng, images, target_dim: int):
    k_enc, k_head, k_cls = jax.random.split(rng, 3)
    encoder = self.encoder.init(k_enc, images)['params']
    feats = self.encoder.apply({'params': encoder}, images)[1]['pre_logits']
    head = Head(self.cfg['head_hidden'], target_dim)
    heads = jax.vmap(lambda k: head.init(k, feats)['params'])(
        jax.random.split(k_head, self.num_teachers))
    return {'encoder': encoder, 'heads': heads,
            'classifier': self.classifier.init(k_cls, feats)['params']}

  def features(self, params, images, *, train=False, rng=None):
    rngs = {'dropout': rng} if rng is not None else {}
    _, out = self.encoder.apply({'params': params['encoder']}, images, train=train, rngs=rngs)
    return out['pre_logits']

  def predict(self, params, images):
    return self.classifier.apply({'params': params['classifier']}, self.features(params, images))

  def head_outputs(self, params, feats, target_dim: int):
    head = Head(self.cfg['head_hidden'], target_dim)
    return jax.vmap(lambda p: head.apply({'params': p}, feats))(params['heads'])  # [T, N, d]

  def weights(self, batch, n: int):
    """[T, N]: which examples each head learns from (module doc)."""
    if not reads_clusters(self.cfg):  # One teacher, or every head on every example.
      return jnp.ones((self.num_teachers, n), jnp.float32)
    ones = jnp.ones((1, n), jnp.float32)
    clusters = batch[KEY].astype(jnp.int32)
    experts = (clusters[None, :] == jnp.arange(self.num_teachers - 1)[:, None])
    return jnp.concatenate([ones, experts.astype(jnp.float32)])


def distill_loss(predictions, targets, weights):
  """(total, per-head [T]) of 0.5 ||prediction - target||^2, each head averaged over the
  examples it learns from (weights [T, N])."""
  per_example = 0.5 * jnp.sum((predictions - targets) ** 2, axis=-1)  # [T, N]
  per_head = jnp.sum(weights * per_example, axis=1) / jnp.maximum(weights.sum(1), 1.0)
  return jnp.sum(per_head), per_head


def load_teachers(workdirs, sharding):
  """The teachers' online parameters, stacked along a new leading axis, replicated."""
  trees = [checkpointing.load_trained_params(w, sharding=sharding)[0] for w in workdirs]
  shapes = [jax.tree.map(np.shape, t) for t in trees]
  if any(s != shapes[0] for s in shapes):
    raise ValueError(f'The teachers {list(workdirs)} have different architectures; DnC\'s base '
                     'model and experts must share one (config.model and config.moclr).')
  stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(jax.device_get(x)) for x in xs]),
                         *trees)
  return jax.device_put(stacked, sharding)


def build(ctx: base.Context) -> base.Built:
  model = Distill(ctx.config, ctx.num_classes)
  tx, schedule = optim.make_optimizer(ctx.config.optax, ctx.total_steps)
  images0 = jnp.zeros(ctx.image_shape(), jnp.float32)
  one_teacher = jax.eval_shape(lambda: model.teacher.init(jax.random.key(0), images0)['params'])
  if ctx.abstract:
    teachers = jax.tree.map(lambda s: jax.ShapeDtypeStruct((model.num_teachers,) + s.shape,
                                                           s.dtype, sharding=ctx.replicated),
                            one_teacher)
  else:
    teachers = load_teachers(model.cfg['teachers'], ctx.replicated)
  target_dim = int(jax.eval_shape(
      lambda p: model.teacher_output(p, images0), one_teacher).shape[-1])

  def init(rng):
    key, = jax.random.split(rng, 1)
    params = model.init(key, images0, target_dim)
    return {'learner': {'params': params, 'opt': tx.init(params)}}

  def loss_fn(params, teachers, batch, rng):
    rng_view, rng_model = jax.random.split(rng)
    v = views.augment(rng_view, batch['image'], model.view_cfg)
    targets = model.targets(teachers, v)
    feats = model.features(params, v, train=True, rng=rng_model)
    total, per_head = distill_loss(model.head_outputs(params, feats, target_dim), targets,
                                   model.weights(batch, v.shape[0]))
    logits = model.classifier.apply({'params': params['classifier']},
                                    jax.lax.stop_gradient(feats))
    labels = batch['label']
    labelled = (labels >= 0).astype(jnp.float32)
    xent = losses.softmax_xent(logits, jnp.maximum(labels, 0), num_classes=ctx.num_classes)
    xent = jnp.sum(labelled * xent) / jnp.maximum(labelled.sum(), 1.0)
    return total + xent, {'distill': total, 'per_head': per_head, 'classifier_loss': xent}

  def step(state, frozen, batch, step):
    rng = jax.random.fold_in(ctx.train_rng, step)
    learner = state['learner']
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        learner['params'], frozen['teachers'], batch, rng)
    updates, opt = tx.update(grads, learner['opt'], learner['params'])
    params = optax.apply_updates(learner['params'], updates)
    measurements = {'train/loss': aux['distill'], 'train/grad_norm': optax.global_norm(grads),
                    'train/lr': schedule(step - 1),
                    'train/classifier_loss': aux['classifier_loss'],
                    'train/loss_base_head': aux['per_head'][0]}
    return {**state, 'learner': {'params': params, 'opt': opt}}, measurements

  return base.Built(init=init, phases=[base.Phase('train', step, base.all_learner_train)],
                    super_batch_size=ctx.batch_size, frozen={'teachers': teachers},
                    predict_fns={'predict': model.predict, 'features': model.features},
                    tx=tx, schedule=schedule, models={'learner': model}, txs={'learner': tx})
