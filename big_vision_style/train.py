r"""The trainer: one flat loop, big_vision style, for every method.

  python -m big_vision_style.train --config experiments/baseline/fashion_mnist.py:runlocal \
      --workdir workdirs/baseline

What a run trains is its method, looked up by name (`config.objective`, default 'supervised';
methods/): the method builds the plain-dict train state, the frozen models, the step(s) and the
functions evaluators read. This file is only the loop around it: mesh, data, compiling and
measuring each step with XLA, FLOP counters, evaluators, metrics, checkpoints, preemption. It
imports no method by name, so a new method is a new module (`methods.register`).

A restart with the same --workdir resumes from the last checkpoint, with the data iterator
where it stopped: an interrupted-and-resumed run ends with exactly the parameters of an
uninterrupted one. SIGTERM or SIGINT (a preempted TPU VM, Ctrl-C), or the TPU runtime's
preemption notice, stops every host after the same step with one checkpoint; the process then
exits with EXIT_PREEMPTED (75, "rerun to resume").

Faults: config and workdir are checked before anything is loaded (preflight.py), one writer
per workdir (workdir_lock.py), a resume must continue the run in `run.json` (run_identity.py),
a damaged checkpoint falls back to the previous one (checkpointing.py), and a non-finite step
stops the run unsaved, or is skipped and counted (nonfinite.py).
"""
from __future__ import annotations

import json
import logging
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags
import numpy as np

from big_vision_style import checkpointing
from big_vision_style import config_utils
from big_vision_style import datasets
from big_vision_style import evaluators
from big_vision_style import flops
from big_vision_style import input_pipeline
from big_vision_style import methods
from big_vision_style import metrics_writer
from big_vision_style import nonfinite
from big_vision_style import preflight
from big_vision_style import preprocess
from big_vision_style import run_identity
from big_vision_style import sharding
from big_vision_style import workdir_lock

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, `path.py:arg`.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints and metrics go.')

EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: stopped before the end, rerun to resume.
FINAL_MARKER = 'final.json'  # train_once writes it, atomically, when a run has finished.
load_config = config_utils.load_config  # For scripts: `path.py:arg` -> ConfigDict.


def total_steps_of(config, num_train_examples: int) -> int:
  if config.get('total_steps') is not None:
    return int(config.total_steps)
  if config.get('total_epochs') is not None:
    return int(config.total_epochs * num_train_examples // config.input.batch_size)
  raise ValueError('Set config.total_steps or config.total_epochs.')


def validate(config, mesh, super_batch_size: int):
  """What every method's run needs of the batch sizes and the mesh."""
  n = mesh.shape['data']
  if config.input.batch_size % n:
    raise ValueError(
        f'config.input.batch_size={config.input.batch_size} is not divisible by the {n} devices '
        f'of the data axis; use a multiple of {n} (or fewer devices via config.mesh_devices).')
  if super_batch_size % n:
    raise ValueError(
        f'The super-batch of {super_batch_size} examples (config.input.batch_size / (1 - '
        f'config.selection.filter_ratio)) is not divisible by the {n} devices of the data axis; '
        f'choose batch_size and filter_ratio so that it is a multiple of {n}.')
  for name, ev in config.get('evals', {}).items():
    if ev.get('batch_size', 1024) % n:
      raise ValueError(f'config.evals.{name}.batch_size={ev.batch_size} is not divisible by the '
                       f'{n} devices of the data axis; use a multiple of {n}.')
  input_pipeline.epoch_size(1, config.input.get('data_ratio', 1.0))  # Raises if not in (0, 1].


def make_evaluators(config, built, mesh, pp_eval):
  """{name: (every, evaluator)}. An evaluator reads the method's prediction function named by
  its `pred` (default: its module's DEFAULT_PRED, else 'predict')."""
  evals = {}
  for name, ev_cfg in config.get('evals', {}).items():
    ev_cfg = dict(ev_cfg)
    kind = ev_cfg.pop('type')
    module = evaluators.get_evaluator(kind)
    every = ev_cfg.pop('log_steps')
    pred = ev_cfg.pop('pred', evaluators.default_pred(module))
    if pred not in built.predict_fns:
      raise ValueError(f'config.evals.{name} ({kind}) evaluates {pred!r}, which the '
                       f'{config.get("objective", "supervised")} method does not provide; it '
                       f'provides {sorted(built.predict_fns)} (set config.evals.{name}.pred).')
    # An evaluator may read other data than the training source (`data`, e.g. ImageNet for
    # the zero-shot evaluation of an image-text model trained on web pairs).
    source = datasets.get_source(ev_cfg.pop('data', None) or config.data, ev_cfg.pop('split'))
    if 'fit_split' in ev_cfg:  # Evaluators that fit on a split first (linear probe).
      ev_cfg['fit_source'] = datasets.get_source(config.data, ev_cfg.pop('fit_split'))
    evals[name] = (every, module.Evaluator(built.predict_fns[pred], source=source,
                                           preprocess_fn=pp_eval, mesh=mesh, **ev_cfg))
  return evals


def should_stop(step: int, stop: checkpointing.StopRequest, ckpt, stop_after_step) -> bool:
  """The same answer on every host at the same step. One process: a signal flag. Several:
  jax's preemption sync point, which any host's SIGTERM (or the TPU runtime's notice) moves to
  the same step everywhere; SIGINT is turned into SIGTERM for it (StopRequest)."""
  return bool(stop) or ckpt.reached_preemption(step) or step == stop_after_step


def train(config, workdir: str, *, stop_after_step: int | None = None):
  """Trains (or resumes) and returns (the final metrics row, the final train state).

  `stop_after_step` simulates a preemption at that step (used by the resume tests).
  """
  sharding.maybe_initialize_distributed(config)
  preflight.check_config(config)
  is_writer = jax.process_index() == 0  # Process 0 writes metrics, run.json and the lock.
  if is_writer:
    preflight.check_workdir(workdir)  # Local or gs://; creates it.
  with workdir_lock.WorkdirLock(workdir, enabled=is_writer):
    run_identity.check_or_record(config, workdir, is_writer=is_writer,
                                 resuming=bool(checkpointing.saved_steps(workdir)))
    return _train(config, workdir, stop_after_step)


def _train(config, workdir: str, stop_after_step: int | None):
  mesh = sharding.make_mesh(config.get('mesh_devices'))
  replicated = NamedSharding(mesh, P())

  # ----- Data, with every per-example table the method reads (score caches, targets) -----
  train_source = datasets.get_source(config.data, config.input.get('split', 'train'))
  train_source, one_off = methods.prepare(config, train_source)
  pp_kwargs = dict(config.input.get('pp', {}))
  pp_train = preprocess.make(augment=tuple(config.input.get('augment', ())), **pp_kwargs)
  pp_eval = preprocess.make(**pp_kwargs)
  data_ratio = config.input.get('data_ratio', 1.0)
  total_steps = total_steps_of(config, input_pipeline.epoch_size(len(train_source), data_ratio))
  preflight.check_total_steps(config, total_steps)
  example = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
             for k, v in pp_eval(train_source[0]).items()}

  # ----- The method: state, frozen models, steps, prediction functions -----
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  ctx = methods.base.Context(config=config, mesh=mesh, num_classes=train_source.num_classes,
                             total_steps=total_steps, example=example, train_rng=train_rng)
  built = methods.build(ctx)
  validate(config, mesh, built.super_batch_size)
  for category, value in built.one_off.items():
    one_off[category] += value
  train_iter = input_pipeline.make_train_iterator(
      train_source, global_batch_size=built.super_batch_size, seed=config.seed,
      preprocess_fn=pp_train, num_threads=config.input.get('num_threads', 2),
      prefetch=config.input.get('prefetch', 4), data_ratio=data_ratio)
  state = jax.jit(built.init, out_shardings=replicated)(init_rng)
  skip_bad = config.get('skip_nonfinite_steps', False)
  if skip_bad:  # Bad steps keep the previous state, counted in the state (nonfinite.py).
    built.phases = [nonfinite.skipping(phase) for phase in built.phases]
    state[nonfinite.SKIPPED] = jax.device_put(nonfinite.init_skipped(), replicated)
  frozen = built.frozen
  for role, tree in [*state.items(), *frozen.items()]:
    params = tree.get('params', tree) if isinstance(tree, dict) else tree
    logging.info('%s: %.3fM parameters%s', role,
                 sum(x.size for x in jax.tree.leaves(params)) / 1e6,
                 ' (frozen)' if role in frozen else '')

  # ----- Checkpoint: resume if there is one -----
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.get('ckpt_keep', 2))
  counter = flops.FlopCounter(one_off)  # One-off costs (reference training, score cache).
  start_step, wall_s_before = 0, 0.0
  # The newest checkpoint that restores; damaged ones are reported and moved aside.
  if (restored := ckpt.restore_latest(checkpointing.abstract_like(state), accept=(
      lambda _, data_state, __: train_iter.set_state(data_state)))) is not None:
    _, state, data_state, meta = restored
    counter = flops.FlopCounter(meta['flops'])
    start_step, wall_s_before = int(meta['step']), float(meta['wall_s'])
    logging.info('Resumed from %s at step %d.', ckpt.directory, start_step)

  # ----- Compile every phase once, and measure the FLOPs of exactly what runs -----
  batch_spec = ctx.batch_spec(built.super_batch_size)
  step_spec = jax.ShapeDtypeStruct((), jnp.int32)
  programs, step_costs = [], []
  for phase in built.phases:
    t0 = time.time()
    compiled, cost = flops.compile_and_measure(methods.jit_step(phase, ctx), state, frozen,
                                               batch_spec, step_spec)
    programs.append(compiled)
    step_costs.append(phase.costs(cost.flops, state, frozen))
    logging.info('Compiled the %s step in %.1fs: %.4g FLOPs per step (XLA: %.4g per device x %d '
                 'devices, loop correction %.3g); by category: %s.', phase.name,
                 time.time() - t0, cost.flops, cost.xla_flops, cost.num_devices,
                 cost.loop_correction, {k: f'{v:.3g}' for k, v in step_costs[-1].items()})
  evals = make_evaluators(config, built, mesh, pp_eval)

  writer = metrics_writer.MetricsWriter(workdir, total_steps=total_steps,
                                        resume_step=start_step)
  stop = checkpointing.StopRequest(multihost=jax.process_count() > 1)
  log_every = config.get('log_training_steps', 50)
  ckpt_every = config.get('ckpt_steps', 1000)
  loop_t0 = time.time()
  row = {}
  tracker = None if skip_bad else nonfinite.Tracker()

  def guard():  # Syncs: raises before a non-finite step is logged or saved.
    if tracker is not None and tracker.failed():
      stop.close()
      tracker.check(ckpt.describe_latest())

  def save(step):
    guard()
    meta = {'step': step, 'flops': counter.state_dict(),
            'wall_s': wall_s_before + time.time() - loop_t0}
    ckpt.save(step, state, train_iter.get_state(), meta)

  # Phases before the last end when the state says so (ReLA's switch): find where we are.
  phase_i, ended_at = 0, {}
  while phase_i < len(built.phases) - 1 and (
      (end := built.phases[phase_i].ended(state)) is not None):
    ended_at[built.phases[phase_i].end_metric] = end
    phase_i += 1
  step = start_step
  for step in range(start_step + 1, total_steps + 1):
    batch = input_pipeline.to_global(next(train_iter), mesh)
    phase = built.phases[phase_i]
    state, measurements = programs[phase_i](state, frozen, batch, jnp.asarray(step, jnp.int32))
    if tracker is not None:
      tracker.update(measurements, step)  # Keeps references: no host sync, no program.
    for category, cost in step_costs[phase_i].items():
      counter.add(category, cost)
    phase_ended = False
    if phase_i < len(built.phases) - 1 and (end := phase.ended(state)) is not None:
      ended_at[phase.end_metric], phase_i, phase_ended = end, phase_i + 1, True
      logging.info('Phase %s ended after step %d; now %s.', phase.name, step,
                   built.phases[phase_i].name)

    is_last = step == total_steps
    due_evals = [n for n, (every, _) in evals.items() if is_last or step % every == 0]
    if is_last or step % log_every == 0 or due_evals or phase_ended:
      guard()
      row = {'examples_seen': step * config.input.batch_size,
             'examples_scored': step * built.super_batch_size,
             **{k: float(v) for k, v in jax.device_get(measurements).items()},
             **counter.metrics(),
             'wall_s': wall_s_before + time.time() - loop_t0, **ended_at}
      for name in due_evals:
        for metric, value in evals[name][1].run(state['learner']['params']):
          row[f'eval/{name}/{metric}'] = value
      writer.write(step, row)
      writer.progress(step, row)

    preempted = should_stop(step, stop, ckpt, stop_after_step)
    if is_last or step % ckpt_every == 0 or preempted:
      save(step)
    if preempted and not is_last:
      logging.warning('Stopping at step %d (%s); checkpoint saved, rerun to resume.', step,
                      stop.signal_name or 'preemption')
      break

  writer.close()
  ckpt.close()
  stop.close()
  if total_steps > start_step and step < total_steps:  # Stopped early: not a final row.
    return {'step': step, **row, 'preempted': True}, state
  if total_steps <= start_step:  # Already finished: its final row is the last one logged.
    logged = metrics_writer.read_metrics(workdir)
    row = {k: v for k, v in (logged[-1] if logged else {}).items() if k != 'step'}
    return {'step': start_step, **row}, state
  return {'step': step, **row}, state


class QuietLibraries(logging.Filter):
  """Orbax logs dozens of INFO lines per save; keep its warnings, drop its chatter."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def setup_script_logging():
  """INFO logging without orbax's chatter, for scripts that call `train` in a loop."""
  # absl (imported here) already installed a root handler, so basicConfig may be a no-op: set
  # the level and the filter on what is there.
  logging.basicConfig(format='%(asctime)s %(message)s')
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers:
    handler.addFilter(QuietLibraries())


def train_once(config, workdir: str) -> dict:
  """Trains (or resumes) unless `<workdir>/final.json` says the run finished; returns its final
  row (with `run_wall_s`). For sweeps that are rerun after an interruption."""
  marker = os.path.join(workdir, FINAL_MARKER)
  if os.path.exists(marker):
    with open(marker) as f:
      return json.load(f)
  t0 = time.time()
  final, _ = train(config, workdir)
  if final.get('preempted'):  # SIGTERM or a preemption notice: stop the sweep, mark nothing.
    logging.warning('%s stopped at step %d before its end; rerun the sweep to resume it.',
                    workdir, final['step'])
    raise SystemExit(EXIT_PREEMPTED)
  final = {**final, 'run_wall_s': time.time() - t0}
  with open(marker + '.tmp', 'w') as f:
    json.dump(final, f)
  os.replace(marker + '.tmp', marker)  # Atomic: a marker always means a finished run.
  return final


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers + logging.getLogger('absl').handlers:
    handler.addFilter(QuietLibraries())
  final, _ = train(_CONFIG.value, _WORKDIR.value)
  if final.get('preempted'):
    raise SystemExit(EXIT_PREEMPTED)  # Distinct from a failure: rerun the same command.


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
