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

On several hosts (a pod slice) every host runs every stage. Process 0 alone writes markers and
stage files; whether a stage is finished is process 0's answer, broadcast, so every host
skips or runs the same stages; and every host waits after each marker is written, so none
reads a stage's outputs (an id table process 0 wrote, say) before they exist. Every host then
holds process 0's outputs, read back from its marker.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Callable

import jax
from orbax.checkpoint import multihost

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
  _barrier(stage_dir)


def _read_marker(stage_dir: str) -> dict:
  with open(_marker(stage_dir)) as f:
    return json.load(f)


# Hosts agree through the coordinator's key-value store and barriers (jax.distributed's
# client), not device collectives: DnC's parallel experts run stages in threads, and device
# collectives launched from several threads in different orders on different hosts would
# deadlock. Keys are unique per call: the n-th call for a stage directory, counted per host
# (every host makes the same calls for a directory, in the same order, from one thread).
_CALLS = collections.Counter()
_TIMEOUT_MS = 24 * 3600 * 1000  # A stage can take hours; a dead host fails the job anyway.


def _key(kind: str, stage_dir: str) -> str:
  _CALLS[(kind, stage_dir)] += 1
  return f'bvs_stages/{kind}/{stage_dir}/{_CALLS[(kind, stage_dir)]}'


def _barrier(stage_dir: str):
  if jax.process_count() > 1:
    multihost.get_jax_distributed_client().wait_at_barrier(_key('done', stage_dir),
                                                           _TIMEOUT_MS)


def _finished(stage_dir: str) -> bool:
  """Whether the stage has its marker, as process 0 sees it (the same answer on every host)."""
  if jax.process_count() == 1:
    return os.path.exists(_marker(stage_dir))
  client, key = multihost.get_jax_distributed_client(), _key('finished', stage_dir)
  if jax.process_index() == 0:
    done = os.path.exists(_marker(stage_dir))
    client.key_value_set(key, '1' if done else '0')
    return done
  return client.blocking_key_value_get(key, _TIMEOUT_MS) == '1'


def run_stages(stages, workdir: str, *, train_fn: Callable) -> dict:
  """Runs (or resumes) `stages` in order; returns {stage name: outputs, 'total_flops': ...},
  or with 'preempted': the stage that stopped early."""
  names = [s.name for s in stages]
  if len(set(names)) != len(names) or any(not n or os.sep in n for n in names):
    raise ValueError(f'Stage names must be unique directory names; got {names}.')
  out = {}
  for stage in stages:
    stage_dir = os.path.join(workdir, stage.name)
    if _finished(stage_dir):  # Finished before: its outputs, not a rerun.
      out[stage.name] = _read_marker(stage_dir)
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
    # Process 0's outputs as written, on every host (a host's own, e.g. its wall time, would
    # differ), and the same whether the stage ran now or in an earlier run.
    out[stage.name] = _read_marker(stage_dir)
  out['total_flops'] = sum(float(out[n]['flops']) for n in names)
  return out
