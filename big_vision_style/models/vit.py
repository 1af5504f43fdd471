"""Vision Transformer, following big_vision's models/vit.py (pre-LN encoder, GAP or [CLS] pool).

Variant strings as in big_vision: `mu`, `Ti`, `S`, `M`, `B`, `L`, `H`, with `/patch`, e.g.
`Ti/16`, `S/4`. At 28x28 use a patch that divides 28 (4, 7, 14).

FlexiViT: `model.apply(params, images, patch_size=8)` runs the same weights at another patch
size (kernel and position embeddings resized, `models/flexi.py`; `flexi_resize` picks how).
Parameters are always those of the native `patch_size`; without the argument nothing changes.
The encoder blocks also take an optional attention `mask` (the text tower's padding).

Memory at pod scale (the `:tpu` configs; results/aot/README.md), as big_vision does it:
`dtype_mm='bfloat16'` runs the matmuls (patch embedding, attention, MLP) in bf16 while the
parameters, the residual stream, the norms and the head stay float32; `remat=True` wraps each
encoder block in `nn.remat` (jax.checkpoint), so that the backward pass recomputes a block's
activations from its input instead of keeping them all: the same loss and gradients, about a
third more FLOPs, far less memory. Both default off (float32, no remat): every local run is
unchanged.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from big_vision_style.models import flexi
from big_vision_style.models import heads

# name: (width, depth, mlp_dim, num_heads). `mu` is the paper's tiny actor (about 1000x < L).
VARIANTS = {
    'mu': (32, 1, 128, 2),
    'Ti': (192, 12, 768, 3),
    'S': (384, 12, 1536, 6),
    'M': (512, 12, 2048, 8),
    'B': (768, 12, 3072, 12),
    'L': (1024, 24, 4096, 16),
    'H': (1280, 32, 5120, 16),
}


def decode_variant(variant: str | None) -> dict[str, Any]:
  """'S/16' -> dict(width=384, depth=12, mlp_dim=1536, num_heads=6, patch_size=(16, 16))."""
  if variant is None:
    return {}
  name, _, patch = variant.partition('/')
  if name not in VARIANTS:
    raise ValueError(f'Unknown ViT variant {name!r} in {variant!r}: expected one of '
                     f'{", ".join(VARIANTS)}.')
  width, depth, mlp_dim, num_heads = VARIANTS[name]
  out = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
  if patch:
    out['patch_size'] = (int(patch), int(patch))
  return out


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout: float = 0.0
  dtype_mm: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    inits = dict(kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6))
    d = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype_mm, **inits)(x)
    x = nn.gelu(x)
    x = nn.Dropout(rate=self.dropout)(x, deterministic)
    return nn.Dense(d, dtype=self.dtype_mm, **inits)(x)


class Encoder1DBlock(nn.Module):
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  dtype_mm: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True, mask=None):
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
        deterministic=deterministic, dtype=self.dtype_mm)(y, y, mask=mask)
    y = nn.Dropout(rate=self.dropout)(y, deterministic)
    x = x + y
    y = nn.LayerNorm()(x)
    y = MlpBlock(self.mlp_dim, self.dropout, self.dtype_mm)(y, deterministic)
    y = nn.Dropout(rate=self.dropout)(y, deterministic)
    return x + y


class Encoder(nn.Module):
  depth: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  dtype_mm: Any = jnp.float32
  remat: bool = False  # Recompute each block's activations in the backward pass.

  @nn.compact
  def __call__(self, x, deterministic=True, mask=None):
    block = Encoder1DBlock
    if self.remat:  # Parameters keep their names: a checkpoint loads either way.
      block = nn.remat(Encoder1DBlock, static_argnums=(2,))  # 0 = self, 2 = deterministic.
    # Layers are unrolled rather than nn.scan-ned: simpler, and XLA's cost analysis then sees
    # every layer (it counts a while-loop body once; flops.py corrects for that anyway).
    for i in range(self.depth):
      x = block(self.mlp_dim, self.num_heads, self.dropout, self.dtype_mm,
                name=f'encoderblock_{i}')(x, deterministic, mask)
    return nn.LayerNorm(name='encoder_norm')(x)


class _Model(nn.Module):
  num_classes: int | None
  patch_size: Sequence[int] = (16, 16)
  width: int = 768
  depth: int = 12
  mlp_dim: int = 3072
  num_heads: int = 12
  pool_type: str = 'gap'  # 'gap' (global average) or 'tok' ([CLS] token).
  dropout: float = 0.0
  head_zeroinit: bool = True
  dtype_mm: Any = jnp.float32  # Matmul dtype, e.g. 'bfloat16' (parameters stay float32).
  remat: bool = False  # nn.remat every encoder block (module doc).
  flexi_resize: str = 'pi'  # How a call-time patch_size resizes the kernel: 'pi' or 'bilinear'.

  @nn.compact
  def __call__(self, image, *, train=False, patch_size=None):
    out = {}
    native = tuple(self.patch_size)
    conv_kw = {}
    if patch_size is not None and tuple(patch_size) != native:
      patch_size = tuple(patch_size)
      for p in native + patch_size:
        if image.shape[1] % p or image.shape[2] % p:
          raise ValueError(f'FlexiViT: patch sizes {native} and {patch_size} must both divide '
                           f'the image size {image.shape[1:3]}.')
      conv_kw['conv_general_dilated'] = flexi.patchify_with(patch_size, self.flexi_resize)
    x = nn.Conv(self.width, native, strides=native, padding='VALID', name='embedding',
                dtype=self.dtype_mm, **conv_kw)(image)
    n, h, w, c = x.shape
    x = jnp.reshape(x, [n, h * w, c])
    # Sized for the native patch, whatever this call's: parameters never depend on it.
    grid = (image.shape[1] // native[0], image.shape[2] // native[1])
    # Float32 whatever dtype_mm is (the patch embedding's output is then promoted: the
    # residual stream stays float32 with bf16 matmuls).
    pos = self.param('pos_embedding', nn.initializers.normal(stddev=1 / c ** 0.5),
                     (1, grid[0] * grid[1], c), jnp.float32)
    x = x + flexi.resize_pos_embedding(pos, grid, (h, w))
    if self.pool_type == 'tok':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c), jnp.float32)
      x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)
    x = nn.Dropout(rate=self.dropout)(x, not train)
    x = Encoder(self.depth, self.mlp_dim, self.num_heads, self.dropout, self.dtype_mm,
                self.remat, name='Transformer')(x, deterministic=not train)
    out['encoded'] = x
    if self.pool_type == 'gap':
      x = jnp.mean(x, axis=1)
    elif self.pool_type == 'tok':
      x = x[:, 0]
    else:
      raise ValueError(f'Unknown pool_type {self.pool_type!r}: expected gap or tok.')
    return heads.classify(x, out, self.num_classes, zeroinit=self.head_zeroinit)


def Model(num_classes=None, *, variant=None, **kw):  # pylint: disable=invalid-name
  """Factory: `variant` sets the size; explicit kwargs (e.g. depth=4) override it."""
  return _Model(num_classes, **{**decode_variant(variant), **kw})


def analytic_forward_flops(*, image_size: int, num_classes: int | None, variant=None,
                           channels: int = 3, **kw) -> float:
  """Matmul FLOPs (2 per multiply-add) of one image's forward pass.

  Counts the patch embedding, per layer the QKV/output projections (8 N D^2), the attention
  logits and weighted sum (4 N^2 D) and the MLP (4 N D M), and the head. Norms, softmax and
  GELU are omitted: they are O(N D) and below 2% at ViT sizes that matter.
  """
  cfg = {**dict(patch_size=(16, 16), width=768, depth=12, mlp_dim=3072, pool_type='gap'),
         **decode_variant(variant), **kw}
  p = cfg['patch_size'][0]
  d, m, depth = cfg['width'], cfg['mlp_dim'], cfg['depth']
  n = (image_size // p) ** 2 + (1 if cfg['pool_type'] == 'tok' else 0)
  embed = 2 * (image_size // p) ** 2 * p * p * channels * d
  per_layer = 8 * n * d * d + 4 * n * n * d + 4 * n * d * m
  head = 2 * d * num_classes if num_classes else 0
  return float(embed + depth * per_layer + head)
