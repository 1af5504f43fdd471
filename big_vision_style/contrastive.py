"""Contrastive image-text losses on L2-normalised embeddings: SigLIP (sigmoid) and CLIP (softmax).

Per-example forms return one loss per image-text pair i of the batch (selection methods need
them per example); the batch forms are their means, which are the papers' losses:
  sigmoid (SigLIP, Zhai et al. 2023): logits l_ij = t <img_i, txt_j> + b, labels z_ij = +1 on
    the diagonal (matching pairs) and -1 elsewhere; per example i, -sum_j log sigmoid(z_ij l_ij)
    (image i against every text); the batch loss is their mean, SigLIP's -1/|B| sum_ij.
  softmax (CLIP, Radford et al. 2021): per example i, the mean of the image-to-text and the
    text-to-image cross-entropies of pair i, with logits t <img_i, txt_j> (b cancels out).
`t` is the temperature exp(t'), `b` the bias (two_towers' out['t'], out['b']). Losses are
computed in float32. Both build the [N, N] logits of the batch they are given: right for a
learner batch; selection over a super-batch uses jest.py, which never forms the B x B matrix.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ('sigmoid', 'softmax')


def pair_logits(zimg, ztxt, t, b=0.0):
  """l_ij = t <img_i, txt_j> + b, [N, M]."""
  zimg, ztxt = jnp.asarray(zimg, jnp.float32), jnp.asarray(ztxt, jnp.float32)
  return t * zimg @ ztxt.T + b


def _check(zimg, ztxt):
  if jnp.ndim(zimg) != 2 or jnp.shape(zimg) != jnp.shape(ztxt):
    raise ValueError(f'Image and text embeddings must both be [N, d] with the same N and d; got '
                     f'{jnp.shape(zimg)} and {jnp.shape(ztxt)}.')


def sigmoid_loss_per_example(zimg, ztxt, t, b):
  _check(zimg, ztxt)
  logits = pair_logits(zimg, ztxt, t, b)
  labels = 2 * jnp.eye(logits.shape[0], dtype=logits.dtype) - 1
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=1)


def softmax_loss_per_example(zimg, ztxt, t, b=0.0):
  _check(zimg, ztxt)
  logits = pair_logits(zimg, ztxt, t, b)
  diag = jnp.diagonal(logits)
  image_to_text = jax.nn.logsumexp(logits, axis=1) - diag
  text_to_image = jax.nn.logsumexp(logits, axis=0) - diag
  return 0.5 * (image_to_text + text_to_image)


def sigmoid_loss(zimg, ztxt, t, b):
  return jnp.mean(sigmoid_loss_per_example(zimg, ztxt, t, b))


def softmax_loss(zimg, ztxt, t, b=0.0):
  return jnp.mean(softmax_loss_per_example(zimg, ztxt, t, b))


def positive_pair_sigmoid_loss(zimg, ztxt, t, b):
  """-log sigmoid(t <img_i, txt_i> + b) per pair, [N]: the per-pair (no negatives) score that
  ActiveCLIP-style independent selection uses, the diagonal of JEST's loss matrix."""
  _check(zimg, ztxt)
  sim = jnp.sum(jnp.asarray(zimg, jnp.float32) * jnp.asarray(ztxt, jnp.float32), axis=-1)
  return jax.nn.softplus(-(t * sim + b))


def per_example_loss(name: str, zimg, ztxt, t, b):
  """The per-example loss `name` ('sigmoid' or 'softmax'; config.contrastive_loss)."""
  if name == 'sigmoid':
    return sigmoid_loss_per_example(zimg, ztxt, t, b)
  if name == 'softmax':
    return softmax_loss_per_example(zimg, ztxt, t, b)
  raise ValueError(f'Unknown contrastive loss {name!r}: expected one of {LOSSES}.')
