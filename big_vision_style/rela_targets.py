r"""ReLA-D targets: embed every training image once with a frozen prior, PCA, z-score, by id.

  python -m big_vision_style.rela_targets --config experiments/rela/table1.py:prior=holdout
  # --out defaults to config.rela.targets, where the trainer reads them.

Steps (the released ReLA code's): the prior (priors.py: a checkpoint, a random network or a
big_vision .npz) embeds the un-augmented training split (`config.input.split`) with its pooled
features; the features are centred and projected onto their top-k principal components, k the
student's feature size (`config.rela.target_dim` overrides it; it is capped at the numerical
rank of the features, since a direction of zero variance z-scores to pure noise); then every
dimension is z-scored (zero mean, unit variance over the split). The file is an id table
(id_table.py: `ids`, values [N, k], `meta` with provenance), so the trainer attaches targets to
records by example id exactly as cached reference scores are attached.

The embedding pass is a one-off cost: its FLOPs (measured with flops.compile_and_measure, like
the reference-score cache) go in `meta['flops']`, and the prior's own training FLOPs (from its
checkpoint) in `meta['prior_train_flops']`; the trainer adds them to its counters as
`prior_embedding` and `prior_train`. PCA itself (2 N D^2 + 2 N D k, about 0.1% of the
embedding pass here) is reported in `meta['pca_flops']` but not counted.
"""
from __future__ import annotations

import argparse
import logging

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import config_utils
from big_vision_style import datasets
from big_vision_style import flops
from big_vision_style import id_table
from big_vision_style import models
from big_vision_style import preprocess
from big_vision_style import priors
from big_vision_style import score_cache
from big_vision_style import sharding


def pca_whiten(features: np.ndarray, dim: int, *, rank_tol: float = 1e-6):
  """(targets [N, k] float32, info): top-k principal components, each z-scored.

  k = min(dim, numerical rank of the features). Signs are fixed (each component's largest
  loading is positive) so that the result does not depend on the eigen-solver.
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or len(x) < 2:
    raise ValueError(f'Need features [N >= 2, D], got shape {x.shape}.')
  centred = x - x.mean(0)
  cov = centred.T @ centred / (len(x) - 1)
  eigvals, eigvecs = np.linalg.eigh(cov)
  order = np.argsort(eigvals)[::-1]
  eigvals, eigvecs = np.maximum(eigvals[order], 0.0), eigvecs[:, order]
  rank = int(np.sum(eigvals > rank_tol * max(eigvals[0], 1e-30)))
  k = min(dim, rank)
  if k < dim:
    logging.warning('PCA: the prior features have rank %d < %d requested dimensions; using %d.',
                    rank, dim, k)
  comps = eigvecs[:, :k]
  comps *= np.sign(comps[np.argmax(np.abs(comps), axis=0), np.arange(k)])
  proj = centred @ comps
  targets = (proj - proj.mean(0)) / proj.std(0)
  info = {'dim': k, 'requested_dim': dim, 'prior_dim': x.shape[1], 'rank': rank,
          'explained_variance': float(eigvals[:k].sum() / max(eigvals.sum(), 1e-30))}
  return targets.astype(np.float32), info


def student_feature_dim(config, image_shape) -> int:
  """Size of the student's pooled features (what the transport head starts from)."""
  model = models.get_model(config.model_name).Model(num_classes=None, **config.model)
  out = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros(image_shape, jnp.float32))[0][1]['pre_logits'])
  return int(out.shape[-1])


def compute_targets(config):
  """(ids, targets [N, k], meta) for the training split of `config` and its `rela.prior`."""
  if not config.get('rela') or not config.rela.get('prior'):
    raise ValueError('config.rela.prior is not set: name the prior to embed with (kind '
                     'checkpoint, random or big_vision_npz; see big_vision_style/priors.py).')
  prior_cfg = dict(config.rela.prior)
  mesh = sharding.make_mesh(config.get('mesh_devices'))
  source = datasets.get_source(config.data, config.input.get('split', 'train'))
  pp_kwargs = dict(prior_cfg.get('pp') or config.input.pp)
  channels = config.input.get('channels', 1)
  image_shape = (1, pp_kwargs['image_size'], pp_kwargs['image_size'], channels)
  model, params, prior_meta = priors.load(prior_cfg, image_shape)
  pp = preprocess.make(**pp_kwargs)
  bs = config.get('rela_targets_batch_size', 1024)
  embed = jax.jit(priors.features_fn(model))
  ids, feats = score_cache.compute_outputs(embed, params, source, pp, mesh, batch_size=bs)
  spec = {k: jax.ShapeDtypeStruct((bs,) + np.shape(v), np.asarray(v).dtype)
          for k, v in pp(source[0]).items()}
  per_batch = flops.compile_and_measure(embed, params, spec)[1].flops
  dim = config.rela.get('target_dim') or student_feature_dim(
      config, (1, config.input.pp.image_size, config.input.pp.image_size, channels))
  targets, info = pca_whiten(feats, dim)
  meta = {'prior': {k: v for k, v in prior_meta.items() if k != 'train_flops'},
          'prior_step': id_table.latest_checkpoint_step(prior_cfg.get('workdir')),
          'flops': per_batch * len(ids) / bs, 'prior_train_flops': prior_meta['train_flops'],
          'pca_flops': 2.0 * len(ids) * feats.shape[1] * (feats.shape[1] + info['dim']),
          'num_examples': int(len(ids)), **info,
          **id_table.provenance(config, producer='big_vision_style.rela_targets')}
  return ids, targets, meta


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='A ReLA training config, `path.py:arg`.')
  parser.add_argument('--out', default=None, help='Default: config.rela.targets.')
  args = parser.parse_args()
  logging.getLogger().setLevel(logging.INFO)
  config = config_utils.load_config(args.config)
  out = args.out or config.rela.targets
  ids, targets, meta = compute_targets(config)
  if jax.process_index() == 0:
    id_table.save(out, ids, targets, meta)
  print(f'Wrote {len(ids)} ReLA targets of dimension {meta["dim"]} to {out} (explained variance '
        f'{meta["explained_variance"]:.3f}); embedding pass {meta["flops"]:.4g} FLOPs.')


if __name__ == '__main__':
  main()
