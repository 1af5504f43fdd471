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
