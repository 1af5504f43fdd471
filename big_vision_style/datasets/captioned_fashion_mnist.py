"""Captioned Fashion-MNIST: a deterministic, offline image-text benchmark built from real images.

No image-text dataset can be downloaded where this project runs locally, so this one stands in
for web alt-text data (WebLI / ALIGN / LAION) and for curated data (LTIP / COCO). Each 28x28
Fashion-MNIST garment is rendered in a colour, at a size and at a position on a coloured canvas
(`canvas_size` x `canvas_size` RGB), and described by an alt-text-like caption naming the
garment (with synonyms) and some of those attributes (datasets/captions.py).

  config.data = dict(name='captioned_fashion_mnist', canvas_size=48, max_text_len=16,
                     tokenizer='words', corruption_rate=0.5, corruption_seed=0,
                     caption_style='attributes', layout='grid')

Two knobs set how hard the pairs are to match (experiments/jest/common.py's `benchmark`):
  caption_style: 'attributes' (v1: every caption names the garment, its colour and one or
    more of size, position and background) or 'alt_text' (v2: the garment always, its colour
    or background sometimes, never its layout; captions.py).
  layout: 'grid' (v1: a small, medium or large garment in one of 9 cells of a 3x3 grid) or
    'centred' (v2: every garment large, 0.85 of the canvas side, in its centre). Colours and
    backgrounds vary in both.

Splits (ids as in fashion_mnist: the official file index; test ids follow train ids):
  train:   the *uncurated* pool. Exactly round(corruption_rate * n) pairs carry web-style
           caption noise (another image's caption, boilerplate text, or the wrong garment; see
           `corruption_types`), the rest clean captions.
  holdout: the *curated* pool: clean captions of the held-out images, for reference models.
  test:    clean captions of the official test images, for zero-shot classification (from class
           prompts, `class_prompts`) and image-text retrieval.
Records: image uint8 [S, S, 3]; text int32 [max_text_len] (0 = padding); label int32, the
garment in the image whatever the caption says; id int64; corruption int32, a code into
`captions.CORRUPTIONS` (0 = clean). Everything is a function of the config: attributes and
captions of an id depend only on (id, caption_seed), corruption on (split, corruption_seed).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from big_vision_style import tokenizers
from big_vision_style.datasets import base
from big_vision_style.datasets import captions
from big_vision_style.datasets import fashion_mnist

NUM_IDS = fashion_mnist.NUM_OFFICIAL_TRAIN + 10_000  # Official train + test.


def render(garment: np.ndarray, canvas_size: int, colour, background, size: float,
           grid_position: tuple[int, int]) -> np.ndarray:
  """A 28x28(x1) grey garment -> uint8 [S, S, 3]: tinted, resized, placed on a coloured canvas.

  Fashion-MNIST garments are light on black, so the pixel intensity serves as the garment's
  opacity: shading and texture survive the tint.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  side = max(4, int(round(size * canvas_size)))
  pil = Image.fromarray(np.asarray(garment).reshape(garment.shape[:2]))
  alpha = np.asarray(pil.resize((side, side), Image.BILINEAR), np.float32)[..., None] / 255.0
  out = np.empty([canvas_size, canvas_size, 3], np.float32)
  out[...] = np.asarray(background, np.float32)
  row, col = grid_position
  y, x = row * (canvas_size - side) // 2, col * (canvas_size - side) // 2
  region = out[y:y + side, x:x + side]
  out[y:y + side, x:x + side] = region * (1 - alpha) + np.asarray(colour, np.float32) * alpha
  return np.round(out).astype(np.uint8)


LAYOUTS = ('grid', 'centred')


def _placement(layout: str, a: dict[str, int]) -> tuple[float, tuple[int, int]]:
  """(size as a fraction of the canvas side, 3x3 grid cell) of a garment with attributes `a`."""
  if layout == 'centred':
    return captions.SIZES['large'], captions.POSITIONS['centre']
  return (captions.SIZES[captions.SIZE_NAMES[a['size']]],
          captions.POSITIONS[captions.POSITION_NAMES[a['position']]])


@functools.lru_cache(maxsize=2)
def attributes(caption_seed: int) -> captions.Attributes:
  return captions.sample_attributes(NUM_IDS, caption_seed)


@functools.lru_cache(maxsize=8)
def _texts(split: str, data_dir: str, holdout_size: int, split_seed: int, caption_seed: int,
           corruption_rate: float, corruption_seed: int, corruption_types: tuple[str, ...],
           caption_style: str = 'attributes'):
  """(ids, labels, images, captions, corruption codes) of a split; cached, as they are reused."""
  if split == 'test':
    images, labels = fashion_mnist.load_official_split(data_dir, 'test')
    ids = fashion_mnist.TEST_ID_OFFSET + np.arange(len(images))
  else:
    images, labels = fashion_mnist.load_official_split(data_dir, 'train')
    ids = base.select_split(split, len(images), holdout_size, split_seed)
    images, labels = images[ids], labels[ids]
  attrs = attributes(caption_seed)
  clean = [captions.caption(attrs, i, c, caption_style)
           for i, c in zip(ids.tolist(), labels.tolist())]
  if split != 'train' or not corruption_rate:  # Curated and evaluation splits stay clean.
    return ids, labels, images, tuple(clean), np.zeros(len(ids), np.int32)
  plan = captions.CorruptionPlan.make(len(ids), corruption_rate, corruption_seed,
                                      corruption_types)
  texts = list(clean)
  for p in np.flatnonzero(plan.kind).tolist():
    kind, i = plan.kind[p], int(ids[p])
    if kind == captions.OTHER_CAPTION:
      texts[p] = clean[plan.partner[p]]
    elif kind == captions.BOILERPLATE_TEXT:
      texts[p] = captions.boilerplate(i, corruption_seed)
    else:  # WRONG_GARMENT: the same attributes, another class's garment word.
      texts[p] = captions.caption(attrs, i, (labels[p] + plan.wrong_offset[p]) % len(
          captions.GARMENTS), caption_style)
  return ids, labels, images, tuple(texts), plan.kind


class CaptionedSource:
  """One split of captioned Fashion-MNIST; images are rendered when read (random access)."""

  def __init__(self, ids, labels, images, texts, corruption, *, canvas_size: int,
               caption_seed: int, tokenizer, layout: str = 'grid'):
    self.ids = np.asarray(ids, np.int64)
    self.labels = np.asarray(labels, np.int32)
    self.images = images  # Official 28x28x1 garments, read-only.
    self.captions = texts  # Strings, for inspection; records carry the tokens.
    self.corruption = np.asarray(corruption, np.int32)
    self.corrupted_ids = np.sort(self.ids[self.corruption != captions.CLEAN])
    self.tokenizer = tokenizer
    self.text = tokenizer.batch(list(texts))  # int32 [n, max_text_len]
    self.canvas_size, self.caption_seed, self.layout = canvas_size, caption_seed, layout
    self.num_classes = captions.NUM_CLASSES
    self.class_names = fashion_mnist.CLASS_NAMES
    self.class_prompts = captions.class_prompts()
    # Rendering costs about 0.1 ms of CPU per image, and a JEST step reads B = 5-10x b images,
    # on the two cores XLA also needs: each image is rendered once per process and kept.
    # np.zeros maps its pages lazily, so rows never read cost no memory.
    self._rendered = np.zeros([len(self.ids), canvas_size, canvas_size, 3], np.uint8)
    self._is_rendered = np.zeros([len(self.ids)], bool)

  def __len__(self) -> int:
    return len(self.ids)

  def image(self, index: int) -> np.ndarray:
    index = int(index)
    if not self._is_rendered[index]:  # Threads may render the same row twice: same pixels.
      a = attributes(self.caption_seed).row(int(self.ids[index]))
      self._rendered[index] = render(
          self.images[index], self.canvas_size,
          captions.COLOURS[captions.COLOUR_NAMES[a['colour']]],
          captions.BACKGROUNDS[captions.BACKGROUND_NAMES[a['background']]],
          *_placement(self.layout, a))
      self._is_rendered[index] = True
    return self._rendered[index].copy()  # A copy: callers may write into what they get.

  def get_batch(self, indices) -> dict[str, np.ndarray]:
    """The records of `indices` stacked, as `[self[i] for i in indices]` then np.stack would
    give, without per-record Python: a JEST step reads 5-10x b records (input_pipeline)."""
    indices = np.asarray(indices, np.int64)
    if indices.size and not (-len(self) <= indices.min() and indices.max() < len(self)):
      raise IndexError(f'Indices out of range for a split of {len(self)} examples.')
    indices = indices % len(self)
    for index in indices[~self._is_rendered[indices]].tolist():
      self.image(index)
    return {'image': self._rendered[indices], 'text': self.text[indices],
            'label': self.labels[indices], 'id': self.ids[indices],
            'corruption': self.corruption[indices]}

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f'Index {index} out of range for a split of {len(self)} examples.')
    index %= len(self)
    return {'image': self.image(index), 'text': self.text[index], 'label': self.labels[index],
            'id': self.ids[index], 'corruption': self.corruption[index]}

  def __repr__(self):
    return (f'CaptionedSource(n={len(self)}, canvas={self.canvas_size}, '
            f'corrupted={len(self.corrupted_ids)})')


def make_source(split: str, data_dir: str | None = None, holdout_size: int = 10_000,
                split_seed: int = 0, canvas_size: int = 48, max_text_len: int = 16,
                tokenizer: str = 'words', caption_seed: int = 0, corruption_rate: float = 0.5,
                corruption_seed: int = 0,
                corruption_types=('other_caption', 'boilerplate', 'wrong_garment'),
                caption_style: str = 'attributes', layout: str = 'grid',
                label_noise: float = 0.0, **unused) -> CaptionedSource:
  del unused  # Keys meant for other sources (kept so one data config can switch sources).
  base.check_split_name(split)
  if label_noise:
    raise ValueError(f'label_noise={label_noise}: captioned_fashion_mnist models noisy *captions*;'
                     ' set config.data.corruption_rate instead.')
  if canvas_size < 28:
    raise ValueError(f'canvas_size={canvas_size} must be >= 28 (the garments are 28x28).')
  captions.caption_templates(caption_style)  # Raises on an unknown style.
  if layout not in LAYOUTS:
    raise ValueError(f'layout={layout!r}: expected one of {", ".join(LAYOUTS)}.')
  data_dir = fashion_mnist.resolve_data_dir(data_dir)
  ids, labels, images, texts, corruption = _texts(
      split, data_dir, holdout_size, split_seed, caption_seed, float(corruption_rate),
      corruption_seed, tuple(corruption_types), caption_style)
  tok = tokenizers.get_tokenizer(tokenizer, max_text_len, captions.VOCABULARY)
  return CaptionedSource(ids, labels, images, texts, corruption, canvas_size=canvas_size,
                         caption_seed=caption_seed, tokenizer=tok, layout=layout)
