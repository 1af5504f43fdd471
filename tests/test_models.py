"""Models: variant strings, shapes at 28x28 and 224x224, (logits, pre_logits) outputs."""
import jax
import jax.numpy as jnp
import pytest

from big_vision_style import models
from big_vision_style.models import vit


@pytest.mark.parametrize('variant,width,depth', [('mu/7', 32, 1), ('Ti/16', 192, 12),
                                                 ('S/4', 384, 12), ('B/16', 768, 12),
                                                 ('L/14', 1024, 24)])
def test_variant_strings(variant, width, depth):
  cfg = vit.decode_variant(variant)
  assert (cfg['width'], cfg['depth']) == (width, depth)
  assert cfg['patch_size'][0] == int(variant.split('/')[1])


def test_unknown_variant_and_model():
  with pytest.raises(ValueError, match="Unknown ViT variant 'XL'"):
    vit.decode_variant('XL/16')
  with pytest.raises(ValueError, match="Unknown model 'resnet9000'"):
    models.get_model('resnet9000')


@pytest.mark.parametrize('size,variant', [(28, 'Ti/7'), (28, 'S/4'), (224, 'B/16'),
                                          (224, 'L/16')])
def test_vit_shapes(size, variant):
  model = models.get_model('vit').Model(num_classes=10, variant=variant)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
  (logits, out) = jax.eval_shape(lambda p: model.apply(p, jnp.zeros(x.shape)), params)
  width = vit.decode_variant(variant)['width']
  assert logits.shape == (2, 10)
  assert out['pre_logits'].shape == (2, width)
  assert out['encoded'].shape == (2, (size // int(variant.split('/')[1])) ** 2, width)


def test_tok_pooling_and_small_models_run():
  for name, kw in [('vit', dict(variant='mu/7', pool_type='tok')), ('cnn', {})]:
    model = models.get_model(name).Model(num_classes=10, **kw)
    x = jnp.ones((3, 28, 28, 1))
    params = model.init(jax.random.key(0), x)
    logits, out = model.apply(params, x)
    assert logits.shape == (3, 10) and out['pre_logits'].shape[0] == 3


def _loss_and_grads(model, params, inputs, train):
  """Mean squared output (a stand-in loss touching every parameter) and its gradients; jitted,
  as in training (op by op, each test compiled some 250 programs)."""
  def loss(p):
    out = model.apply({'params': p}, *inputs, train=train,
                      rngs={'dropout': jax.random.key(1)} if train else None)
    return jnp.mean(out[0] ** 2) + jnp.mean(out[1]['encoded'] ** 2)
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize('name,kw,make_input', [
    ('vit', dict(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=(7, 7), dropout=0.1),
     lambda: (jax.random.normal(jax.random.key(2), (4, 28, 28, 1)),)),
    ('text_transformer', dict(width=32, depth=2, mlp_dim=64, num_heads=2, vocab_size=50),
     # Padding (0) at the end of some texts: the attention mask goes through the remat too.
     lambda: (jnp.array([[5, 7, 9, 0, 0, 0], [1, 2, 3, 4, 5, 6], [8, 0, 0, 0, 0, 0],
                         [3, 3, 3, 3, 0, 0]], jnp.int32),)),
])
@pytest.mark.parametrize('train', [False, True])
def test_remat_same_loss_and_gradients(name, kw, make_input, train):
  """remat=True (nn.remat around every encoder block) changes memory, not the function: same
  parameter tree, same loss and gradients, with and without dropout."""
  inputs = make_input()
  plain = models.get_model(name).Model(num_classes=8, **kw)
  remat = models.get_model(name).Model(num_classes=8, remat=True, **kw)
  params = jax.jit(plain.init)(jax.random.key(0), *inputs)['params']
  assert (jax.tree.structure(jax.eval_shape(remat.init, jax.random.key(0), *inputs)['params'])
          == jax.tree.structure(params))
  loss_a, grads_a = _loss_and_grads(plain, params, inputs, train)
  loss_b, grads_b = _loss_and_grads(remat, params, inputs, train)
  assert abs(float(loss_a) - float(loss_b)) <= 1e-6 * max(1.0, abs(float(loss_a)))
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    assert jnp.allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads_a))


def test_bf16_matmuls_keep_float32_parameters():
  """dtype_mm='bfloat16': the matmuls run in bf16, the parameters (pos embedding included) and
  the pooled output stay float32, and the output is close to the float32 model's."""
  kw = dict(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=(7, 7))
  x = jax.random.normal(jax.random.key(2), (4, 28, 28, 1))
  f32 = models.get_model('vit').Model(num_classes=8, head_zeroinit=False, **kw)
  bf16 = models.get_model('vit').Model(num_classes=8, head_zeroinit=False,
                                       dtype_mm='bfloat16', remat=True, **kw)
  params = f32.init(jax.random.key(0), x)['params']
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(
      bf16.init(jax.random.key(0), x)['params']))
  (logits_a, out_a), (logits_b, out_b) = (m.apply({'params': params}, x) for m in (f32, bf16))
  assert out_b['pre_logits'].dtype == jnp.float32 and logits_b.dtype == jnp.float32
  assert jnp.allclose(logits_a, logits_b, atol=0.05, rtol=0.05)
  jaxpr = str(jax.make_jaxpr(lambda p: bf16.apply({'params': p}, x))(params))
  assert 'bf16' in jaxpr
