"""Batch selection, shared by every method that selects (one package, one job per module):

  batch.py          super-batch sizes, select_indices (Gumbel-top-k / top-k), gather, shard_map
  policies.py       which models each policy reads (classification and contrastive), scores
  config.py         the one parser of config.selection
  jest.py           JEST's chunked joint sampler (and independent per-pair selection)
  jest_gibbs.py     a dense Gibbs sampler of the same distribution, for small B (tests, Fig. 2)
  forward_reuse.py  reusing the scoring forward's activations for the selected rows' gradient

The mechanics and the policy table are re-exported here: `selection.gather(...)`,
`selection.select_indices(...)`, `selection.score(...)`, `selection.parse(config, kind)`.
"""
from big_vision_style.selection.batch import check_divisible
from big_vision_style.selection.batch import gather
from big_vision_style.selection.batch import gather_fallback
from big_vision_style.selection.batch import gather_window
from big_vision_style.selection.batch import METHODS
from big_vision_style.selection.batch import select_indices
from big_vision_style.selection.batch import shard_map
from big_vision_style.selection.batch import super_batch_size
from big_vision_style.selection.config import parse
from big_vision_style.selection.policies import CLASSIFICATION
from big_vision_style.selection.policies import CONTRASTIVE
from big_vision_style.selection.policies import needs
from big_vision_style.selection.policies import POLICIES
from big_vision_style.selection.policies import reads
from big_vision_style.selection.policies import score
