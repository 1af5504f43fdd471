r"""The trainer: one flat loop, big_vision style.

  python -m big_vision_style.train --config experiments/baseline/fashion_mnist.py:runlocal \
      --workdir workdirs/baseline

A restart with the same --workdir resumes from the last checkpoint, with the data iterator
where it stopped: an interrupted-and-resumed run ends with exactly the parameters of an
uninterrupted one. SIGTERM (a preempted TPU VM) saves a checkpoint before exiting.

The train state is a plain dict keyed by role, `{'learner': {'params', 'opt'}}`. Data-selection
methods add an online actor (`state['actor']`) and a frozen reference (held outside the state,
never donated or updated) and pick the learner's batch from a larger super-batch on device,
inside the same jitted step (see `update_fn`).
"""
from __future__ import annotations

import functools
import logging
import time

from absl import app
from absl import flags
from etils import epath
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags
import numpy as np
import optax

from big_vision_style import checkpointing
from big_vision_style import datasets
from big_vision_style import evaluators
from big_vision_style import flops
from big_vision_style import input_pipeline
from big_vision_style import losses
from big_vision_style import metrics_writer
from big_vision_style import models
from big_vision_style import optim
from big_vision_style import preprocess
from big_vision_style import sharding

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, `path.py:arg`.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints and metrics go.')


def total_steps_of(config, num_train_examples: int) -> int:
  if config.get('total_steps'):
    return int(config.total_steps)
  if config.get('total_epochs'):
    return int(config.total_epochs * num_train_examples // config.input.batch_size)
  raise ValueError('Set config.total_steps or config.total_epochs.')


def validate(config, mesh):
  n = mesh.shape['data']
  if config.input.batch_size % n:
    raise ValueError(
        f'config.input.batch_size={config.input.batch_size} is not divisible by the {n} devices '
        f'of the data axis; use a multiple of {n} (or fewer devices via config.mesh_devices).')
  for name, ev in config.get('evals', {}).items():
    if ev.get('batch_size', 1024) % n:
      raise ValueError(f'config.evals.{name}.batch_size={ev.batch_size} is not divisible by the '
                       f'{n} devices of the data axis; use a multiple of {n}.')
  if not 0.0 <= config.get('label_smoothing', 0.0) < 1.0:
    raise ValueError(f'config.label_smoothing={config.label_smoothing} must be in [0, 1).')


def make_update_fn(model, tx, schedule, train_rng, replicated, *, num_classes: int,
                   label_smoothing: float = 0.0):
  """The jitted learner update `(state, batch, step) -> (state, measurements)`.

  Data selection plugs in here: score the super-batch with the actor / reference, pick the
  learner's batch on device, then update the learner (and the actor) on the selected examples.
  """

  def learner_loss(params, batch, rng):
    logits, _ = model.apply({'params': params}, batch['image'], train=True,
                            rngs={'dropout': rng})
    per_example = losses.softmax_xent(logits, batch['label'], num_classes=num_classes,
                                      label_smoothing=label_smoothing)
    return per_example.mean(), per_example

  @functools.partial(jax.jit, donate_argnums=(0,), out_shardings=(replicated, replicated))
  def update_fn(state, batch, step):
    rng = jax.random.fold_in(train_rng, step)
    learner = state['learner']
    (loss, _), grads = jax.value_and_grad(learner_loss, has_aux=True)(
        learner['params'], batch, rng)
    updates, opt = tx.update(grads, learner['opt'], learner['params'])
    params = optax.apply_updates(learner['params'], updates)
    measurements = {'train/loss': loss, 'train/grad_norm': optax.global_norm(grads),
                    'train/lr': schedule(step - 1)}
    return {'learner': {'params': params, 'opt': opt}}, measurements

  return update_fn


def train(config, workdir: str, *, stop_after_step: int | None = None):
  """Trains (or resumes) and returns the final metrics row.

  `stop_after_step` simulates a preemption at that step (used by the resume tests).
  """
  sharding.maybe_initialize_distributed(config)
  mesh = sharding.make_mesh(config.get('mesh_devices'))
  validate(config, mesh)
  replicated = NamedSharding(mesh, P())
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # Local or gs://.

  # ----- Data -----
  train_source = datasets.get_source(config.data, 'train')
  num_classes = train_source.num_classes
  pp_kwargs = dict(config.input.get('pp', {}))
  pp_train = preprocess.make(augment=tuple(config.input.get('augment', ())), **pp_kwargs)
  pp_eval = preprocess.make(**pp_kwargs)
  batch_size = config.input.batch_size
  total_steps = total_steps_of(config, len(train_source))
  train_iter = input_pipeline.make_train_iterator(
      train_source, global_batch_size=batch_size, seed=config.seed,
      preprocess_fn=pp_train, num_threads=config.input.get('num_threads', 2),
      prefetch=config.input.get('prefetch', 4))

  # ----- Model, optimiser, train state -----
  model = models.get_model(config.model_name).Model(num_classes=num_classes, **config.model)
  tx, schedule = optim.make_optimizer(config.optax, total_steps)
  image_shape = (1, config.input.pp.image_size, config.input.pp.image_size,
                 config.input.get('channels', 1))

  def init(rng):
    params = model.init(rng, jnp.zeros(image_shape, jnp.float32))['params']
    return {'learner': {'params': params, 'opt': tx.init(params)}}

  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  state = jax.jit(init, out_shardings=replicated)(init_rng)
  num_params = sum(x.size for x in jax.tree.leaves(state['learner']['params']))
  logging.info('Model %s %s: %.3fM parameters', config.model_name, dict(config.model),
               num_params / 1e6)

  update_fn = make_update_fn(model, tx, schedule, train_rng, replicated, num_classes=num_classes,
                             label_smoothing=config.get('label_smoothing', 0.0))

  # ----- Checkpoint: resume if there is one -----
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.get('ckpt_keep', 2))
  counter = flops.FlopCounter()
  start_step, wall_s_before = 0, 0.0
  if (latest := ckpt.latest_step()) is not None:
    state, data_state, meta = ckpt.restore(latest, checkpointing.abstract_like(state))
    train_iter.set_state(data_state)
    counter = flops.FlopCounter(meta['flops'])
    start_step, wall_s_before = int(meta['step']), float(meta['wall_s'])
    logging.info('Resumed from %s at step %d.', ckpt.directory, start_step)

  # ----- Compile once, measure the FLOPs of exactly what runs -----
  t0 = time.time()
  batch_spec = {k: jax.ShapeDtypeStruct((batch_size,) + np.shape(v), np.asarray(v).dtype,
                                        sharding=input_pipeline.data_sharding(mesh))
                for k, v in pp_eval(train_source[0]).items()}
  update_compiled, update_cost = flops.compile_and_measure(
      update_fn, state, batch_spec, jax.ShapeDtypeStruct((), jnp.int32))
  logging.info('Compiled the update in %.1fs: %.4g FLOPs per step (XLA: %.4g per device x %d '
               'devices, loop correction %.3g).', time.time() - t0, update_cost.flops,
               update_cost.xla_flops, update_cost.num_devices, update_cost.loop_correction)

  predict = lambda params, images: model.apply({'params': params}, images)[0]
  evals = {}
  for name, ev_cfg in config.get('evals', {}).items():
    ev_cfg = dict(ev_cfg)
    module = evaluators.get_evaluator(ev_cfg.pop('type'))
    every = ev_cfg.pop('log_steps')
    source = datasets.get_source(config.data, ev_cfg.pop('split'))
    evals[name] = (every, module.Evaluator(predict, source=source, preprocess_fn=pp_eval,
                                           mesh=mesh, **ev_cfg))

  writer = metrics_writer.MetricsWriter(workdir, total_steps=total_steps,
                                        resume_step=start_step)
  stop = checkpointing.StopRequest()
  log_every = config.get('log_training_steps', 50)
  ckpt_every = config.get('ckpt_steps', 1000)
  loop_t0 = time.time()
  row = {}

  def save(step):
    meta = {'step': step, 'flops': counter.state_dict(),
            'wall_s': wall_s_before + time.time() - loop_t0}
    ckpt.save(step, state, train_iter.get_state(), meta)

  for step in range(start_step + 1, total_steps + 1):
    batch = input_pipeline.to_global(next(train_iter), mesh)
    state, measurements = update_compiled(state, batch, jnp.asarray(step, jnp.int32))
    counter.add('learner_train', update_cost.flops)

    is_last = step == total_steps
    due_evals = [n for n, (every, _) in evals.items() if is_last or step % every == 0]
    if is_last or step % log_every == 0 or due_evals:
      row = {'examples_seen': step * batch_size,
             **{k: float(v) for k, v in jax.device_get(measurements).items()},
             **counter.metrics(),
             'wall_s': wall_s_before + time.time() - loop_t0}
      for name in due_evals:
        for metric, value in evals[name][1].run(state['learner']['params']):
          row[f'eval/{name}/{metric}'] = value
      writer.write(step, row)
      writer.progress(step, row)

    preempted = bool(stop) or ckpt.reached_preemption(step) or step == stop_after_step
    if is_last or step % ckpt_every == 0 or preempted:
      save(step)
    if preempted and not is_last:
      logging.warning('Stopping at step %d (%s); checkpoint saved, rerun to resume.', step,
                      stop.signal_name or 'preemption')
      break

  writer.flush()
  ckpt.close()
  return {'step': step if total_steps > start_step else start_step, **row}, state


class QuietLibraries(logging.Filter):
  """Orbax logs dozens of INFO lines per save; keep its warnings, drop its chatter."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers + logging.getLogger('absl').handlers:
    handler.addFilter(QuietLibraries())
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
