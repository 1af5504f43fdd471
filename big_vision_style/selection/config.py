"""The one parser of `config.selection`, for both kinds of selecting method.

No `config.selection` block means uniform i.i.d. batches (B = b). The parsed dict holds every
key with its default, plus `super_batch_size` (B = b / (1 - f)) and `selecting` (whether a
step draws more than it trains on, or scores at all), so that no caller re-derives them.
"""
from __future__ import annotations

from big_vision_style.selection import batch
from big_vision_style.selection import policies

_COMMON = dict(policy='uniform', filter_ratio=0.0, reference='pretrained',
               reference_workdir=None)
DEFAULTS = {
    # Bad Students (ClassAct, RHO): per-example scores, one softmax / top-k over B.
    policies.CLASSIFICATION: dict(_COMMON, method='sample', temperature=1.0, score_cache=None),
    # JEST / ActiveCLIP: joint (chunked sampler) or independent selection from embeddings.
    policies.CONTRASTIVE: dict(_COMMON, method='joint', num_chunks=1, gain=1.0, scorer='learner',
                               embedding_cache=None, score_patch_size=None,
                               reuse_scoring_forward=False),
}
CHOICES = {
    policies.CLASSIFICATION: dict(method=batch.METHODS,
                                  reference=('pretrained', 'online', 'cached')),
    policies.CONTRASTIVE: dict(method=('joint', 'independent'), scorer=('learner', 'actor'),
                               reference=('pretrained', 'cached')),
}


def parse(config, kind: str) -> dict:
  """`config.selection` with defaults, checked (clear errors name the key and the choices)."""
  given = dict(config.get('selection') or {})
  defaults = DEFAULTS[kind]
  unknown = set(given) - set(defaults)
  if unknown:
    raise ValueError(f'Unknown config.selection key(s) {sorted(unknown)} for {kind} '
                     f'selection: expected {sorted(defaults)}.')
  sel = {**defaults, **given}
  policies.reads(sel['policy'], kind)  # Raises for an unknown policy.
  for key, allowed in CHOICES[kind].items():
    if sel[key] not in allowed:
      raise ValueError(f'config.selection.{key}={sel[key]!r}: expected one of {allowed}.')
  b = config.input.batch_size
  sel['super_batch_size'] = batch.super_batch_size(b, sel['filter_ratio'])
  sel['selecting'] = sel['policy'] != 'uniform' or sel['super_batch_size'] != b
  if kind == policies.CONTRASTIVE:
    _check_contrastive(sel, b)
  return sel


def _check_contrastive(sel, b: int):
  # pylint: disable-next=g-import-not-at-top  (jest imports this package's batch module)
  from big_vision_style.selection import jest
  if sel['policy'] == 'uniform' and sel['score_patch_size']:
    raise ValueError('config.selection.score_patch_size (Flexi-JEST) needs a scoring policy; '
                     'with policy=uniform nothing is scored.')
  if sel['policy'] != 'uniform' and sel['method'] == 'joint':
    jest.check_sizes(sel['super_batch_size'], b, sel['num_chunks'])
  if sel['score_patch_size'] and sel['reuse_scoring_forward']:
    raise ValueError('config.selection.reuse_scoring_forward cannot be used with Flexi-JEST '
                     '(score_patch_size): it scores at another patch size than it trains, so '
                     'the scoring forward holds no activation the gradient step could reuse.')
  if sel['score_patch_size'] and b % 2:
    raise ValueError(f'Flexi-JEST trains half of the batch at each patch size: '
                     f'config.input.batch_size={b} must be even.')
