"""Reusing the scoring forward for the selected sub-batch's gradient (forward_reuse.py): the same
gradients as a plain step on the sub-batch, one forward over b fewer in the compiled program,
and a clear refusal where examples interact."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_style import flops
from big_vision_style.selection import forward_reuse
from big_vision_style import image_text
from big_vision_style import input_pipeline
from big_vision_style import models
from big_vision_style import sharding
from big_vision_style.tools import bench_forward_reuse

SUPER, SUB = 40, 8


def _embed(model, params, batch):
  return image_text.embed(model, params, batch['image'], batch['text'])


def _setup(num_devices, width=32):
  model = models.get_model('two_towers').Model(
      embed_dim=16, image=dict(width=width, depth=2, mlp_dim=2 * width, num_heads=2,
                               patch_size=(4, 4)),
      text=dict(width=width, depth=2, mlp_dim=2 * width, num_heads=2, vocab_size=50))
  mesh = sharding.make_mesh(num_devices)
  rng = np.random.default_rng(0)
  batch = jax.device_put(
      {'image': jnp.asarray(rng.normal(size=(SUPER, 16, 16, 3)), jnp.float32),
       'text': jnp.asarray(rng.integers(1, 50, size=(SUPER, 6)), jnp.int32)},
      input_pipeline.data_sharding(mesh))
  params = jax.jit(lambda k: image_text.init_params(model, k, (1, 16, 16, 3), (1, 6)))(
      jax.random.key(0))  # Jitted: op by op it compiled some 100 programs.
  indices = jnp.asarray(rng.choice(SUPER, SUB, replace=False), jnp.int32)
  embed = functools.partial(_embed, model)
  return embed, mesh, batch, params, indices


def _steps(embed, mesh):
  """(plain, reusing): both score the super-batch and return the gradient of the sub-batch's
  loss; the benchmark's two programs."""
  programs = bench_forward_reuse.programs(embed.args[0], mesh, 'sigmoid')
  return programs['plain'], programs['reusing']


@pytest.mark.parametrize('num_devices', [1, 8])
def test_reused_forward_gives_the_sub_batch_gradient(num_devices):
  embed, mesh, batch, params, indices = _setup(num_devices)
  plain, reusing = _steps(embed, mesh)
  want, scored_want = plain(params, batch, indices)
  got, scored_got = reusing(params, batch, indices)
  np.testing.assert_allclose(scored_got.image, scored_want.image, atol=1e-6)
  scale = max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(want))
  for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
    # Float round-off of a different batch size only (some leaves' gradients are ~0).
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))
  # Not vacuous: a different sub-batch has a different gradient.
  other, _ = plain(params, batch, (indices + 1) % SUPER)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(other), jax.tree.leaves(want))) > 1e-4


def test_reused_forward_removes_the_sub_batch_forward_from_the_compiled_step():
  embed, mesh, batch, params, indices = _setup(1, width=64)
  plain, reusing = _steps(embed, mesh)
  cost = lambda fn, *a: flops.compile_and_measure(fn, *a)[1].flops
  forward_sub = cost(jax.jit(embed), params, jax.tree.map(lambda x: x[:SUB], batch))
  saved = cost(plain, params, batch, indices) - cost(reusing, params, batch, indices)
  # One forward over b, less the gather of the chosen rows' activations.
  assert 0.7 * forward_sub < saved <= forward_sub


def test_examples_that_interact_are_refused():
  mesh = sharding.make_mesh(1)
  w = jnp.ones((3, 4))

  def attends_across_the_batch(p, x):  # Each output row mixes every example: [B, B] residual.
    h = x @ p
    return jax.nn.softmax(h @ h.T) @ h

  x = jnp.arange(SUPER * 3, dtype=jnp.float32).reshape(SUPER, 3) / 100
  indices = jnp.arange(SUB)
  _, full_vjp = jax.vjp(lambda p: attends_across_the_batch(p, x), w)
  with pytest.raises(NotImplementedError, match='reuse_scoring_forward=False'):
    forward_reuse.sub_batch_vjp(attends_across_the_batch, w, full_vjp, x[:SUB], indices, mesh,
                                full_size=SUPER)
