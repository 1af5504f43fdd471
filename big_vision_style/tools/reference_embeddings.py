r"""Embeds every training pair once with the frozen JEST / ActiveCLIP reference and stores the
embeddings by example id (embedding_cache.py), so that training rebuilds the reference's
scores with no reference forward pass.

  python -m big_vision_style.tools.reference_embeddings \
      --config experiments/jest/filter_ratio.py --out workdirs/jest/cache_curated.npz
  # then train with  ...filter_ratio.py:reference=cached,embedding_cache=<that path>

The cache records the FLOPs of this pass (XLA's cost analysis of the embedding program, times
the number of batches) and the reference's training FLOPs, which the trainer adds to its
one-off costs.
"""
from __future__ import annotations

import argparse
import functools

import jax
import numpy as np

from big_vision_style import datasets
from big_vision_style import embedding_cache
from big_vision_style import flops
from big_vision_style import image_text
from big_vision_style import preprocess
from big_vision_style import sharding
from big_vision_style import config_utils
from big_vision_style import id_table
from big_vision_style import roles


def compute(config, batch_size: int = 1000) -> embedding_cache.EmbeddingCache:
  mesh = sharding.make_mesh(config.get('mesh_devices'))
  source = datasets.get_source(config.data, config.input.get('split', 'train'))
  model, params, train_flops = roles.load_reference(config, 0)
  pp = preprocess.make(**dict(config.input.pp))
  spec = {k: jax.ShapeDtypeStruct((batch_size,) + np.shape(v), np.asarray(v).dtype)
          for k, v in pp(source[0]).items() if k in ('image', 'text')}
  fn = jax.jit(functools.partial(lambda m, p, b: image_text.embed(m, p, b['image'],
                                                                  b['text'])[:2], model))
  per_batch = flops.compile_and_measure(fn, params, spec)[1].flops
  meta = {**id_table.provenance(config, producer='big_vision_style.tools.reference_embeddings'),
          'reference_workdir': config.selection.reference_workdir,
          'reference_step': id_table.latest_checkpoint_step(config.selection.reference_workdir),
          'flops': per_batch * len(source) / batch_size, 'reference_train_flops': train_flops,
          'num_examples': len(source)}
  return embedding_cache.compute(model, params, source, pp, mesh, batch_size=batch_size,
                                 meta=meta)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='A JEST config, `path.py:arg`.')
  parser.add_argument('--out', default=None, help='Default: config.selection.embedding_cache.')
  args = parser.parse_args()
  config = config_utils.load_config(args.config)
  out = args.out or config.selection.embedding_cache
  if not out:
    raise SystemExit('Give --out or set config.selection.embedding_cache.')
  cache = compute(config)
  if jax.process_index() == 0:
    embedding_cache.save(out, cache)
  print(f'Wrote the reference embeddings of {len(cache.ids)} pairs ({cache.dim}-d) to {out}; '
        f'{cache.table.meta["flops"]:.4g} FLOPs.')


if __name__ == '__main__':
  main()
