"""Per-example losses. Selection methods need them per example, so reductions happen outside."""
import jax
import jax.numpy as jnp


def softmax_xent(logits, labels, *, num_classes: int, label_smoothing: float = 0.0):
  """Cross-entropy per example, with integer labels and optional label smoothing."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  if label_smoothing:
    onehot = onehot * (1.0 - label_smoothing) + label_smoothing / num_classes
  return -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)
