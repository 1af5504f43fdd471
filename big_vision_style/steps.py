"""The per-model pieces of a train step: per-example loss (scoring) and one optimiser update.

The trainer composes them by role (learner, online actor, reference) inside one jitted step,
and compiles each alone as well, so that XLA's cost analysis can attribute FLOPs by role.
"""
from __future__ import annotations

import jax
import optax

from big_vision_style import losses


def per_example_loss(model, params, batch, *, num_classes: int, label_smoothing: float = 0.0,
                     train: bool = False, rng=None):
  """Cross-entropy of every example of `batch` under `model`: [N]."""
  rngs = {'dropout': rng} if rng is not None else {}
  logits, _ = model.apply({'params': params}, batch['image'], train=train, rngs=rngs)
  return losses.softmax_xent(logits, batch['label'], num_classes=num_classes,
                             label_smoothing=label_smoothing)


def sgd_step(model, tx, role_state, batch, rng, *, num_classes: int,
             label_smoothing: float = 0.0):
  """One optimiser update of `role_state = {'params', 'opt'}` on `batch` (mean loss)."""

  def loss_fn(params):
    return per_example_loss(model, params, batch, num_classes=num_classes,
                            label_smoothing=label_smoothing, train=True, rng=rng).mean()

  loss, grads = jax.value_and_grad(loss_fn)(role_state['params'])
  updates, opt = tx.update(grads, role_state['opt'], role_state['params'])
  params = optax.apply_updates(role_state['params'], updates)
  return {'params': params, 'opt': opt}, {'loss': loss, 'grad_norm': optax.global_norm(grads)}
