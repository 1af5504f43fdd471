"""Two-tower image-text model (CLIP / SigLIP): an image tower and a text tower, each projected to
a shared L2-normalised embedding, plus the learned temperature and bias of the SigLIP loss.

  model = models.get_model('two_towers').Model(
      embed_dim=128, image=dict(variant='mu/8'), text=dict(variant='mu', vocab_size=128))
  zimg, ztxt, out = model.apply({'params': p}, images, texts)   # either may be None
  # out['t'] = exp(t') the temperature, out['b'] the bias, out['img/...'] / out['txt/...'] the
  # towers' own outputs (pre_logits, encoded).

Unlike the image models (which return `(logits, out)`), this returns `(zimg, ztxt, out)`, as
big_vision's two_towers does. Towers are looked up by name (`image_model`, default the ViT;
`text_model`, default `text_transformer`); their `num_classes` is the embedding size, and
their projection heads are randomly initialised (a zero head would make every embedding 0).
Initialisation as in SigLIP (Zhai et al. 2023): t' = log 10, b = -10; with a softmax (CLIP)
loss the bias gets no gradient and stays at its initial value. `patch_size` passes FlexiViT's
call-time patch size to the image tower (Flexi-JEST).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from big_vision_style import models


def _normalise(z):
  return z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(min=1e-12)


class _Model(nn.Module):
  embed_dim: int = 128
  image_model: str = 'vit'
  image: Any = None  # kwargs of the image tower, e.g. {'variant': 'mu/8'}
  text_model: str = 'text_transformer'
  text: Any = None  # kwargs of the text tower, e.g. {'variant': 'mu', 'vocab_size': 128}
  temperature_init: float = 10.0
  bias_init: float = -10.0

  @nn.compact
  def __call__(self, image=None, text=None, *, train=False, patch_size=None):
    out = {}
    zimg = ztxt = None
    if image is not None:
      kw = dict(self.image or {})
      if self.image_model == 'vit':
        kw.setdefault('head_zeroinit', False)
      tower = models.get_model(self.image_model).Model(num_classes=self.embed_dim, **kw,
                                                       name='img')
      call_kw = {} if patch_size is None else {'patch_size': patch_size}
      zimg, img_out = tower(image, train=train, **call_kw)
      out.update({f'img/{k}': v for k, v in img_out.items()})
      zimg = _normalise(zimg)
    if text is not None:
      tower = models.get_model(self.text_model).Model(num_classes=self.embed_dim,
                                                      **dict(self.text or {}), name='txt')
      ztxt, txt_out = tower(text, train=train)
      out.update({f'txt/{k}': v for k, v in txt_out.items()})
      ztxt = _normalise(ztxt)
    t = self.param('t', nn.initializers.constant(math.log(self.temperature_init)), (1,),
                   jnp.float32)
    b = self.param('b', nn.initializers.constant(self.bias_init), (1,), jnp.float32)
    out['t'], out['b'] = jnp.exp(t[0]), b[0]
    return zimg, ztxt, out


def Model(num_classes=None, **kw):  # pylint: disable=invalid-name
  """Factory. `num_classes` is accepted (and ignored) so that role builders can treat this like
  the image models; the embedding size is `embed_dim`."""
  del num_classes
  return _Model(**kw)
