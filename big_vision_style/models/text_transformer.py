"""A small text transformer: the text tower of the two-tower contrastive model.

Token ids [N, L] (0 = padding, as `tokenizers` produces them) -> `(x, out)` like the ViT:
`out['encoded']` the token representations, `out['pre_logits']` the pooled text, and `x` its
projection to `num_classes` outputs (the shared embedding size in a two-tower model; no
projection if None). Same pre-LN encoder blocks as the ViT (`vit.Encoder`), with padding masked
out of attention, so a caption's representation does not depend on how much padding follows it.
`variant` takes the ViT's size names without a patch (`mu`, `Ti`, `S`, ...). `dtype_mm` and
`remat` are the ViT's (bf16 matmuls; blocks recomputed in the backward pass), default off.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from big_vision_style import tokenizers
from big_vision_style.models import heads
from big_vision_style.models import vit

POOL_TYPES = ('mean', 'last')


class _Model(nn.Module):
  num_classes: int | None
  vocab_size: int = 32_000
  width: int = 512
  depth: int = 12
  mlp_dim: int = 2048
  num_heads: int = 8
  pool_type: str = 'mean'  # 'mean' of the non-padding tokens, or the 'last' non-padding one.
  dropout: float = 0.0
  head_zeroinit: bool = False  # A zero head maps every text to 0: no good for contrastive use.
  dtype_mm: Any = jnp.float32  # Matmul dtype of the encoder blocks, e.g. 'bfloat16'.
  remat: bool = False  # nn.remat every encoder block (as the ViT's; models/vit.py).

  @nn.compact
  def __call__(self, text, *, train=False):
    if self.pool_type not in POOL_TYPES:
      raise ValueError(f'Unknown pool_type {self.pool_type!r}: expected one of {POOL_TYPES}.')
    out = {}
    valid = text != tokenizers.PAD  # [N, L]
    x = nn.Embed(self.vocab_size, self.width, name='embedding',
                 embedding_init=nn.initializers.normal(stddev=1 / self.width ** 0.5))(text)
    x = x + self.param('pos_embedding', nn.initializers.normal(stddev=1 / self.width ** 0.5),
                       (1, text.shape[1], self.width), x.dtype)
    x = nn.Dropout(rate=self.dropout)(x, not train)
    # Padding neither attends nor is attended to (its own rows are ignored by the pooling).
    mask = nn.make_attention_mask(valid, valid)
    x = vit.Encoder(self.depth, self.mlp_dim, self.num_heads, self.dropout, self.dtype_mm,
                    self.remat, name='Transformer')(x, deterministic=not train, mask=mask)
    out['encoded'] = x
    weights = valid.astype(x.dtype)
    if self.pool_type == 'mean':  # An all-padding text pools to zeros.
      x = jnp.einsum('nl,nld->nd', weights, x) / jnp.maximum(weights.sum(1, keepdims=True), 1)
    else:
      last = jnp.maximum(valid.shape[1] - 1 - jnp.argmax(valid[:, ::-1], axis=1), 0)
      x = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    return heads.classify(x, out, self.num_classes, zeroinit=self.head_zeroinit)


def Model(num_classes=None, *, variant=None, **kw):  # pylint: disable=invalid-name
  """Factory: `variant` ('mu', 'Ti', 'S', ...) sets the size; explicit kwargs override it."""
  sizes = {}
  if variant is not None:
    if variant not in vit.VARIANTS:
      raise ValueError(f'Unknown text transformer variant {variant!r}: expected one of '
                       f'{", ".join(vit.VARIANTS)} (no /patch).')
    sizes = dict(zip(('width', 'depth', 'mlp_dim', 'num_heads'), vit.VARIANTS[variant]))
  return _Model(num_classes, **{**sizes, **kw})
