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


def few_steps(config, steps=3):
  """A config made a few steps long, logging every step, no evaluators (tested elsewhere)."""
  override(config, total_steps=steps, log_training_steps=1, ckpt_steps=1000, mesh_devices=None)
  with config.unlocked():
    config.evals = {}
  return config
