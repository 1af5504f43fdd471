"""Models looked up by name: `get_model('vit')` returns the module, whose `Model(...)` builds it.

Every image model maps images [N, H, W, C] to `(logits, out)`, where `out['pre_logits']` is the
pooled representation (used by scoring, ReLA targets and linear probes). The image-text
models differ: `text_transformer` maps token ids [N, L] to `(x, out)`, and `two_towers` maps
(images, texts) to `(zimg, ztxt, out)`.
"""
from big_vision_style import registry


def get_model(name: str):
  return registry.lookup('models', name, 'model', 'vit, cnn, text_transformer, two_towers')
