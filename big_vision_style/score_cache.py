r"""Reference-score cache: the frozen reference's loss on every training example, by id.

Reference scores never change, so instead of running the reference forward on every
super-batch, score the training split once and look the scores up (the "reference scores
precomputed" amortisation level of Bad Students). Scores are of the un-augmented image; configs
that use the cache should not augment, so that cached and live scores agree exactly. The file
is an id table (id_table.py) whose meta records its provenance and its one-off FLOPs.

  python -m big_vision_style.score_cache \
      --config experiments/bad_students/policy_comparison.py:policy=learnability \
      --out workdirs/bad_students/reference_scores.npz
"""
from __future__ import annotations

import argparse
import functools

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from big_vision_style import config_utils
from big_vision_style import datasets
from big_vision_style import flops
from big_vision_style import id_table
from big_vision_style import input_pipeline
from big_vision_style import preprocess
from big_vision_style import roles
from big_vision_style import sharding
from big_vision_style import steps

KEY = 'reference_loss'  # The batch field that carries each example's cached reference loss.
WHAT = 'reference score cache'
HOW = ('compute it with `python -m big_vision_style.score_cache --config <the selection config> '
       "--out PATH`, or set config.selection.reference = 'pretrained' to score with the live "
       'reference')


def compute_outputs(fn, params, source, preprocess_fn, mesh, *, batch_size: int):
  """(ids, fn(params, batch)) for every example of `source`, in order, padding dropped.

  Works with any number of processes: ids, mask and outputs leave the jitted function
  replicated, so every host reads the whole global batch (a host can only read the shards of
  its own devices)."""
  replicated = NamedSharding(mesh, P())

  @functools.partial(jax.jit, out_shardings=replicated)
  def run(p, batch):
    return batch['id'], batch['mask'], fn(p, batch)

  all_ids, all_out = [], []
  for local in input_pipeline.make_eval_batches(source, global_batch_size=batch_size,
                                                preprocess_fn=preprocess_fn):
    ids, mask, out = jax.device_get(run(params, input_pipeline.to_global(local, mesh)))
    all_ids.append(np.asarray(ids)[mask])
    all_out.append(np.asarray(out)[mask])
  return np.concatenate(all_ids), np.concatenate(all_out)


def compute(model, params, source, preprocess_fn, mesh, *, batch_size: int, num_classes: int):
  """(ids, losses) of every example of `source` under the frozen model."""
  loss_fn = lambda p, b: steps.per_example_loss(model, p, b, num_classes=num_classes)
  ids, scores = compute_outputs(loss_fn, params, source, preprocess_fn, mesh,
                                batch_size=batch_size)
  return ids, scores.astype(np.float32)


def compute_reference_scores(config):
  """Scores every training example with the frozen reference: (ids, losses, meta)."""
  mesh = sharding.make_mesh(config.get('mesh_devices'))
  split = config.input.get('split', 'train')
  source = datasets.get_source(config.data, split)
  model, params, train_flops = roles.load_reference(config, source.num_classes)
  pp = preprocess.make(**dict(config.input.pp))
  bs = config.get('score_cache_batch_size', 1024)
  ids, scores = compute(model, params, source, pp, mesh, batch_size=bs,
                        num_classes=source.num_classes)
  spec = {k: jax.ShapeDtypeStruct((bs,) + np.shape(v), np.asarray(v).dtype)
          for k, v in pp(source[0]).items()}
  per_batch = flops.compile_and_measure(jax.jit(functools.partial(
      steps.per_example_loss, model, num_classes=source.num_classes)), params, spec)[1].flops
  meta = {**id_table.provenance(config, producer='big_vision_style.score_cache', split=split),
          'reference_workdir': roles.reference_workdir(config),
          'reference_step': id_table.latest_checkpoint_step(roles.reference_workdir(config)),
          'reference_train_flops': train_flops,
          'flops': per_batch * len(ids) / bs, 'num_examples': len(ids)}
  return ids, scores, meta


def save(path: str, ids, scores, meta: dict):
  id_table.save(path, ids, scores, meta)


def load(path: str) -> id_table.IdTable:
  return id_table.load(path, what=WHAT, how=HOW)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='A selection config, `path.py:arg`.')
  parser.add_argument('--out', default=None, help='Default: config.selection.score_cache.')
  args = parser.parse_args()
  config = config_utils.load_config(args.config)
  out = args.out or config.selection.score_cache
  ids, scores, meta = compute_reference_scores(config)
  if jax.process_index() == 0:
    save(out, ids, scores, meta)
  print(f'Wrote {len(ids)} reference scores to {out} (mean {scores.mean():.4f}); '
        f'{meta["flops"]:.4g} FLOPs.')


if __name__ == '__main__':
  main()
