"""Image-text pieces of JEST: contrastive losses, the chunked joint sampler (vs the dense B x B
computation, 1 vs 8 devices, memory), independent selection, the Gibbs baseline, the reference
embedding cache, FlexiViT patch resizing, the two-tower model and the image-text evaluators."""
import functools
import itertools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from big_vision_style import contrastive
from big_vision_style import embedding_cache
from big_vision_style.selection import jest
from big_vision_style.selection import jest_gibbs
from big_vision_style import models
from big_vision_style import selection
from big_vision_style import sharding
from big_vision_style.evaluators import retrieval
from big_vision_style.evaluators import zero_shot
from big_vision_style.models import flexi


def normalised(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_embeddings(seed, size=64, dim=8, temperature=5.0, bias=-2.0, noise=1.5):
  """Image and text embeddings that agree more or less per pair, as a half-trained model's."""
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(size, dim))
  text = image + noise * rng.normal(size=(size, dim))
  return jest.Embeddings(jnp.asarray(normalised(image), jnp.float32),
                         jnp.asarray(normalised(text), jnp.float32),
                         jnp.float32(temperature), jnp.float32(bias))


def log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def logsumexp(x, axis=None):
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


# ----- Losses against a direct dense computation -----

def test_siglip_and_clip_losses_match_numpy():
  emb = make_embeddings(0, size=12, dim=5)
  img, txt = np.asarray(emb.image, np.float64), np.asarray(emb.text, np.float64)
  t, b = 7.0, -3.0
  n = len(img)
  sig = np.zeros(n)
  clip_i2t, clip_t2i = np.zeros(n), np.zeros(n)
  for i in range(n):
    for j in range(n):
      z = 1.0 if i == j else -1.0
      sig[i] -= log_sigmoid(z * (t * img[i] @ txt[j] + b))
    row = [t * img[i] @ txt[j] for j in range(n)]
    col = [t * img[j] @ txt[i] for j in range(n)]
    clip_i2t[i] = -row[i] + np.log(np.sum(np.exp(row)))
    clip_t2i[i] = -col[i] + np.log(np.sum(np.exp(col)))
  clip = 0.5 * (clip_i2t + clip_t2i)
  np.testing.assert_allclose(contrastive.sigmoid_loss_per_example(img, txt, t, b), sig, rtol=1e-5)
  np.testing.assert_allclose(contrastive.sigmoid_loss(img, txt, t, b), sig.mean(), rtol=1e-5)
  np.testing.assert_allclose(contrastive.softmax_loss_per_example(img, txt, t), clip, rtol=1e-5)
  np.testing.assert_allclose(contrastive.softmax_loss(img, txt, t, b), clip.mean(), rtol=1e-5)
  np.testing.assert_allclose(contrastive.per_example_loss('sigmoid', img, txt, t, b), sig,
                             rtol=1e-5)
  pair = -log_sigmoid(t * np.sum(img * txt, 1) + b)
  np.testing.assert_allclose(contrastive.positive_pair_sigmoid_loss(img, txt, t, b), pair,
                             rtol=1e-5)
  # SigLIP's loss falls as the pairs align: a perfectly aligned batch is cheaper.
  assert contrastive.sigmoid_loss(img, img, t, b) < contrastive.sigmoid_loss(img, txt, t, b)
  with pytest.raises(ValueError, match='Unknown contrastive loss'):
    contrastive.per_example_loss('hinge', img, txt, t, b)
  with pytest.raises(ValueError, match='same N and d'):
    contrastive.sigmoid_loss(img, txt[:5], t, b)


# ----- The chunked sampler against the dense B x B matrix -----

def dense_model_logits(emb):
  img, txt = np.asarray(emb.image, np.float64), np.asarray(emb.text, np.float64)
  return float(emb.temperature) * img @ txt.T + float(emb.bias)


def dense_conditional_logits(models_and_signs, selected, loss):
  """Algorithm 1's conditional logits, from the dense matrices, for every candidate."""
  size = dense_model_logits(models_and_signs[0][1]).shape[0]
  out = np.zeros(size)
  for sign, emb in models_and_signs:
    logits = dense_model_logits(emb)
    if loss == 'sigmoid':
      z = 2 * np.eye(size) - 1
      m = -log_sigmoid(z * logits)  # M[i, j]
      out += sign * (np.diag(m) + m[selected].sum(0) + m[:, selected].sum(1))
    else:
      for i in range(size):
        batch = [i] + [k for k in selected if k != i]
        i2t = logsumexp(logits[i, batch]) - logits[i, i]
        t2i = logsumexp(logits[batch, i]) - logits[i, i]
        out[i] += sign * 0.5 * (i2t + t2i)
  out[list(selected)] = -np.inf
  return out


def dense_algorithm1(models_and_signs, num_selected, num_chunks, rng, loss, gain):
  keys = jax.random.split(rng, num_chunks)
  n = num_selected // num_chunks
  selected = []
  for key in keys:
    logits = dense_conditional_logits(models_and_signs, selected, loss).astype(np.float32)
    chunk = selection.select_indices(gain * jnp.asarray(logits), n, key)
    selected += np.asarray(chunk).tolist()
  return np.sort(selected)


SIGNED = {'learnability': lambda l, r: [(1.0, l), (-1.0, r)],
          'easy_reference': lambda l, r: [(-1.0, r)],
          'hard_learner': lambda l, r: [(1.0, l)]}


def jitted_sampler(mesh, **kwargs):
  return jax.jit(lambda l, r, rng: jest.sample_joint(l, r, rng=rng, mesh=mesh, **kwargs))


@pytest.mark.parametrize('loss,policy', [('sigmoid', 'learnability'), ('softmax', 'learnability'),
                                         ('sigmoid', 'easy_reference'),
                                         ('softmax', 'hard_learner')])
def test_chunked_logits_and_choice_equal_dense_matrix(loss, policy):
  learner, reference = make_embeddings(0, size=48), make_embeddings(1, size=48)
  num_selected, num_chunks, gain = 16, 4, 3.0
  rng = jax.random.key(5)
  sampler = jitted_sampler(sharding.make_mesh(1), num_selected=num_selected,
                           num_chunks=num_chunks, policy=policy, loss=loss, gain=gain,
                           return_logits=True)
  got = sampler(learner, reference, rng)
  signed = SIGNED[policy](learner, reference)
  chunks = np.asarray(got.chunks)
  assert chunks.shape == (num_chunks, num_selected // num_chunks)
  for c in range(num_chunks):
    # The logits for chunk c, given the chunks the sampler itself drew before it.
    expected = dense_conditional_logits(signed, chunks[:c].reshape(-1).tolist(), loss)
    logits = np.asarray(got.conditional_logits[c])
    np.testing.assert_array_equal(np.isinf(logits), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(logits[finite], expected[finite], rtol=1e-4, atol=1e-4)
  if loss == 'softmax':  # With nothing selected, a batch-of-one CLIP loss is 0: uniform start.
    np.testing.assert_allclose(got.conditional_logits[0], 0.0, atol=1e-5)
  expected_indices = dense_algorithm1(signed, num_selected, num_chunks, rng, loss, gain)
  np.testing.assert_array_equal(got.indices, expected_indices)
  np.testing.assert_array_equal(got.indices, np.sort(chunks.reshape(-1)))
  assert len(set(np.asarray(got.indices).tolist())) == num_selected


def test_one_chunk_is_independent_selection_on_the_diagonal():
  learner, reference = make_embeddings(2), make_embeddings(3)
  rng, mesh = jax.random.key(1), sharding.make_mesh(1)
  joint = jitted_sampler(mesh, num_selected=16, num_chunks=1, gain=4.0)(learner, reference, rng)
  independent = jest.select_independent(learner, reference, num_selected=16, gain=4.0,
                                        rng=jax.random.split(rng, 1)[0])
  np.testing.assert_array_equal(joint.indices, independent)
  # Independent selection is selection.select_indices on the diagonal of S.
  diag = np.diag(np.asarray(jest.dense_score_matrix(learner, reference)))
  np.testing.assert_allclose(jest.diagonal_scores(learner, reference), diag, rtol=1e-5,
                             atol=1e-6)
  topk = jest.select_independent(learner, reference, num_selected=5, rng=rng, method='topk')
  np.testing.assert_array_equal(topk, np.sort(np.argsort(-diag)[:5]))


def test_batch_learnability_is_the_sub_matrix_sum():
  learner, reference = make_embeddings(2, size=20), make_embeddings(3, size=20)
  idx = np.array([1, 4, 7, 8, 15])
  dense = np.asarray(jest.dense_score_matrix(learner, reference))
  np.testing.assert_allclose(jest.batch_learnability(learner, reference, idx),
                             dense[np.ix_(idx, idx)].sum(), rtol=1e-5)
  np.testing.assert_allclose(jest_gibbs.learnability(dense, idx), dense[np.ix_(idx, idx)].sum(),
                             rtol=1e-5)


@pytest.mark.parametrize('loss', ['sigmoid', 'softmax'])
def test_8_device_selection_equals_1_device(loss):
  learner, reference = make_embeddings(4, size=128), make_embeddings(5, size=128)
  rng = jax.random.key(11)
  kwargs = dict(num_selected=32, num_chunks=4, loss=loss, gain=2.0, return_logits=True)
  mesh8, mesh1 = sharding.make_mesh(), sharding.make_mesh(1)
  shard = lambda e, mesh: jax.tree.map(
      lambda x: jax.device_put(x, NamedSharding(mesh, P('data') if x.ndim else P())), e)
  got8 = jitted_sampler(mesh8, **kwargs)(shard(learner, mesh8), shard(reference, mesh8), rng)
  got1 = jitted_sampler(mesh1, **kwargs)(learner, reference, rng)
  np.testing.assert_array_equal(got8.indices, got1.indices)
  np.testing.assert_array_equal(got8.chunks, got1.chunks)
  a, b = np.asarray(got8.conditional_logits), np.asarray(got1.conditional_logits)
  np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
  np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-5, atol=1e-5)


def sampler_temp_bytes(super_batch, num_selected, num_chunks, mesh, dim=32, loss='sigmoid'):
  spec = jax.ShapeDtypeStruct((super_batch, dim), jnp.float32)
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  emb = jest.Embeddings(spec, spec, scalar, scalar)
  fn = jax.jit(functools.partial(jest.sample_joint, num_selected=num_selected,
                                 num_chunks=num_chunks, mesh=mesh, loss=loss))
  compiled = fn.lower(emb, emb, rng=jax.random.key(0)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_sampler_memory_stays_far_below_the_dense_matrix():
  # B = 65536 with f = 0.75: one dense B x B float32 matrix is 16 GiB per model, far beyond
  # this test's 2 GiB budget; the sampler does not even hold a [B, b / N] block (XLA fuses each
  # block into its row reduction; test_jest_fused.py checks O(B + n d)). Compiled, never run.
  super_batch, num_selected, budget = 65536, 16384, 2 << 30
  dense = 4 * super_batch ** 2
  assert dense > 4 * budget
  mesh1 = sharding.make_mesh(1)
  for loss in ('sigmoid', 'softmax'):
    temp16 = sampler_temp_bytes(super_batch, num_selected, 16, mesh1, loss=loss)
    temp64 = sampler_temp_bytes(super_batch, num_selected, 64, mesh1, loss=loss)
    block16 = 4 * super_batch * num_selected // 16  # One [B, n] float32 block: 256 MiB.
    assert temp16 < budget and temp16 < dense / 10, (loss, temp16)
    # Less than one block (two models, two directions), not a B x b or B x B buffer.
    assert temp16 < block16 / 4, (loss, temp16 / block16)
    # Nothing grows with the chunk size beyond the chunk's rows.
    assert temp16 < 1.5 * temp64, (loss, temp64, temp16)
  # Sharded over 8 devices, no device holds more than one device alone does.
  temp8 = sampler_temp_bytes(super_batch, num_selected, 16, sharding.make_mesh())
  assert temp8 <= sampler_temp_bytes(super_batch, num_selected, 16, mesh1)


def test_sampler_errors():
  learner, reference = make_embeddings(0, size=64), make_embeddings(1, size=64)
  mesh, rng = sharding.make_mesh(), jax.random.key(0)
  kw = dict(rng=rng, mesh=mesh)
  with pytest.raises(ValueError, match='num_chunks=3 does not divide the sub-batch of 16'):
    jest.sample_joint(learner, reference, num_selected=16, num_chunks=3, **kw)
  with pytest.raises(ValueError, match='super-batch of 60 is not divisible by the 8 devices'):
    short = jest.Embeddings(learner.image[:60], learner.text[:60], 1.0, 0.0)
    jest.sample_joint(short, short, num_selected=12, num_chunks=2, **kw)
  with pytest.raises(ValueError, match='Unknown JEST scoring policy'):
    jest.sample_joint(learner, reference, num_selected=16, num_chunks=2, policy='rho', **kw)
  with pytest.raises(ValueError, match='Unknown JEST loss'):
    jest.sample_joint(learner, reference, num_selected=16, num_chunks=2, loss='hinge', **kw)
  with pytest.raises(ValueError, match='needs the reference embeddings'):
    jest.sample_joint(learner, None, num_selected=16, num_chunks=2, **kw)
  with pytest.raises(ValueError, match='gain'):
    jest.sample_joint(learner, reference, num_selected=16, num_chunks=2, gain=0.0, **kw)
  with pytest.raises(ValueError, match='Cannot select 65'):
    jest.sample_joint(learner, reference, num_selected=65, num_chunks=1, **kw)
  with pytest.raises(ValueError, match='different sizes'):
    jest.sample_joint(learner, make_embeddings(1, size=32), num_selected=16, num_chunks=2, **kw)
  # Sizes from (b, f, N, devices), as a config gives them.
  assert jest.sizes(256, 0.8, 16, 8) == (1280, 16)
  for bad in (-0.1, 1.0):
    with pytest.raises(ValueError, match=r'filter_ratio.*\[0, 1\)'):
      jest.sizes(256, bad, 16)
  with pytest.raises(ValueError, match='num_chunks=5 does not divide'):
    jest.sizes(256, 0.5, 5)
  with pytest.raises(ValueError, match='not divisible by the 3 devices'):
    jest.sizes(256, 0.5, 4, num_devices=3)


# ----- Gibbs baseline -----

def test_gibbs_sampler_matches_the_exact_sub_batch_distribution():
  # B = 6, b = 3: 20 sub-batches, p(X) ~ exp(gain * sum_{i,j in X} S[i, j]) by enumeration.
  scores = np.random.default_rng(0).normal(size=(6, 6)).astype(np.float32)
  gain, size, k = 0.7, 6, 3
  subsets = list(itertools.combinations(range(size), k))
  logp = np.array([gain * scores[np.ix_(s, s)].sum() for s in subsets])
  p = np.exp(logp - logp.max())
  p /= p.sum()
  chains = jax.jit(jax.vmap(lambda r: jest_gibbs.gibbs_sample(scores, k, r, num_sweeps=6,
                                                              gain=gain)))
  final, trace = chains(jax.random.split(jax.random.key(0), 4000))
  index = {s: i for i, s in enumerate(subsets)}
  freq = np.bincount([index[tuple(row)] for row in np.asarray(final).tolist()],
                     minlength=len(subsets)) / len(final)
  assert np.abs(freq - p).max() < 0.03, np.c_[freq, p]
  assert trace.shape == (4000, 6)
  np.testing.assert_allclose(trace[:, -1], [scores[np.ix_(r, r)].sum() for r in np.asarray(final)],
                             rtol=1e-5, atol=1e-5)


def test_joint_selection_finds_more_learnable_batches_than_independent():
  # The learner (better aligned) and the reference disagree about the *negative* pairs too, so
  # S has structure off its diagonal, which independent selection cannot see.
  learner, reference = make_embeddings(6, size=96, noise=0.5), make_embeddings(7, size=96)
  dense = np.asarray(jest.dense_score_matrix(learner, reference))
  mesh, gain = sharding.make_mesh(1), 1.0

  @jax.jit
  @jax.vmap
  def both(rng):
    joint = jest.sample_joint(learner, reference, num_selected=24, num_chunks=8, gain=gain,
                              rng=rng, mesh=mesh)
    independent = jest.select_independent(learner, reference, num_selected=24, rng=rng,
                                          gain=gain)
    return (jest_gibbs.learnability(dense, joint.indices),
            jest_gibbs.learnability(dense, independent))

  joint_l, indep_l = both(jax.random.split(jax.random.key(0), 20))
  gibbs_final, _ = jest_gibbs.gibbs_sample(dense, 24, jax.random.key(1), num_sweeps=30,
                                           gain=gain)
  assert np.mean(joint_l) > np.mean(indep_l), (np.mean(joint_l), np.mean(indep_l))
  # The Gibbs chain targets the same distribution; the chunked sampler gets close to its level.
  gibbs_l = float(jest_gibbs.learnability(dense, gibbs_final))
  assert np.mean(joint_l) > np.mean(indep_l) + 0.5 * (gibbs_l - np.mean(indep_l)) - 1.0


# ----- Reference embedding cache -----

class PairSource:
  """A tiny in-memory image-text source (ids not starting at 0, as in real splits)."""

  def __init__(self, size=32, seed=0):
    rng = np.random.default_rng(seed)
    self.images = rng.normal(size=(size, 16, 16, 3)).astype(np.float32)
    self.texts = rng.integers(1, 20, size=(size, 6)).astype(np.int32)
    self.texts[:, 4:] = 0  # Padding.
    self.ids = 1000 + np.arange(size, dtype=np.int64)
    self.num_classes = 1

  def __len__(self):
    return len(self.ids)

  def __getitem__(self, i):
    return {'image': self.images[i], 'text': self.texts[i], 'label': np.int32(0),
            'id': self.ids[i]}


def random_params(model, *args, seed=0, **kwargs):
  """Random parameters of `model`'s structure. Compiling a model's init for 8 simulated CPU
  devices takes seconds; tests that only need *some* parameters fill the shapes with noise."""
  shapes = jax.eval_shape(functools.partial(model.init, **kwargs), jax.random.key(0), *args)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


def tiny_two_towers():
  return models.get_model('two_towers').Model(
      embed_dim=8, image=dict(variant='mu/8'), text=dict(variant='mu', vocab_size=20))


def test_reference_embedding_cache_gives_the_live_selection(tmp_path):
  source, mesh = PairSource(), sharding.make_mesh()
  model = tiny_two_towers()
  params = random_params(model, source.images[:1], source.texts[:1])['params']
  learner = make_embeddings(3, size=32)
  cache = embedding_cache.compute(model, params, source, lambda ex: ex, mesh, batch_size=32)
  path = str(tmp_path / 'reference_embeddings.npz')
  embedding_cache.save(path, cache)
  loaded = embedding_cache.load(path)
  assert loaded.dim == 8
  assert loaded.temperature == pytest.approx(np.exp(params['t'][0]), rel=1e-6)
  assert loaded.bias == pytest.approx(params['b'][0], rel=1e-6)
  # The super-batch arrives shuffled; the cache is looked up by id, through the source wrapper.
  order = np.random.default_rng(1).permutation(len(source))
  cached_source = embedding_cache.with_cached_embeddings(source, loaded)
  values = np.stack([cached_source[i][embedding_cache.KEY] for i in order])
  cached = loaded.embeddings(values)
  zimg, ztxt, out = jax.jit(model.apply)({'params': params}, source.images[order],
                                         source.texts[order])
  live = jest.Embeddings(zimg, ztxt, out['t'], out['b'])
  np.testing.assert_allclose(cached.image, live.image, atol=1e-5)
  np.testing.assert_allclose(cached.text, live.text, atol=1e-5)
  sampler = jitted_sampler(mesh, num_selected=8, num_chunks=4, gain=5.0)
  for seed in range(3):
    rng = jax.random.key(seed)
    np.testing.assert_array_equal(sampler(learner, cached, rng).indices,
                                  sampler(learner, live, rng).indices)
  with pytest.raises(KeyError, match='not in the reference embedding cache'):
    loaded.lookup([5])
  with pytest.raises(FileNotFoundError, match='No reference embedding cache'):
    embedding_cache.load(str(tmp_path / 'missing.npz'))


# ----- FlexiViT patch resizing -----

def test_flexi_patch_sizes_token_counts_and_identity():
  model = models.get_model('vit').Model(num_classes=4, variant='mu/8')
  images = jax.random.normal(jax.random.key(0), (2, 48, 48, 3))
  params = random_params(model, images)
  # Parameters are those of the native patch, whatever patch the init call used.
  params16 = random_params(model, images, patch_size=(16, 16))
  assert jax.tree.map(lambda a: a.shape, params) == jax.tree.map(lambda a: a.shape, params16)
  assert params['params']['embedding']['kernel'].shape == (8, 8, 3, 32)
  for patch, tokens in ((4, 144), (12, 16), (16, 9), (24, 4)):
    logits_p, out_p = jax.eval_shape(
        functools.partial(model.apply, patch_size=(patch, patch)), params, images)
    assert out_p['encoded'].shape == (2, (48 // patch) ** 2, 32) == (2, tokens, 32)
    assert logits_p.shape == (2, 4)
  # The native size is the identity, bit for bit.
  both = jax.jit(lambda p, x: (model.apply(p, x), model.apply(p, x, patch_size=(8, 8))))
  (logits, out), (logits_p, out_p) = both(params, images)
  np.testing.assert_array_equal(logits_p, logits)
  np.testing.assert_array_equal(out_p['encoded'], out['encoded'])
  kernel = params['params']['embedding']['kernel']
  np.testing.assert_array_equal(flexi.resize_kernel(kernel, (8, 8)), kernel)
  pos = params['params']['pos_embedding']
  np.testing.assert_array_equal(flexi.resize_pos_embedding(pos, (6, 6), (6, 6)), pos)
  # Bilinear kernel resizing is the documented simpler option: same shapes.
  bilinear = models.get_model('vit').Model(num_classes=4, variant='mu/8', flexi_resize='bilinear')
  out_b = jax.eval_shape(functools.partial(bilinear.apply, patch_size=(16, 16)), params, images)
  assert out_b[1]['encoded'].shape == (2, 9, 32)
  with pytest.raises(ValueError, match='must both divide'):
    jax.eval_shape(functools.partial(model.apply, patch_size=(10, 10)), params, images)
  with pytest.raises(ValueError, match='Unknown patch-embedding resize'):
    flexi.resize_kernel(kernel, (16, 16), 'nearest')


def test_pi_resize_keeps_tokens_of_resized_patches():
  # FlexiViT's PI-resize: a patch upsampled to the new size gives the token the original
  # patch gave with the original kernel, <B x, w'> = <x, w>, exactly (B has full column rank).
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(8, 8, 3, 5)).astype(np.float32)
  patch = rng.normal(size=(8, 8, 3)).astype(np.float32)
  for new in (12, 16):
    resized_kernel = np.asarray(flexi.resize_kernel(jnp.asarray(kernel), (new, new)))
    upsampled = np.asarray(jax.image.resize(patch, (new, new, 3), 'bilinear', antialias=False))
    np.testing.assert_allclose(np.einsum('hwc,hwcd->d', upsampled, resized_kernel),
                               np.einsum('hwc,hwcd->d', patch, kernel), rtol=1e-4, atol=1e-4)


# ----- Two towers -----

def test_two_towers_embeddings_and_siglip_init():
  model = tiny_two_towers()
  images = jnp.ones((3, 16, 16, 3))
  texts = jnp.array([[3, 4, 5, 0], [6, 0, 0, 0], [7, 8, 9, 10]])
  # SigLIP's initial temperature and bias (the only parameters an embedding-less call makes).
  init_tb = jax.jit(lambda r: model.init(r, None, None))(jax.random.key(0))['params']
  np.testing.assert_allclose(init_tb['t'], np.log(10.0), rtol=1e-6)  # t' = log 10.
  np.testing.assert_allclose(init_tb['b'], -10.0)
  variables = random_params(model, images, texts)
  variables['params'].update(init_tb)
  assert set(variables['params']) == {'img', 'txt', 't', 'b'}
  zimg, ztxt, out = jax.jit(model.apply)(variables, images, texts)
  assert zimg.shape == ztxt.shape == (3, 8)
  np.testing.assert_allclose(np.linalg.norm(zimg, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(ztxt, axis=1), 1.0, rtol=1e-5)
  assert np.unique(np.round(np.asarray(ztxt), 5), axis=0).shape[0] == 3  # Not a zero head.
  np.testing.assert_allclose(out['t'], 10.0, rtol=1e-6)
  np.testing.assert_allclose(out['b'], -10.0)
  only_text = jax.jit(lambda v, t: model.apply(v, None, t))(variables, texts)
  assert only_text[0] is None
  np.testing.assert_allclose(only_text[1], ztxt, atol=1e-6)
  # Flexi patch size passes through to the image tower.
  flex = jax.eval_shape(lambda v, i: model.apply(v, i, None, patch_size=(4, 4)), variables,
                        images)
  assert flex[2]['img/encoded'].shape == (3, 16, 32)
  text_model = models.get_model('text_transformer').Model(num_classes=None, variant='mu',
                                                          vocab_size=20, pool_type='last')
  tv = random_params(text_model, texts)
  apply_text = jax.jit(text_model.apply)
  _, tout = apply_text(tv, texts)
  # 'last' pools the last non-padding token (to float rounding: XLA may compute the pooled
  # output and the sequence in different fusions, which round differently; any other token
  # differs by far more than rtol).
  np.testing.assert_allclose(tout['pre_logits'][0], tout['encoded'][0, 2], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(tout['pre_logits'][2], tout['encoded'][2, 3], rtol=1e-5, atol=1e-7)
  assert not np.allclose(tout['pre_logits'][0], tout['encoded'][0, 1], rtol=1e-3)
  # Padding is masked out of attention and pooling: what the padding positions hold (here,
  # their position embeddings) cannot change a text's representation.
  changed = jax.tree.map(lambda x: x, tv)  # A copy.
  noise = jax.random.normal(jax.random.key(1), tv['params']['pos_embedding'][0, 3:].shape)
  changed['params']['pos_embedding'] = jnp.asarray(tv['params']['pos_embedding']).at[0, 3:].add(
      noise)
  _, cout = apply_text(changed, texts)
  np.testing.assert_allclose(cout['pre_logits'][:2], tout['pre_logits'][:2], atol=1e-6)
  assert np.abs(cout['pre_logits'][2] - tout['pre_logits'][2]).max() > 1e-3  # No padding.
  with pytest.raises(ValueError, match='Unknown text transformer variant'):
    models.get_model('text_transformer').Model(variant='mu/8')


# ----- Evaluators on hand-made embeddings -----

def test_zero_shot_and_recall_on_hand_made_embeddings():
  eye = np.eye(4, dtype=np.float32)
  # Two prompts per class, both close to the class axis; their mean is the class axis.
  prompts = np.concatenate([eye + 0.1 * np.roll(eye, 1, 0), eye - 0.1 * np.roll(eye, 1, 0)])
  classes = zero_shot.class_embeddings(prompts, [0, 1, 2, 3] * 2, 4)
  np.testing.assert_allclose(classes, eye, atol=1e-6)
  images = normalised(np.array([[1, .2, 0, 0], [0, 0, 1, .1], [0, .9, 0, .5], [.3, 0, 0, 1]]))
  np.testing.assert_array_equal(zero_shot.predict(images, classes), [0, 2, 1, 3])
  assert zero_shot.accuracy(images, classes, [0, 2, 1, 0]) == 0.75
  with pytest.raises(ValueError, match='no prompt for classes'):
    zero_shot.class_embeddings(prompts[:3], [0, 1, 2], 4)
  # Retrieval: text 2 is closer to image 1 than text 1 is; image 3's text is shared by image 0
  # (identical captions: either counts).
  img = normalised(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0.05, 0]]))
  txt = normalised(np.array([[1, 0, 0], [0, 1, 1], [0, 1.2, 1], [1, 0, 0]]))
  assert retrieval.recall_at_1(img, txt) == (0.25, 0.5)
  assert retrieval.recall_at_1(img, txt, groups=[0, 1, 2, 0]) == (0.5, 0.75)
  assert retrieval.recall_at_1(img, img, chunk=3) == (1.0, 1.0)


class EmbeddingSource:
  """Records whose 'image' and 'text' *are* the embeddings (the model below is the identity)."""

  def __init__(self, images, texts, labels):
    self.images, self.texts, self.labels = images, texts, labels
    self.ids = np.arange(len(images))
    self.num_classes = 3

  def __len__(self):
    return len(self.ids)

  def __getitem__(self, i):
    return {'image': self.images[i], 'text': self.texts[i], 'label': self.labels[i],
            'id': self.ids[i]}


def test_evaluators_end_to_end_with_an_identity_model():
  rng = np.random.default_rng(0)
  labels = np.arange(20, dtype=np.int32) % 3
  images = (np.eye(3)[labels] + 0.3 * rng.normal(size=(20, 3))).astype(np.float32)
  images[-1] = np.eye(3)[(labels[-1] + 1) % 3]  # One image that zero-shot must get wrong.
  texts = images.copy()
  texts[:5] = texts[[1, 0, 2, 3, 4]]  # Two swapped captions: 18/20 retrieved correctly.

  def predict_fn(params, image, text):
    del params
    norm = lambda x: None if x is None else x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    return norm(image), norm(text)

  class Tokenizer:  # Prompt 'class k' -> the class axis.
    def batch(self, prompts):
      return np.stack([np.eye(3, dtype=np.float32)[int(p[-1])] for p in prompts])

  source = EmbeddingSource(images, texts, labels)
  mesh = sharding.make_mesh()
  zs = zero_shot.Evaluator(predict_fn, source=source, preprocess_fn=lambda ex: ex, mesh=mesh,
                           batch_size=8, prompts=[['class 0'], ['class 1'], ['class 2']],
                           tokenizer=Tokenizer())
  expected = np.mean(np.argmax(images, 1) == labels)
  assert dict(zs.run(None))['accuracy'] == pytest.approx(expected)
  assert expected < 1.0
  ret = retrieval.Evaluator(predict_fn, source=source, preprocess_fn=lambda ex: ex, mesh=mesh,
                            batch_size=8)
  metrics = dict(ret.run(None))
  expected = retrieval.recall_at_1(normalised(images), normalised(texts))
  assert (metrics['i2t_recall_at_1'], metrics['t2i_recall_at_1']) == pytest.approx(expected)
  prefix = retrieval.Evaluator(predict_fn, source=source, preprocess_fn=lambda ex: ex, mesh=mesh,
                               batch_size=8, max_examples=16)
  assert dict(prefix.run(None))['i2t_recall_at_1'] == pytest.approx(
      retrieval.recall_at_1(normalised(images[:16]), normalised(texts[:16]))[0])
  with pytest.raises(ValueError, match=r'max_examples=21 must be in \[1, 20\]'):
    retrieval.Evaluator(predict_fn, source=source, preprocess_fn=lambda ex: ex, mesh=mesh,
                        max_examples=21)
  with pytest.raises(ValueError, match='class prompts and a tokenizer'):
    zero_shot.Evaluator(predict_fn, source=source, preprocess_fn=lambda ex: ex, mesh=mesh)


def test_sampler_flops_are_counted_per_chunk_on_1_and_8_devices():
  # flops.py counts scan bodies once per iteration, including scans inside shard_map that use
  # collectives (the sampler's): the measured cost is the analytic (N - 1) chunk updates of
  # 2 models x 2 directions x [B, d] @ [d, n] matmuls, plus elementwise work.
  from big_vision_style import flops  # pylint: disable=g-import-not-at-top
  size, dim, num_selected, num_chunks = 512, 32, 128, 8
  analytic = 8 * (num_chunks - 1) * size * (num_selected // num_chunks) * dim
  measured = {}
  for devices in (1, 8):
    spec = jax.ShapeDtypeStruct((size, dim), jnp.float32)
    emb = jest.Embeddings(spec, spec, jax.ShapeDtypeStruct((), jnp.float32),
                          jax.ShapeDtypeStruct((), jnp.float32))
    fn = jax.jit(functools.partial(jest.sample_joint, num_selected=num_selected,
                                   num_chunks=num_chunks, mesh=sharding.make_mesh(devices)))
    _, cost = flops.compile_and_measure(fn, emb, emb, rng=jax.random.key(0))
    assert cost.uncorrected_loops == 0 and cost.loop_correction > 0
    measured[devices] = cost.flops
  assert analytic < measured[1] < 1.5 * analytic, measured[1] / analytic
  # On 8 devices the matmuls split 8 ways; only the O(B) noise and top-k run on every device.
  assert measured[8] == pytest.approx(measured[1], rel=0.2)
