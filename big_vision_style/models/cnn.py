"""A small CNN (conv-conv-pool blocks), a cheap alternative actor / reference / prior."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class _Model(nn.Module):
  num_classes: int | None
  widths: Sequence[int] = (32, 64)
  hidden: int = 128

  @nn.compact
  def __call__(self, image, *, train=False):
    del train  # No dropout or batch-norm: keeps train and eval identical and steps pure.
    x = image
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Conv(width, (3, 3), name=f'conv{i}a')(x))
      x = nn.relu(nn.Conv(width, (3, 3), name=f'conv{i}b')(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.relu(nn.Dense(self.hidden, name='fc')(x))
    out = {'pre_logits': x}
    if self.num_classes:
      x = nn.Dense(self.num_classes, name='head')(x)
    out['logits'] = x
    return x, out


def Model(num_classes=None, **kw):  # pylint: disable=invalid-name
  return _Model(num_classes, **kw)
