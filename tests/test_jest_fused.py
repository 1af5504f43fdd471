"""JEST's fused chunked sampler (jest._Accumulated.update written so that XLA fuses each block's
matmul, loss and row reduction): the same indices as the unfused sampler it replaced, and
working memory O(B + n d) instead of O(B n)."""
import functools
import itertools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from big_vision_style.selection import jest
from big_vision_style import sharding


def unfused_update(self, state, models, chunk_models, positions, chunk):
  """The sampler's update before the fused one (git 016547b, verbatim): [B/D, n] blocks masked
  for the positive pairs, jax.nn.softplus / logsumexp, the text side as a transposed product."""
  if self.loss == 'sigmoid':
    positive = positions[:, None] == chunk[None, :]
    total = state['sum']
    for sign, e, c in zip(self.signs, models, chunk_models):
      as_image = jest._pair_losses(jest._logits(e, e.image, c.text), positive)  # S[i, k]
      as_text = jest._pair_losses(jest._logits(e, c.image, e.text).T, positive)  # S[k, i]
      total = total + sign * jnp.sum(as_image + as_text, axis=1)
    return {'sum': total}
  i2t, t2i = [], []
  for m, (e, c) in enumerate(zip(models, chunk_models)):
    i2t.append(jnp.logaddexp(state['lse_i2t'][m],
                             jax.nn.logsumexp(jest._logits(e, e.image, c.text), axis=1)))
    t2i.append(jnp.logaddexp(state['lse_t2i'][m],
                             jax.nn.logsumexp(jest._logits(e, c.image, e.text), axis=0)))
  return {'lse_i2t': jnp.stack(i2t), 'lse_t2i': jnp.stack(t2i)}


def problem(seed, size, dim, temperature, bias, noise):
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(size, dim))
  text = image + noise * rng.normal(size=(size, dim))
  unit = lambda x: jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), jnp.float32)
  return jest.Embeddings(unit(image), unit(text), jnp.float32(temperature), jnp.float32(bias))


def sample(mesh, learner, reference, rng, **kwargs):
  fn = jax.jit(lambda l, r, k: jest.sample_joint(l, r, rng=k, mesh=mesh, **kwargs))
  return fn(learner, reference, rng)


# (super-batch, dim, num_selected, num_chunks, gain): SigLIP-like (t = 10, b = -10) learners
# against a noisier reference, the paper's gain of 100 and a gain of 1.
PROBLEMS = [(256, 16, 64, 8, 100.0), (512, 64, 128, 16, 1.0), (1024, 32, 256, 4, 100.0)]


@pytest.mark.parametrize('loss,policy', list(itertools.product(jest.LOSSES, jest.POLICIES)))
def test_fused_sampler_returns_the_unfused_samplers_indices(loss, policy, monkeypatch):
  mesh = sharding.make_mesh(1)
  for seed, (size, dim, num_selected, num_chunks, gain) in enumerate(PROBLEMS):
    learner = problem(seed, size, dim, 10.0, -10.0, 1.0)
    reference = problem(seed + 100, size, dim, 5.0, -2.0, 1.5)
    kwargs = dict(num_selected=num_selected, num_chunks=num_chunks, policy=policy, loss=loss,
                  gain=gain, return_logits=True)
    rng = jax.random.key(seed)
    fused = sample(mesh, learner, reference, rng, **kwargs)
    with monkeypatch.context() as patch:
      patch.setattr(jest._Accumulated, 'update', unfused_update)
      unfused = sample(mesh, learner, reference, rng, **kwargs)
    np.testing.assert_array_equal(fused.chunks, unfused.chunks, err_msg=str((seed, size)))
    np.testing.assert_array_equal(fused.indices, unfused.indices)
    # The conditional logits agree to float32 round-off; -inf exactly where selected.
    a, b = np.asarray(fused.conditional_logits), np.asarray(unfused.conditional_logits)
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=2e-6, atol=2e-5)


def test_fused_sampler_on_8_devices_returns_the_unfused_1_device_indices(monkeypatch):
  learner, reference = problem(7, 512, 32, 10.0, -10.0, 1.0), problem(8, 512, 32, 5.0, -2.0, 1.5)
  rng = jax.random.key(3)
  mesh8 = sharding.make_mesh()
  shard = lambda e: jax.tree.map(
      lambda x: jax.device_put(x, NamedSharding(mesh8, P('data') if x.ndim else P())), e)
  for loss in jest.LOSSES:
    kwargs = dict(num_selected=128, num_chunks=8, loss=loss, gain=100.0)
    fused8 = sample(mesh8, shard(learner), shard(reference), rng, **kwargs)
    with monkeypatch.context() as patch:
      patch.setattr(jest._Accumulated, 'update', unfused_update)
      unfused1 = sample(sharding.make_mesh(1), learner, reference, rng, **kwargs)
    np.testing.assert_array_equal(fused8.chunks, unfused1.chunks, err_msg=loss)


def temp_bytes(super_batch, num_selected, num_chunks, mesh, loss, dim=32):
  spec = jax.ShapeDtypeStruct((super_batch, dim), jnp.float32)
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  emb = jest.Embeddings(spec, spec, scalar, scalar)
  fn = jax.jit(functools.partial(jest.sample_joint, num_selected=num_selected,
                                 num_chunks=num_chunks, mesh=mesh, loss=loss))
  return fn.lower(emb, emb, rng=jax.random.key(0)).compile().memory_analysis().temp_size_in_bytes


def test_fused_sampler_memory_is_linear_in_the_super_batch_not_a_block(monkeypatch):
  # B = 2^19 pairs, b = B / 4 in N = 16 chunks of n = 8192: one [B, n] float32 block, what the
  # unfused sampler held several of, is 16 GiB, 256x this test's 64 MiB budget. Compiled,
  # never run.
  super_batch, num_selected, budget, dim = 1 << 19, 1 << 17, 64 << 20, 32
  n16 = num_selected // 16
  block = 4 * super_batch * n16
  assert block > 200 * budget
  mesh1 = sharding.make_mesh(1)
  for loss in jest.LOSSES:
    temp16 = temp_bytes(super_batch, num_selected, 16, mesh1, loss, dim)
    temp64 = temp_bytes(super_batch, num_selected, 64, mesh1, loss, dim)
    # At most a few dozen float32 [B] vectors (accumulators, the gathered conditional logits,
    # noise, top-k) and the chunk's [n, d] rows (2 models x 2 modalities, and copies).
    assert temp16 < budget, (loss, temp16 / 2 ** 20)
    assert temp16 < 32 * 4 * super_batch + 8 * 4 * n16 * dim, (loss, temp16 / super_batch)
    # Nothing of size B x n: 4x smaller chunks save at most the chunk's rows.
    assert abs(temp16 - temp64) <= 8 * 4 * n16 * dim, (loss, temp16, temp64)
    # The unfused sampler, compiled for the same problem, needs several blocks.
    with monkeypatch.context() as patch:
      patch.setattr(jest._Accumulated, 'update', unfused_update)
      unfused = temp_bytes(super_batch, num_selected, 16, mesh1, loss, dim)
    assert unfused > 1.5 * block > 300 * budget, (loss, unfused / block)
  # Per device, sharding over 8 devices does not add anything (the [B] vectors that every
  # device holds dominate).
  temp8 = temp_bytes(super_batch, num_selected, 16, sharding.make_mesh(), 'sigmoid', dim)
  assert temp8 <= temp_bytes(super_batch, num_selected, 16, mesh1, 'sigmoid', dim)
