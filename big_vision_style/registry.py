"""Name -> module lookup shared by the model, evaluator and data-source registries."""
import importlib


def lookup(package: str, name: str, kind: str, expected: str):
  """Imports `big_vision_style.<package>.<name>`; an unknown name is a clear ValueError."""
  module = f'big_vision_style.{package}.{name}'
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name != module:
      raise  # A missing dependency inside a known module: show that error, not ours.
    raise ValueError(f'Unknown {kind} {name!r}: expected one of {expected}.') from e
