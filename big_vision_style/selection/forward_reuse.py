"""Reusing the scoring forward pass for the gradient of the selected sub-batch.

A selection step runs the scorer forward over the whole super-batch of B examples, picks b
of them, and then trains on those b: a plain step runs the forward over the b again before its
backward. That second forward is redundant: the scoring forward already computed every
activation the backward of the b needs. This module keeps them.

  outputs, full_vjp = jax.vjp(lambda p: fn(p, batch), params)      # scoring, over B
  ... indices = select(outputs) ...
  sub_vjp = sub_batch_vjp(fn, params, full_vjp, sub_batch, indices, mesh)
  grads, = sub_vjp(cotangent_of_the_b_outputs)                      # backward over b only

`sub_batch_vjp` traces `fn` on the sub-batch only for the structure of its VJP (which residual
is which), then fills that structure with the matching rows of the scoring forward's residuals.
The sub-batch's own forward is then dead code and XLA removes it (tests/test_forward_reuse.py
checks both the gradients and that the compiled step's FLOPs drop by one forward over b).

When the math allows it: `fn` must act per example (row i of every output depends on row i of
the inputs alone, as the two towers do: no batch norm, no cross-example attention), and the
sub-batch must be scored and trained with the same parameters and the same computation (so not
Flexi-JEST, which scores at another patch size). A residual is matched to the batch by its
shape: the one axis whose size is B * k in the full forward and b * k in the sub-batch's, with
the batch as the major factor (how [B, T, D] -> [B * T, D] reshapes flatten); residuals of the
same shape in both (the weights) do not depend on the batch. Anything else is refused.

Cost: the backward needs the residuals of the B examples kept until the sub-batch is chosen,
B / b times the activation memory of a plain step (5x at f = 0.8). The gather moves only the
chosen rows between devices (selection.gather).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from big_vision_style.selection import batch


def _batch_axis(full_shape, sub_shape, full_size: int, sub_size: int):
  """(axis, k) where the residual holds k rows per example along `axis`; None if the residual
  does not depend on the batch (same shape in both forwards)."""
  if tuple(full_shape) == tuple(sub_shape):
    return None
  differing = [a for a, (f, s) in enumerate(zip(full_shape, sub_shape)) if f != s]
  if len(full_shape) != len(sub_shape) or len(differing) != 1:
    raise NotImplementedError(
        f'Cannot reuse the scoring forward: a residual of shape {tuple(full_shape)} over the '
        f'super-batch of {full_size} has shape {tuple(sub_shape)} over the sub-batch of '
        f'{sub_size}, not one batch axis. The model may mix examples; set '
        'config.selection.reuse_scoring_forward=False.')
  axis, = differing
  k, rest = divmod(full_shape[axis], full_size)
  if rest or k * sub_size != sub_shape[axis]:
    raise NotImplementedError(
        f'Cannot reuse the scoring forward: axis {axis} of a residual is {full_shape[axis]} '
        f'over the super-batch of {full_size} and {sub_shape[axis]} over the sub-batch of '
        f'{sub_size}, not the same number of rows per example. Set '
        'config.selection.reuse_scoring_forward=False.')
  return axis, k


def sub_batch_vjp(fn, params, full_vjp, sub_batch, indices, mesh, *, full_size: int):
  """The VJP of `fn(params, sub_batch)` with respect to `params`, built from `full_vjp` (that of
  `fn(params, batch)` over the whole super-batch of `full_size` examples) for
  `sub_batch = batch[indices]` (module doc).

  `indices`: int [b], replicated; `mesh`: the data mesh the batch is sharded over.
  """
  _, structure = jax.vjp(lambda p: fn(p, sub_batch), params)  # Its forward is dead code.
  sub_leaves, treedef = jax.tree.flatten(structure)
  full_leaves = jax.tree.leaves(full_vjp)
  if len(full_leaves) != len(sub_leaves):
    raise NotImplementedError(
        f'Cannot reuse the scoring forward: its VJP holds {len(full_leaves)} residuals and the '
        f"sub-batch's {len(sub_leaves)}; the computation differs between the two (set "
        'config.selection.reuse_scoring_forward=False).')
  sub_size = jnp.shape(indices)[0]

  # Bring every batch-dependent residual to [B, ...] (rows of one example together), gather the
  # chosen rows across devices in one call, and put each back in the sub-batch's layout.
  to_gather, layouts = {}, {}
  for i, (full, sub) in enumerate(zip(full_leaves, sub_leaves)):
    where = _batch_axis(jnp.shape(full), jnp.shape(sub), full_size, sub_size)
    if where is None:
      continue
    axis, k = where
    shape = jnp.shape(full)
    rows = jnp.reshape(full, shape[:axis] + (full_size, k) + shape[axis + 1:])
    to_gather[str(i)] = jnp.moveaxis(rows, axis, 0)
    layouts[str(i)] = axis
  # A full window: no lax.cond around collectives in differentiated code. With the windowed
  # gather's cond inside this VJP, XLA:CPU intermittently aborted the process (4 of 5 runs of
  # test_reusing_the_scoring_forward...); the reuse path is off by default and off on TPU.
  full = mesh.shape['data'] - 1
  gathered = batch.gather(to_gather, indices, mesh, window=full) if to_gather else {}
  leaves = []
  for i, (full, sub) in enumerate(zip(full_leaves, sub_leaves)):
    if str(i) in gathered:
      rows = jnp.moveaxis(gathered[str(i)], 0, layouts[str(i)])
      leaves.append(jnp.reshape(rows, jnp.shape(sub)).astype(sub.dtype))
    else:
      leaves.append(full)  # The weights (and what depends on them alone): the same values.
  return jax.tree.unflatten(treedef, leaves)

