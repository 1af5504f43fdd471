"""Alt-text-like captions for Fashion-MNIST garments: attributes, templates and web-style noise.

Pure numpy and strings (no images): `captioned_fashion_mnist` renders the images these captions
describe. Everything is a deterministic function of (example id, seeds):

  attrs = sample_attributes(num_ids, seed)       # one row per id: colour, background, size, ...
  caption = clean_caption(attrs, id, label)      # names the garment (a synonym) and attributes
  plan = CorruptionPlan.make(ids, rate, seed)    # which pairs get web-style noise, and how

Captions name the garment with one of several synonyms and mention only some of the attributes,
as real alt-text does; there are enough combinations that a batch of 256 has few exact
duplicates (tests check it). `VOCABULARY` lists every word any caption can contain, for the
word-level tokenizer.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from big_vision_style import tokenizers

# Garment synonyms per Fashion-MNIST class (class order of fashion_mnist.CLASS_NAMES). No word
# names two classes, except that "t-shirt" contains "shirt", as on the web.
GARMENTS = (
    ('t-shirt', 'tee', 'top', 'tank top'),
    ('trousers', 'pants', 'jeans', 'slacks'),
    ('pullover', 'sweater', 'jumper', 'knit sweater'),
    ('dress', 'gown', 'frock', 'sundress'),
    ('coat', 'jacket', 'overcoat', 'parka'),
    ('sandal', 'flip-flop', 'slide sandal', 'strappy sandal'),
    ('shirt', 'blouse', 'button-up shirt', 'collared shirt'),
    ('sneaker', 'trainer', 'running shoe', 'canvas sneaker'),
    ('bag', 'handbag', 'purse', 'tote bag'),
    ('ankle boot', 'boot', 'bootie', 'chelsea boot'),
)
NUM_CLASSES = len(GARMENTS)

# Garment colours (the tint the garment is rendered in) and background colours, RGB.
COLOURS = {
    'red': (220, 40, 40), 'orange': (245, 140, 20), 'yellow': (240, 220, 40),
    'green': (40, 170, 60), 'teal': (0, 150, 150), 'blue': (40, 80, 220),
    'purple': (130, 50, 180), 'pink': (240, 120, 180), 'brown': (130, 80, 40),
    'grey': (128, 128, 128), 'white': (250, 250, 250), 'black': (20, 20, 20),
}
BACKGROUNDS = {
    'white': (245, 245, 245), 'black': (15, 15, 15), 'grey': (110, 110, 110),
    'beige': (225, 210, 180), 'navy': (20, 30, 90), 'mint': (190, 235, 210),
}
# Garment size as a fraction of the canvas side.
SIZES = {'small': 0.45, 'medium': 0.65, 'large': 0.85}
# (row, column) of a 3x3 grid: 0 = top / left, 1 = centre, 2 = bottom / right.
POSITIONS = {
    'top left': (0, 0), 'top centre': (0, 1), 'top right': (0, 2),
    'centre left': (1, 0), 'centre': (1, 1), 'centre right': (1, 2),
    'bottom left': (2, 0), 'bottom centre': (2, 1), 'bottom right': (2, 2),
}
COLOUR_NAMES, BACKGROUND_NAMES = tuple(COLOURS), tuple(BACKGROUNDS)
SIZE_NAMES, POSITION_NAMES = tuple(SIZES), tuple(POSITIONS)

# Every template names the garment and its colour and at least one more attribute: with fewer,
# a batch of 256 would repeat captions often (only 40 garment words x 12 colours).
TEMPLATES = (
    'a photo of a {size} {colour} {garment}',
    '{colour} {garment} on a {background} background',
    'a {size} {colour} {garment} in the {position}',
    'product photo: {garment}, {colour}, {background} backdrop',
    '{garment} in {colour}, {size}, {position}',
    'close-up of a {colour} {garment} against {background}',
    'buy this {colour} {garment} online, {size}',
    'new {colour} {garment} for sale on {background}',
    '{size} {garment}, {colour}, {position}',
    'my favourite {colour} {garment} on {background}',
    'a {colour} {garment} in the {position} on {background}',
    'cheap {size} {colour} {garment}',
)

# Alt-text style (caption_style='alt_text', the v2 benchmark): the garment always, its colour or
# background in some captions, never its size or position. Real alt-text names the object and
# rarely its layout; v1's templates above describe nuisance attributes in every caption, which
# a tiny learner could match pairs by without learning garments (results/jest/README.md).
ALT_TEXT_TEMPLATES = (
    'a photo of a {garment}', '{garment}', 'my new {garment}', '{garment} for sale',
    'buy this {garment} online', 'product photo: {garment}', 'close-up of a {garment}',
    'cheap {garment}', 'a {colour} {garment}', '{colour} {garment} for sale',
    '{garment} on a {background} background', 'a {colour} {garment} on {background}')
CAPTION_STYLES = {'attributes': TEMPLATES, 'alt_text': ALT_TEXT_TEMPLATES}

# Web boilerplate: alt-text that says nothing about the image. The number keeps most of them
# distinct, as file names and product codes are.
BOILERPLATE = (
    'img {n} jpg', 'dsc {n}', 'image {n}', 'stock photo {n}', 'product {n}',
    'click here to enlarge image {n}', 'free shipping on orders over {n} dollars',
    'thumbnail {n}', 'photo by user {n}', 'untitled {n}', 'screenshot {n} png',
    'page {n} of our catalogue',
)

# Zero-shot prompts (the CLIP recipe: a few templates per class, embeddings averaged).
ZERO_SHOT_TEMPLATES = ('a photo of a {}', 'a {} on a background', 'product photo: {}')

CORRUPTIONS = ('clean', 'other_caption', 'boilerplate', 'wrong_garment')
CLEAN, OTHER_CAPTION, BOILERPLATE_TEXT, WRONG_GARMENT = range(4)

def _vocabulary() -> tuple[str, ...]:
  texts = list(TEMPLATES + ALT_TEXT_TEMPLATES + BOILERPLATE + ZERO_SHOT_TEMPLATES)
  texts += [g for names in GARMENTS for g in names]
  texts += list(COLOURS) + list(BACKGROUNDS) + list(SIZES) + list(POSITIONS) + ['an']
  found = {w for t in texts for w in tokenizers.words(t)} | set('0123456789')
  return tuple(sorted(found))


VOCABULARY = _vocabulary()


def _with_articles(text: str) -> str:
  return re.sub(r'\ba (?=[aeiou])', 'an ', text)


@dataclasses.dataclass(frozen=True)
class Attributes:
  """Per-id attribute indices (each an int array indexed by id)."""
  colour: np.ndarray
  background: np.ndarray
  size: np.ndarray
  position: np.ndarray
  template: np.ndarray
  synonym: np.ndarray

  def row(self, i: int) -> dict[str, int]:
    return {f.name: int(getattr(self, f.name)[i]) for f in dataclasses.fields(self)}


def sample_attributes(num_ids: int, seed: int) -> Attributes:
  """Attributes of ids 0..num_ids-1, from one seeded stream (so an id's never depend on splits).

  The garment colour is never the background's colour name (a white shirt on white would be
  invisible): clashes move to the next colour.
  """
  rng = np.random.default_rng(seed)
  background = rng.integers(0, len(BACKGROUNDS), num_ids)
  colour = rng.integers(0, len(COLOURS), num_ids)
  clash = np.asarray(COLOUR_NAMES)[colour] == np.asarray(BACKGROUND_NAMES)[background]
  colour = np.where(clash, (colour + 1) % len(COLOURS), colour)
  return Attributes(
      colour=colour, background=background,
      size=rng.integers(0, len(SIZES), num_ids),
      position=rng.integers(0, len(POSITIONS), num_ids),
      template=rng.integers(0, len(TEMPLATES), num_ids),
      synonym=rng.integers(0, 1 << 30, num_ids))  # Taken modulo the class's synonym count.


def caption(attrs: Attributes, i: int, garment_class: int, style: str = 'attributes') -> str:
  """The caption of id `i` naming `garment_class` (its own class, or a wrong one), in one of
  CAPTION_STYLES' templates (the same template index for every style)."""
  templates = caption_templates(style)
  a = attrs.row(i)
  names = GARMENTS[garment_class]
  return _with_articles(templates[a['template'] % len(templates)].format(
      garment=names[a['synonym'] % len(names)], colour=COLOUR_NAMES[a['colour']],
      background=BACKGROUND_NAMES[a['background']], size=SIZE_NAMES[a['size']],
      position=POSITION_NAMES[a['position']]))


def caption_templates(style: str) -> tuple[str, ...]:
  if style not in CAPTION_STYLES:
    raise ValueError(f'caption_style={style!r}: expected one of {", ".join(CAPTION_STYLES)}.')
  return CAPTION_STYLES[style]


def boilerplate(i: int, seed: int) -> str:
  rng = np.random.default_rng([seed, i])
  template = BOILERPLATE[rng.integers(len(BOILERPLATE))]
  return template.format(n=int(rng.integers(10, 100_000)))


def class_prompts() -> list[list[str]]:
  """Zero-shot prompts: for every class, every template with every synonym."""
  return [[_with_articles(t.format(name)) for t in ZERO_SHOT_TEMPLATES for name in names]
          for names in GARMENTS]


@dataclasses.dataclass(frozen=True)
class CorruptionPlan:
  """Which pairs of a pool get web-style caption noise, and which noise (by position).

  Exactly round(rate * n) pairs are corrupted; the corruption types listed share them equally
  (in turn over a random order). `partner[p]` is, for an `other_caption` pair, the position of
  the (different) example whose clean caption it gets; `wrong_class[p]` is, for a
  `wrong_garment` pair, the class its caption names instead (never its own).
  """
  kind: np.ndarray  # int32 [n], codes into CORRUPTIONS
  partner: np.ndarray  # int64 [n]
  wrong_offset: np.ndarray  # int32 [n] in [1, NUM_CLASSES)

  @classmethod
  def make(cls, n: int, rate: float, seed: int,
           types=('other_caption', 'boilerplate', 'wrong_garment')) -> 'CorruptionPlan':
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f'corruption_rate={rate} is out of range; it must be in [0, 1].')
    unknown = set(types) - set(CORRUPTIONS[1:])
    if unknown or (rate and not types):
      raise ValueError(f'corruption_types={tuple(types)!r}: expected a non-empty subset of '
                       f'{CORRUPTIONS[1:]}.')
    if rate and n < 2 and 'other_caption' in types:
      raise ValueError('other_caption corruption needs a pool of at least 2 examples.')
    rng = np.random.default_rng(seed)
    positions = rng.permutation(n)[:int(round(rate * n))]
    kind = np.zeros(n, np.int32)
    codes = np.asarray([CORRUPTIONS.index(t) for t in types], np.int32)
    if len(positions):
      kind[positions] = codes[np.arange(len(positions)) % len(codes)]
    partner = (np.arange(n) + rng.integers(1, max(n, 2), n)) % max(n, 1)
    wrong_offset = rng.integers(1, NUM_CLASSES, n).astype(np.int32)
    return cls(kind, partner.astype(np.int64), wrong_offset)

  def fraction(self) -> float:
    return float(np.mean(self.kind != CLEAN))
