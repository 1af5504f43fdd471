"""Random augmented views of a batch, on device: the two views of BYOL and of ReLA.

Self-supervised objectives need two differently augmented views of every image in every step.
Making them on device, inside the jitted step, keeps the host pipeline (`preprocess.py`) the
same for every objective, and makes each view a pure function of (rng, image): the step's rng
is `fold_in(train_rng, step)`, so a resumed run draws exactly the views it would have drawn.

Images arrive normalised (`(x - mean) / std`), shape [N, H, W, C]. Augmentations, in order:
  crop:   random resized crop (area fraction in `crop_scale`, aspect ratio in `crop_ratio`,
          log-uniform), resized back to H x W by bilinear sampling;
  flip:   horizontal, with probability 0.5;
  jitter: with probability `jitter_prob`, brightness (add U(-b, b) standard deviations) and
          contrast (scale the deviation from the image mean by U(1 - c, 1 + c)).
Crop and flip are two small matmuls per image (2 H^2 W C + 2 H W^2 C FLOPs: 88k at 28x28,
under 2% of even the small local ViT's forward pass), counted with the step's FLOPs.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ViewConfig:
  crop_scale: tuple[float, float] = (0.2, 1.0)
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = True
  jitter_prob: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4

  @classmethod
  def make(cls, cfg=None) -> 'ViewConfig':
    cfg = dict(cfg or {})
    unknown = set(cfg) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f'Unknown view option(s) {sorted(unknown)}: expected '
                       f'{[f.name for f in dataclasses.fields(cls)]}.')
    for key in ('crop_scale', 'crop_ratio'):
      if key in cfg:
        cfg[key] = tuple(float(v) for v in cfg[key])
    lo, hi = cfg.get('crop_scale', cls.crop_scale)
    if not 0 < lo <= hi <= 1:
      raise ValueError(f'crop_scale={(lo, hi)} must satisfy 0 < low <= high <= 1.')
    return cls(**cfg)


# BYOL's strong views and ReLA's mild ones (the released ReLA code crops to >= 50% of the area).
BYOL = ViewConfig()
MILD = ViewConfig(crop_scale=(0.5, 1.0), jitter_prob=0.5, brightness=0.2, contrast=0.2)


def _interpolation(start, length, size: int):
  """Bilinear resampling matrices [N, size, size]: row i samples the crop at its pixel centre.

  Output pixel i reads source coordinate start + (i + 0.5) * length / size - 0.5 (clamped to
  the image, like 'nearest' padding), with weights max(0, 1 - |coordinate - j|) on source
  pixels j. A crop is then two small matmuls, which compile far faster than gathers.
  """
  coords = start[:, None] + (jnp.arange(size) + 0.5) * length[:, None] / size - 0.5
  coords = jnp.clip(coords, 0.0, size - 1.0)
  return jnp.maximum(0.0, 1.0 - jnp.abs(coords[:, :, None] - jnp.arange(size)))


def augment(rng, images, cfg: ViewConfig):
  """One random view of every image of the batch [N, H, W, C] (independent per image)."""
  n, h, w = images.shape[:3]
  # All random numbers in one draw: one small RNG program, whatever the batch size.
  u = jax.random.uniform(rng, (n, 8))
  if cfg.crop_scale != (1.0, 1.0) or cfg.flip:
    area = cfg.crop_scale[0] + u[:, 0] * (cfg.crop_scale[1] - cfg.crop_scale[0])
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    ratio = jnp.exp(log_lo + u[:, 1] * (log_hi - log_lo))
    crop_h = jnp.clip(jnp.sqrt(area / ratio) * h, 1.0, h)
    crop_w = jnp.clip(jnp.sqrt(area * ratio) * w, 1.0, w)
    rows = _interpolation(u[:, 2] * (h - crop_h), crop_h, h)
    cols = _interpolation(u[:, 3] * (w - crop_w), crop_w, w)
    if cfg.flip:  # Mirroring the columns' sampling points flips the view.
      cols = jnp.where((u[:, 4] < 0.5)[:, None, None], cols[:, ::-1], cols)
    images = jnp.einsum('nih,nhwc->niwc', rows, images)
    images = jnp.einsum('njw,niwc->nijc', cols, images)
  if cfg.jitter_prob > 0:
    delta = (2 * u[:, 5] - 1) * cfg.brightness
    scale = 1 + (2 * u[:, 6] - 1) * cfg.contrast
    mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
    jittered = (images - mean) * scale[:, None, None, None] + mean + delta[:, None, None, None]
    images = jnp.where((u[:, 7] < cfg.jitter_prob)[:, None, None, None], jittered, images)
  return images


def two_views(rng, images, cfg: ViewConfig):
  rng1, rng2 = jax.random.split(rng)
  return augment(rng1, images, cfg), augment(rng2, images, cfg)
