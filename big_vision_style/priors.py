"""Frozen prior models for ReLA, by kind (`config.rela.prior.kind`):

  checkpoint      the learner of a finished run of this trainer, by workdir (e.g. a small ViT
                  trained on the held-out split, on half of its classes, or on scikit-learn's
                  digits: experiments/rela/prior.py); `params_key` picks a subtree of the
                  learner's parameters, e.g. 'encoder' of a BYOL run (a label-free prior);
  random          a randomly initialised network (seeded): the weakest free prior;
  big_vision_npz  a public big_vision ViT / SigLIP image tower, an .npz of '/'-joined parameter
                  names (TPU users; `load_big_vision_npz` maps the names onto models/vit.py).

A prior only embeds images: its features are the model's pooled `pre_logits`; any classifier
head in the checkpoint is dropped. The prior's parameters are never trained and never enter
the train state: ReLA-D embeds the training set once, offline (rela_targets.py).
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style import checkpointing
from big_vision_style import models

KINDS = ('checkpoint', 'random', 'big_vision_npz')
# Parameters a prior does not need: heads on top of the pooled features.
_HEADS = ('head', 'pre_logits', 'MAPHead_0')


def build_model(prior_cfg):
  return models.get_model(prior_cfg['model_name']).Model(num_classes=None,
                                                         **dict(prior_cfg.get('model') or {}))


def load(prior_cfg, image_shape):
  """(model, params, meta) of the frozen prior; meta holds its training FLOPs if known."""
  prior_cfg = dict(prior_cfg)
  kind = prior_cfg.get('kind')
  if kind not in KINDS:
    raise ValueError(f'config.rela.prior.kind={kind!r}: expected one of {", ".join(KINDS)}.')
  model = build_model(prior_cfg)
  init = lambda: model.init(jax.random.key(int(prior_cfg.get('seed', 0))),
                            jnp.zeros(image_shape, jnp.float32))['params']
  meta = {'kind': kind, 'train_flops': 0.0}
  if kind == 'random':
    params = jax.jit(init)()
  elif kind == 'checkpoint':
    if not prior_cfg.get('workdir'):
      raise ValueError('config.rela.prior.workdir is empty: set it to the workdir of a finished '
                       'prior run (experiments/rela/prior.py).')
    params, ckpt_meta = checkpointing.load_trained_params(prior_cfg['workdir'])
    key = prior_cfg.get('params_key')
    if key:
      if key not in params:
        raise KeyError(f'config.rela.prior.params_key={key!r}: the learner in '
                       f'{prior_cfg["workdir"]} has {sorted(params)}.')
      params = params[key]
    meta['workdir'] = prior_cfg['workdir']
    meta['train_flops'] = float(sum(ckpt_meta['flops'].values()))
  else:
    params = load_big_vision_npz(prior_cfg['path'], jax.eval_shape(init))
    meta['path'] = prior_cfg['path']
  params = {k: v for k, v in params.items() if k not in _HEADS}
  return model, params, meta


def features_fn(model):
  """`fn(params, batch) -> pooled features [N, D]`, for embedding the training set."""
  return lambda params, batch: model.apply({'params': params}, batch['image'])[1]['pre_logits']


# ----- Public big_vision checkpoints -----
def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _as_float32(x):
  x = np.asarray(x)
  if x.dtype.kind == 'V' and x.dtype.itemsize == 2:  # bfloat16 saved by numpy as raw bytes.
    import ml_dtypes  # pylint: disable=g-import-not-at-top
    x = x.view(ml_dtypes.bfloat16)
  return x.astype(np.float32)


def big_vision_to_ours(params: dict) -> tuple[dict, list[str]]:
  """Maps a big_vision ViT parameter tree onto models/vit.py's names; returns (tree, notes).

  Where the names differ:
    * big_vision saves `{'params': ...}`; two-tower models (SigLIP, LiT) keep the image tower
      under `img`: both prefixes are stripped.
    * `scan=True` encoders store one `Transformer/encoderblock` with a leading [depth] axis;
      ours are unrolled `encoderblock_{i}`.
    * Old ViT checkpoints keep the position embedding at `Transformer/posembed_input/
      pos_embedding` (the original vit_jax) or `Transformer/pos_embedding`, and some add it to
      the [CLS] token too (h*w + 1 entries); ours is a top-level `pos_embedding` of h*w.
    * Heads on the pooled features (`head`, the `pre_logits` representation layer, SigLIP's
      `MAPHead_0` attention pooling) are dropped: models/vit.py has no MAP pooling, so a MAP
      tower is pooled by global average (pool_type='gap') over the same encoder tokens.
  Every other name (embedding, encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0/Dense_0, Dense_1}, encoder_norm, cls) is the same in both.
  """
  notes = []
  params = dict(params)
  if set(params) == {'params'} or ('params' in params and 'opt' in params):
    params = dict(params['params'])
  if 'img' in params:
    notes.append('two-tower checkpoint: loaded the image tower (img/)')
    params = dict(params['img'])
  if 'Transformer' not in params or 'embedding' not in params:
    raise ValueError(f'Not a big_vision ViT: top-level names are {sorted(params)}, expected '
                     'embedding, Transformer, pos_embedding (optionally under params/ or img/).')
  enc = dict(params['Transformer'])
  if 'encoderblock' in enc:  # Scanned layers: unstack the leading depth axis.
    stacked = enc.pop('encoderblock')
    depth = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(depth):
      enc[f'encoderblock_{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
    notes.append(f'unstacked {depth} scanned encoder blocks')
  if 'posembed_input' in enc:
    params['pos_embedding'] = enc.pop('posembed_input')['pos_embedding']
    notes.append('moved Transformer/posembed_input/pos_embedding')
  if 'pos_embedding' in enc:
    params['pos_embedding'] = enc.pop('pos_embedding')
    notes.append('moved Transformer/pos_embedding')
  params['Transformer'] = enc
  pe = params.get('pos_embedding')
  if pe is not None and int(np.sqrt(pe.shape[1])) ** 2 + 1 == pe.shape[1]:
    params['pos_embedding'] = pe[:, 1:]
    if 'cls' in params:
      params['cls'] = params['cls'] + pe[:, :1]
    notes.append('split the [CLS] entry off the position embedding')
  dropped = [k for k in _HEADS if k in params]
  for k in dropped:
    del params[k]
  if dropped:
    notes.append(f'dropped heads {dropped}')
  return params, notes


def _resample_posemb(pe, shape):
  """Bilinear resize of a square grid of position embeddings [1, h*w, c] (other resolution)."""
  old, new = int(np.sqrt(pe.shape[1])), int(np.sqrt(shape[1]))
  grid = jax.image.resize(jnp.asarray(pe).reshape(old, old, -1), (new, new, pe.shape[-1]),
                          'bilinear')
  return np.asarray(grid).reshape(shape)


def load_big_vision_npz(path: str, abstract_params) -> dict:
  """Parameters from a big_vision .npz, checked against `abstract_params` (our model's shapes)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  if not epath.Path(path).exists():
    raise FileNotFoundError(f'No big_vision checkpoint at {path!r} (local or gs:// .npz).')
  with epath.Path(path).open('rb') as f, np.load(f, allow_pickle=False) as npz:
    flat = {name: _as_float32(npz[name]) for name in npz.files}
  params, notes = big_vision_to_ours(_unflatten(flat))
  if notes:
    logging.info('big_vision checkpoint %s: %s.', path, '; '.join(notes))
  want = {k: v for k, v in abstract_params.items() if k not in _HEADS}
  pe, want_pe = params.get('pos_embedding'), want.get('pos_embedding')
  if pe is not None and want_pe is not None and pe.shape != want_pe.shape and (
      pe.shape[-1] == want_pe.shape[-1]):  # Same width, another resolution: resample the grid.
    params['pos_embedding'] = _resample_posemb(params['pos_embedding'],
                                               want['pos_embedding'].shape)
  got_paths = {jax.tree_util.keystr(p): np.shape(x)
               for p, x in jax.tree_util.tree_leaves_with_path(params)}
  want_paths = {jax.tree_util.keystr(p): tuple(x.shape)
                for p, x in jax.tree_util.tree_leaves_with_path(want)}
  missing = sorted(set(want_paths) - set(got_paths))
  unexpected = sorted(set(got_paths) - set(want_paths))
  wrong = sorted(k for k in set(want_paths) & set(got_paths) if want_paths[k] != got_paths[k])
  if missing or unexpected or wrong:
    raise ValueError(
        f'big_vision checkpoint {path} does not fit config.rela.prior.model: '
        f'missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape '
        f'{[(k, got_paths[k], want_paths[k]) for k in wrong[:5]]}. Check the variant, patch '
        'size and pool_type.')
  return jax.tree.map(jnp.asarray, params)
