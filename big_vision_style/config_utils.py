"""Helpers for configs-as-code (`get_config(arg)`), after big_vision's configs/common.py."""
from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, *, lazy: bool = False, **spec) -> ml_collections.ConfigDict:
  """Parses 'runlocal,seed=3,variant=S/4' into a ConfigDict typed by `spec`'s defaults.

  A bare word sets a boolean to True. Unknown keys are an error, so a typo in a sweep fails
  loudly instead of silently running the default.
  """
  out = ml_collections.ConfigDict(spec)
  for item in filter(None, (arg or '').split(',')):
    key, eq, value = item.partition('=')
    if key not in spec:
      raise ValueError(f'Unknown config argument {key!r}; this config accepts: '
                       f'{", ".join(sorted(spec))}.')
    default = spec[key]
    if not eq:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ('1', 'true', 'yes')
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  if lazy:
    return out
  return out.lock()


def load_config(config_arg: str):
  """`path.py:arg` -> ConfigDict, as --config does (for tools that run outside absl flags)."""
  path, _, arg = config_arg.partition(':')
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)
