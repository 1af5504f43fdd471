"""Models looked up by name: `get_model('vit')` returns the module, whose `Model(...)` builds it.

Every image model maps images [N, H, W, C] to `(logits, out)`, where `out['pre_logits']` is the
pooled representation (used by scoring, ReLA targets and linear probes).
"""
import importlib


def get_model(name: str):
  try:
    return importlib.import_module(f'big_vision_style.models.{name}')
  except ModuleNotFoundError as e:
    if e.name != f'big_vision_style.models.{name}':
      raise
    raise ValueError(f'Unknown model {name!r}: expected one of vit, cnn.') from e
