"""Multi-stage methods (Divide and Contrast: base model, clustering, experts, distillation) as a
sequence of stages, each one a run of the one loop or a computation on the previous ones'
outputs, in one workdir.

  stages = [TrainStage('base', lambda out: base_config),
            ComputeStage('cluster', lambda stage_dir, out: kmeans(out['base'], stage_dir)),
            TrainStage('expert_0', lambda out: expert_config(out['cluster']))]
  outputs = run_stages(stages, workdir, train_fn=train.train)
  outputs['total_flops']    # every stage's FLOPs, summed

Each stage lives in `<workdir>/<name>/`. A stage that finished writes `stage.json` there
atomically (its outputs, FLOPs included); a rerun skips finished stages, reading their outputs
back, and resumes the unfinished one where it stopped: a train stage from its last checkpoint
(the loop's own resume), a compute stage from the start (keep compute stages idempotent). A
train stage stopped early (preemption) stops the runner, which returns {'preempted': stage}.

Stages read earlier stages' outputs (`out[name]`): a train stage's are its workdir, final row
and FLOPs; a compute stage returns its own (JSON-able), e.g. the path of an id table of cluster
assignments that a later stage's method attaches with its `prepare`. The runner takes
`train_fn` (train.train) instead of importing the trainer, so that no library module depends
on the entry point.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax

MARKER = 'stage.json'


@dataclasses.dataclass
class TrainStage:
  name: str
  config: Callable[[dict], Any]  # Earlier stages' outputs -> this stage's config.


@dataclasses.dataclass
class ComputeStage:
  name: str
  # (this stage's directory, earlier stages' outputs) -> outputs (JSON-able; 'flops' counted).
  fn: Callable[[str, dict], dict]


def _marker(stage_dir: str) -> str:
  return os.path.join(stage_dir, MARKER)


def _write_marker(stage_dir: str, outputs: dict):
  if jax.process_index() == 0:  # One writer; every host takes the same decisions.
    os.makedirs(stage_dir, exist_ok=True)
    tmp = _marker(stage_dir) + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(outputs, f)
    os.replace(tmp, _marker(stage_dir))


def run_stages(stages, workdir: str, *, train_fn: Callable) -> dict:
  """Runs (or resumes) `stages` in order; returns {stage name: outputs, 'total_flops': ...},
  or with 'preempted': the stage that stopped early."""
  names = [s.name for s in stages]
  if len(set(names)) != len(names) or any(not n or os.sep in n for n in names):
    raise ValueError(f'Stage names must be unique directory names; got {names}.')
  out = {}
  for stage in stages:
    stage_dir = os.path.join(workdir, stage.name)
    if os.path.exists(_marker(stage_dir)):  # Finished before: its outputs, not a rerun.
      with open(_marker(stage_dir)) as f:
        out[stage.name] = json.load(f)
      continue
    if isinstance(stage, TrainStage):
      final, _ = train_fn(stage.config(out), stage_dir)
      if final.get('preempted'):
        return {**out, 'preempted': stage.name}
      outputs = {'workdir': stage_dir, 'final': final, 'flops': float(final['flops/total'])}
    elif isinstance(stage, ComputeStage):
      os.makedirs(stage_dir, exist_ok=True)
      outputs = dict(stage.fn(stage_dir, out))
      outputs.setdefault('flops', 0.0)
    else:
      raise TypeError(f'Unknown stage {stage!r}: expected TrainStage or ComputeStage.')
    _write_marker(stage_dir, outputs)
    out[stage.name] = outputs
  out['total_flops'] = sum(float(out[n]['flops']) for n in names)
  return out
