"""Evaluators looked up by name: `config.evals.<name>.type = 'classification'` -> module
`evaluators.classification`, whose `Evaluator(predict_fn, **kwargs)` has `run(params)`
yielding (metric_name, value) pairs, logged as `eval/<name>/<metric_name>`."""
from big_vision_style import registry


def get_evaluator(name: str):
  return registry.lookup('evaluators', name, 'evaluator type', 'classification')
