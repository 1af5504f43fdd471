"""Helpers shared by the trainer tests."""
import json
import os


def override(config, **overrides):
  """`config` with top-level keys replaced (configs are locked against new keys otherwise)."""
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  return config


def read_rows(workdir):
  """The rows of a run's metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]
