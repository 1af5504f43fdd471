"""Zero-shot classification of a two-tower model: images against class-name prompts (the ImageNet
zero-shot protocol of CLIP / SigLIP / JEST, on whatever labelled split is configured).

  config.evals.zeroshot = dict(type='zero_shot', split='test', log_steps=500)

Each class is described by several prompts (by default `source.class_prompts`, e.g. 'a photo of
a {synonym}'; else `templates` filled with `class_names` or the source's `class_names`),
tokenized with `source.tokenizer` or the `tokenizer` given (an object or a spec such as
'sentencepiece:<model>', with `max_text_len`). For a classification source other than the
training data, e.g. on TPU:
  config.evals.zeroshot = dict(type='zero_shot', data=dict(name='tfds:imagenet2012'),
                               split='test', class_names=[...], tokenizer='sentencepiece:...')
 the class embedding is the normalised mean of
its prompts' text embeddings (CLIP's prompt ensembling), and an image is assigned the class of
highest cosine similarity. `predict_fn(params, images, texts)` returns the model's
`(zimg, ztxt, ...)` with either input None (two_towers' convention).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_style.evaluators import batching


def class_embeddings(prompt_embeddings, prompt_classes, num_classes: int):
  """Mean prompt embedding per class, L2-normalised: [num_classes, d]."""
  prompt_embeddings = np.asarray(prompt_embeddings, np.float32)
  prompt_classes = np.asarray(prompt_classes)
  missing = sorted(set(range(num_classes)) - set(prompt_classes.tolist()))
  if missing:
    raise ValueError(f'Zero-shot prompts name no prompt for classes {missing}.')
  out = np.stack([prompt_embeddings[prompt_classes == c].mean(0) for c in range(num_classes)])
  return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def predict(image_embeddings, class_embeds):
  """Class of highest similarity per image: int [N]."""
  return jnp.argmax(jnp.asarray(image_embeddings) @ jnp.asarray(class_embeds).T, axis=-1)


def accuracy(image_embeddings, class_embeds, labels) -> float:
  return float(np.mean(np.asarray(predict(image_embeddings, class_embeds)) == np.asarray(labels)))


class Evaluator:

  def __init__(self, predict_fn, *, source, preprocess_fn, mesh, batch_size: int = 1024,
               prompts: Sequence[Sequence[str]] | None = None, tokenizer=None,
               class_names: Sequence[str] | None = None, templates: Sequence[str] | None = None,
               max_text_len: int = 64, cache_batches: bool | None = None):
    prompts = prompts if prompts is not None else getattr(source, 'class_prompts', None)
    names = class_names if class_names is not None else getattr(source, 'class_names', None)
    if prompts is None and names is not None:
      from big_vision_style.datasets import captions  # pylint: disable=g-import-not-at-top
      prompts = [[t.format(n) for t in (templates or captions.ZERO_SHOT_TEMPLATES)]
                 for n in names]
    tokenizer = tokenizer if tokenizer is not None else getattr(source, 'tokenizer', None)
    if isinstance(tokenizer, str):
      from big_vision_style import tokenizers  # pylint: disable=g-import-not-at-top
      tokenizer = tokenizers.get_tokenizer(tokenizer, max_text_len)
    if prompts is None or tokenizer is None:
      raise ValueError('Zero-shot evaluation needs class prompts and a tokenizer: the source has '
                       'no class_prompts / tokenizer, so pass prompts= and tokenizer=.')
    self.num_classes = len(prompts)
    flat = [(c, p) for c, per_class in enumerate(prompts) for p in per_class]
    self.prompt_classes = np.asarray([c for c, _ in flat])
    self.prompt_tokens = tokenizer.batch([p for _, p in flat])
    self.batches = batching.EvalBatches(source, preprocess_fn=preprocess_fn, mesh=mesh,
                                        batch_size=batch_size, cache=cache_batches)
    replicated = batching.replicated(mesh)  # Readable by every process.
    self._embed_text = jax.jit(lambda params, text: predict_fn(params, None, text)[1],
                               out_shardings=replicated)

    @functools.partial(jax.jit, out_shardings=replicated)
    def eval_step(params, batch, classes):
      zimg = predict_fn(params, batch['image'], None)[0]
      correct = (predict(zimg, classes) == batch['label']) & batch['mask']
      return correct.sum(), batch['mask'].sum()

    self._eval_step = eval_step

  def run(self, params):
    classes = class_embeddings(np.asarray(self._embed_text(params, self.prompt_tokens)),
                               self.prompt_classes, self.num_classes)
    correct = count = 0
    for batch in self.batches:
      c, n = jax.device_get(self._eval_step(params, batch, classes))
      correct, count = correct + int(c), count + int(n)
    yield 'accuracy', correct / max(count, 1)
