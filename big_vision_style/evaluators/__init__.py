"""Evaluators looked up by name: `config.evals.<name>.type = 'classification'` -> module
`evaluators.classification`, whose `Evaluator(predict_fn, **kwargs)` has `run(params)`
yielding (metric_name, value) pairs, logged as `eval/<name>/<metric_name>`.

An evaluator module that sets `USES_FEATURES = True` (`linear_probe`) gets the encoder's pooled
features `fn(params, images) -> [N, D]` instead of logits; `fit_split` names a second split it
fits on.

The image-text evaluators (`zero_shot`, `retrieval`) get a two-tower model's
`fn(params, images, texts) -> (zimg, ztxt, ...)` (either input may be None)."""
from big_vision_style import registry


def get_evaluator(name: str):
  return registry.lookup('evaluators', name, 'evaluator type',
                         'classification, linear_probe, zero_shot, retrieval')
