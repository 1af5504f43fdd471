"""Evaluators looked up by name: `config.evals.<name>.type = 'classification'` -> module
`evaluators.classification`, whose `Evaluator(predict_fn, **kwargs)` has `run(params)`
yielding (metric_name, value) pairs, logged as `eval/<name>/<metric_name>`."""
import importlib


def get_evaluator(name: str):
  try:
    return importlib.import_module(f'big_vision_style.evaluators.{name}')
  except ModuleNotFoundError as e:
    if e.name != f'big_vision_style.evaluators.{name}':
      raise
    raise ValueError(f'Unknown evaluator type {name!r}: expected classification.') from e
