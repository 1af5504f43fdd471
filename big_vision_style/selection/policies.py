"""Selection policies: which models each one reads, and the per-example score formula.

One table serves both kinds of selecting method, because the same policy name means different
models in each paper:
- classification (Bad Students' ClassAct; methods/supervised.py) scores each example by
  per-example losses: "hard learner" is the small online *actor*'s loss, and RHO-LOSS scores
  with the learner itself;
- contrastive (JEST and ActiveCLIP; methods/contrastive.py) scores sub-batches from
  embeddings: "hard learner" is the *scorer*'s embeddings, the learner itself in JEST, or the
  small online actor in ActiveCLIP (config.selection.scorer). The score formula of a
  contrastive sub-batch is JEST's (selection/jest.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

CLASSIFICATION, CONTRASTIVE = 'classification', 'contrastive'

# policy: (models read in classification, models read in contrastive); None: not available.
READS = {
    'uniform': ((), ()),
    'hard_learner': (('actor',), ('scorer',)),
    'easy_reference': (('reference',), ('reference',)),
    'learnability': (('actor', 'reference'), ('scorer', 'reference')),
    'rho': (('learner', 'reference'), None),  # RHO-LOSS (Mindermann et al.): classification.
}
POLICIES = tuple(READS)


def policies_of(kind: str) -> tuple[str, ...]:
  column = _column(kind)
  return tuple(p for p, reads in READS.items() if reads[column] is not None)


def _column(kind: str) -> int:
  if kind not in (CLASSIFICATION, CONTRASTIVE):
    raise ValueError(f'Unknown selection kind {kind!r}: expected {CLASSIFICATION} or '
                     f'{CONTRASTIVE}.')
  return 0 if kind == CLASSIFICATION else 1


def reads(policy: str, kind: str = CLASSIFICATION) -> set[str]:
  """The models `policy` scores with, for `kind`: a subset of {'actor', 'reference',
  'learner'} (classification) or {'scorer', 'reference'} (contrastive)."""
  if policy not in READS or READS[policy][_column(kind)] is None:
    raise ValueError(f'Unknown selection policy {policy!r} for {kind} selection '
                     f'(config.selection.policy); expected one of {policies_of(kind)}.')
  return set(READS[policy][_column(kind)])


def needs(policy: str) -> set[str]:
  """The forward passes classification `policy` scores with (`reads(policy, CLASSIFICATION)`)."""
  return reads(policy, CLASSIFICATION)


def score(policy: str, *, actor_loss=None, reference_loss=None, learner_loss=None,
          num_examples: int | None = None):
  """Per-example selection scores [B] (higher = more likely kept), float32, no gradient.

  uniform: 0; hard_learner: actor_loss; easy_reference: -reference_loss;
  learnability: actor_loss - reference_loss; rho: learner_loss - reference_loss.
  'uniform' reads no loss; it takes B from any loss given, else from `num_examples`.
  """
  read = reads(policy, CLASSIFICATION)
  given = {'actor': actor_loss, 'reference': reference_loss, 'learner': learner_loss}
  missing = sorted(role for role in read if given[role] is None)
  if missing:
    raise ValueError(f'Selection policy {policy!r} needs the per-example '
                     f'{", ".join(r + "_loss" for r in missing)}, which was not given (None).')
  # Only the losses the policy reads: a stray extra loss must not change anything.
  losses = {role: jnp.asarray(given[role], jnp.float32) for role in read}
  shapes = {role: loss.shape for role, loss in losses.items()}
  if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) > 1:
    # [B] - [B, 1] would silently broadcast to a dense B x B score matrix.
    raise ValueError(f'Per-example losses must all have shape [B]; got {shapes}.')
  # Scores pick examples; nothing differentiates through the choice.
  losses = {role: jax.lax.stop_gradient(loss) for role, loss in losses.items()}

  if policy == 'uniform':
    if num_examples is None:
      others = [jnp.shape(x) for x in given.values() if x is not None]
      if not others:
        raise ValueError("Selection policy 'uniform' needs num_examples (the super-batch size B) "
                         'when no per-example loss is given.')
      num_examples = others[0][0]
    return jnp.zeros([num_examples], jnp.float32)
  if policy == 'hard_learner':
    return losses['actor']
  if policy == 'easy_reference':
    return -losses['reference']
  if policy == 'learnability':
    return losses['actor'] - losses['reference']
  return losses['learner'] - losses['reference']  # rho.
