"""FLOP measurement: loop correction, per-device scaling, agreement with the ViT formula."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from big_vision_style import flops
from big_vision_style import sharding
from big_vision_style.models import vit


def _chain(x, w, n=10):
  for _ in range(n):
    x = jnp.tanh(x @ w)
  return x


def _scanned(x, w, n=10):
  return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=n)[0]


def test_scan_bodies_are_counted_trip_count_times():
  x, w = jnp.ones((64, 128)), jnp.ones((128, 128))
  matmuls = 10 * 2 * 64 * 128 * 128
  _, unrolled = flops.compile_and_measure(jax.jit(_chain), x, w)
  _, scanned = flops.compile_and_measure(jax.jit(_scanned), x, w)
  assert scanned.xla_flops < 0.2 * matmuls  # XLA alone counts the body once...
  assert scanned.flops == pytest.approx(matmuls, rel=0.01)  # ...the correction fixes it.
  assert unrolled.flops == pytest.approx(matmuls, rel=0.01)
  # Nested scans and gradients through scans.
  nested = jax.jit(lambda x, w: jax.lax.scan(
      lambda c, _: (_scanned(c, w, 5), None), x, None, length=3)[0])
  _, cost = flops.compile_and_measure(nested, x, w)
  assert cost.flops == pytest.approx(15 * 2 * 64 * 128 * 128, rel=0.01)
  # A scanned backward pass runs 3 matmuls per step: forward, grad wrt w, grad wrt the carry
  # (XLA can drop the first layer's carry grad only when unrolled, so we do not compare those).
  grad = jax.jit(jax.grad(lambda x, w: _scanned(x, w).sum(), argnums=1))
  assert flops.compile_and_measure(grad, x, w)[1].flops == pytest.approx(3 * matmuls, rel=0.02)


def test_sharded_program_counts_all_devices():
  mesh = sharding.make_mesh()
  x = jax.device_put(jnp.ones((64, 128)), jax.NamedSharding(mesh, jax.P('data')))
  w = jnp.ones((128, 128))
  _, sharded = flops.compile_and_measure(jax.jit(_chain), x, w)
  assert sharded.num_devices == 8
  assert sharded.xla_flops == pytest.approx(sharded.flops / 8)
  assert sharded.flops == pytest.approx(10 * 2 * 64 * 128 * 128, rel=0.01)


@pytest.mark.parametrize('variant', ['B/16', 'S/16'])
def test_vit_224_measured_matches_analytic_within_10_percent(variant):
  """Lowering only (no compile, no execution): forward and train step vs the formula."""
  batch = 2
  model = vit.Model(num_classes=1000, variant=variant)
  images = jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(images.shape)))
  forward = jax.jit(lambda p, x: model.apply(p, x)[0])
  measured_fwd = flops.measure_lowered(forward, params, images).flops
  analytic_fwd = batch * vit.analytic_forward_flops(image_size=224, num_classes=1000,
                                                    variant=variant)
  assert measured_fwd == pytest.approx(analytic_fwd, rel=0.10)

  tx = optax.adamw(1e-3)
  opt = jax.eval_shape(tx.init, params)

  def train_step(p, o, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply(p, x)[0], y).mean()
    g = jax.grad(loss)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o

  measured_train = flops.measure_lowered(jax.jit(train_step), params, opt, images, labels).flops
  # Convention: a training step costs 3x a forward pass (forward + 2x for the backward).
  assert measured_train == pytest.approx(3 * analytic_fwd, rel=0.10)


def test_counter_categories_and_state():
  counter = flops.FlopCounter()
  counter.add('learner_train', 3.0)
  counter.add('scoring', 1.0)
  restored = flops.FlopCounter(counter.state_dict())
  assert restored.metrics()['flops/total'] == 4.0
  assert restored.metrics()['flops/learner'] == 3.0
  with pytest.raises(KeyError):
    counter.add('eval', 1.0)
  np.testing.assert_equal(sorted(counter.state_dict()), sorted(flops.CATEGORIES))
