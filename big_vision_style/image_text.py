"""The per-model pieces of a contrastive image-text step (the two-tower analogue of steps.py):
embeddings, the mean SigLIP / CLIP loss of a batch, one optimiser update, and the same update
with its forward reused from the scoring pass (selection/forward_reuse.py).

methods/contrastive.py composes them into the ActiveCLIP / JEST / Flexi-JEST step and compiles
each alone as well, so that XLA's cost analysis can attribute FLOPs by role.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from big_vision_style import contrastive
from big_vision_style import selection
from big_vision_style.selection import forward_reuse
from big_vision_style.selection import jest


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
  rows = selection.gather({'image': scored.image, 'text': scored.text}, indices, mesh,
                          window=mesh.shape['data'] - 1)  # No cond: see forward_reuse.py.
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
