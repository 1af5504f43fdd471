"""FlexiViT (Beyer et al., CVPR 2023): one patch-embedding kernel, any patch size at call time.

A ViT's patch embedding is a linear map of each p x p patch. To run the same weights with patch
p' (Flexi-JEST scores at a coarse patch, trains at both), the kernel is resized to p' x p':
  'pi' (FlexiViT's PI-resize, the default): with B the bilinear resize of a p x p patch to
       p' x p' (a p'^2 x p^2 matrix), the new kernel is w' = pinv(B^T) w, so that a patch
       resized to p' gives the same token as the original patch did: <B x, w'> = <x, w>,
       exactly when upsampling (p' >= p), in the least-squares sense when downsampling.
  'bilinear': the kernel itself resized bilinearly. Simpler, but token norms then scale with
       (p'/p)^2, so the model sees a distribution shift unless trained at both sizes.
The position embedding, a grid of (H/p) x (W/p) vectors, is resized bilinearly to the new grid.
Resize matrices are numpy constants (computed once per size pair at trace time), so a resized
kernel costs one small matmul and is differentiable: training at p' updates the p-sized weights.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

RESIZE_METHODS = ('pi', 'bilinear')


def _linear_resize_1d(old: int, new: int) -> np.ndarray:
  """W [new, old]: 1-D linear interpolation with half-pixel centres, edges clamped."""
  centres = (np.arange(new) + 0.5) * old / new - 0.5
  weights = np.maximum(0.0, 1.0 - np.abs(centres[:, None] - np.arange(old)[None, :]))
  return weights / weights.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=32)
def bilinear_resize_matrix(old: tuple[int, int], new: tuple[int, int]) -> np.ndarray:
  """B [new_h * new_w, old_h * old_w]: bilinear resize of a flattened (row-major) patch.

  Half-pixel centres, no antialiasing: what jax.image.resize(..., 'bilinear', antialias=False)
  and tf.image.resize (which FlexiViT used) compute. Plain numpy, so that it is a constant even
  while tracing.
  """
  return np.kron(_linear_resize_1d(old[0], new[0]), _linear_resize_1d(old[1], new[1]))


@functools.lru_cache(maxsize=32)
def _pi_resize_matrix(old: tuple[int, int], new: tuple[int, int]) -> np.ndarray:
  return np.linalg.pinv(bilinear_resize_matrix(old, new).T).astype(np.float32)


def resize_kernel(kernel, new_patch, method: str = 'pi'):
  """A patch-embedding kernel [ph, pw, C, D] -> [new_h, new_w, C, D] (see the module doc)."""
  if method not in RESIZE_METHODS:
    raise ValueError(f'Unknown patch-embedding resize {method!r} (flexi_resize): expected one '
                     f'of {RESIZE_METHODS}.')
  old, new = tuple(kernel.shape[:2]), tuple(int(p) for p in new_patch)
  if old == new:
    return kernel
  if method == 'bilinear':
    return jax.image.resize(kernel, new + kernel.shape[2:], 'bilinear', antialias=False)
  mat = jnp.asarray(_pi_resize_matrix(old, new), kernel.dtype)  # [new_h*new_w, old_h*old_w]
  flat = kernel.reshape(old[0] * old[1], -1)
  return (mat @ flat).reshape(new + kernel.shape[2:])


def resize_pos_embedding(pos, old_grid, new_grid):
  """Position embeddings [1, old_h * old_w, D] -> [1, new_h * new_w, D], bilinearly."""
  old_grid, new_grid = tuple(old_grid), tuple(new_grid)
  if old_grid == new_grid:
    return pos
  d = pos.shape[-1]
  grid = pos.reshape(old_grid + (d,))
  return jax.image.resize(grid, new_grid + (d,), 'bilinear', antialias=False).reshape(1, -1, d)


def patchify_with(patch_size, method: str):
  """A drop-in for `lax.conv_general_dilated` in `nn.Conv(conv_general_dilated=...)`.

  The module keeps its parameters (and their names and shapes) and passes its native kernel;
  this resizes the kernel to `patch_size` and convolves with stride `patch_size` instead of the
  module's own (the conv is a patchify: stride == kernel size, VALID padding).
  """
  patch_size = tuple(int(p) for p in patch_size)

  def conv(lhs, rhs, window_strides, padding, *, dimension_numbers=None, precision=None,
           **unused):
    del window_strides, unused  # Dilations are 1 for a patchify.
    if padding != 'VALID':
      raise ValueError(f'A flexible patch embedding is a VALID patchify; got padding {padding}.')
    return jax.lax.conv_general_dilated(
        lhs, resize_kernel(rhs, patch_size, method), patch_size, 'VALID',
        dimension_numbers=dimension_numbers, precision=precision)

  return conv
