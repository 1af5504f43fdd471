"""Evaluators looked up by name: `config.evals.<name>.type = 'classification'` -> module
`evaluators.classification`, whose `Evaluator(predict_fn, **kwargs)` has `run(params)`
yielding (metric_name, value) pairs, logged as `eval/<name>/<metric_name>`.

Which of the method's prediction functions an evaluator gets is its config's `pred` key
(big_vision's idea), by default its module's `DEFAULT_PRED`, else 'predict' (logits):
`linear_probe` reads 'features', the encoder's pooled `fn(params, images) -> [N, D]`;
`fit_split` names a second split it fits on.

The image-text evaluators (`zero_shot`, `retrieval`) get a two-tower model's
`fn(params, images, texts) -> (zimg, ztxt, ...)` (either input may be None)."""
from big_vision_style import registry


def get_evaluator(name: str):
  return registry.lookup('evaluators', name, 'evaluator type',
                         'classification, linear_probe, zero_shot, retrieval')


def default_pred(module) -> str:
  """The prediction function an evaluator module reads unless its config names one."""
  if hasattr(module, 'DEFAULT_PRED'):
    return module.DEFAULT_PRED
  return 'features' if getattr(module, 'USES_FEATURES', False) else 'predict'
