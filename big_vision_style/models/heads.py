"""The classifier head every registered model ends with (the parameters are named `head`)."""
import flax.linen as nn


def classify(x, out: dict, num_classes, *, zeroinit: bool):
  """Pooled features `x` -> (logits, out); with `num_classes` None the features themselves.
  Records `out['pre_logits']` (what linear probes and ReLA read) and `out['logits']`. Called
  inside a model's compact `__call__`, so the Dense layer is that model's `head`."""
  out['pre_logits'] = x
  if num_classes:
    kw = {'kernel_init': nn.initializers.zeros} if zeroinit else {}
    x = nn.Dense(num_classes, name='head', **kw)(x)
  out['logits'] = x
  return x, out
