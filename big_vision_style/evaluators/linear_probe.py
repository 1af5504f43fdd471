"""Linear-probe accuracy: logistic regression on frozen features, fitted to convergence.

The standard measure of a self-supervised representation (BYOL, ReLA's Table 1): embed a
labelled fit split (by default `train`) and the evaluation split with the frozen encoder once,
standardise the features with the fit split's statistics, fit a multinomial logistic
regression with L2 penalty `l2` on the whole fit set (full batch, L-BFGS for `steps`
iterations: deterministic, no learning rate to tune), and report the accuracy on the
evaluation split.

  config.evals.probe = dict(type='linear_probe', split='test', fit_split='train',
                            fit_examples=10_000, log_steps=1000)

`fit_examples` fits on a seeded random subset of the fit split (cheaper; the full 50k of
Fashion-MNIST changes the accuracy by a few tenths of a point at most for small features).
The trainer passes this evaluator the encoder's pooled features, not logits (`USES_FEATURES`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from big_vision_style import losses
from big_vision_style.datasets import base
from big_vision_style.evaluators import batching

USES_FEATURES = True  # The trainer passes `features_fn(params, images) -> [N, D]`.


def fit_logistic_regression(x, y, *, num_classes: int, l2: float, steps: int):
  """(W [D+1, K] with the bias in the last row, final training loss); full-batch L-BFGS."""
  x = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)

  def loss(w):
    xent = jnp.mean(losses.softmax_xent(x @ w, y, num_classes=num_classes))
    return xent + 0.5 * l2 * jnp.sum(w[:-1] ** 2)  # The bias is not penalised.

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def body(carry, _):
    w, state = carry
    value, grad = value_and_grad(w, state=state)
    updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(w, updates), state), value

  w0 = jnp.zeros((x.shape[1], num_classes), jnp.float32)
  (w, _), values = jax.lax.scan(body, (w0, opt.init(w0)), None, length=steps)
  return w, values[-1]


class Evaluator:

  def __init__(self, features_fn, *, source, fit_source, preprocess_fn, mesh,
               batch_size: int = 1024, fit_examples: int | None = None, l2: float = 1e-4,
               steps: int = 300, seed: int = 0):
    if fit_examples and fit_examples < len(fit_source):
      positions = np.sort(np.random.default_rng(seed).choice(len(fit_source), fit_examples,
                                                             replace=False))
      fit_source = base.Subset(fit_source, positions, name='probe fit subset')
    # Embedded once per evaluation, not kept on device (the fit split may be large).
    self.batches = {name: batching.EvalBatches(s, preprocess_fn=preprocess_fn, mesh=mesh,
                                               batch_size=batch_size, cache=False)
                    for name, s in (('fit', fit_source), ('eval', source))}
    self.num_classes = source.num_classes

    # Features, labels and mask of the whole global batch on every device: every process
    # reads them (in the split's order) also when the batch spans other processes' devices.
    @functools.partial(jax.jit, out_shardings=batching.replicated(mesh))
    def embed(params, batch):
      return features_fn(params, batch['image']), batch['label'], batch['mask']

    self._embed = embed
    self._fit = jax.jit(functools.partial(fit_logistic_regression, num_classes=self.num_classes,
                                          l2=l2, steps=steps))

  def _features(self, params, name):
    feats, labels = [], []
    for batch in self.batches[name]:
      out, label, mask = jax.device_get(self._embed(params, batch))
      feats.append(np.asarray(out)[mask])
      labels.append(np.asarray(label)[mask])
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels)

  def run(self, params):
    # The fit runs on this process's first device alone, on the same numbers in every process.
    fit_x, fit_y = self._features(params, 'fit')
    x, y = self._features(params, 'eval')
    mean, std = fit_x.mean(0), fit_x.std(0) + 1e-6
    fit_x, x = (fit_x - mean) / std, (x - mean) / std
    w, fit_loss = self._fit(jnp.asarray(fit_x), jnp.asarray(fit_y))
    w = np.asarray(w)
    predict = lambda feats: np.argmax(feats @ w[:-1] + w[-1], axis=-1)
    yield 'accuracy', float(np.mean(predict(x) == y))
    yield 'fit_accuracy', float(np.mean(predict(fit_x) == fit_y))
    yield 'fit_loss', float(fit_loss)
