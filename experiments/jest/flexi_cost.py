r"""Flexi-JEST's per-iteration cost taken apart: why 170% of an i.i.d. iteration here against the
paper's ~110% (issue #19, item 5).

  PYTHONPATH=. JAX_PLATFORMS=cpu python -m experiments.jest.flexi_cost --out results/jest

Nothing is trained or run: every figure is XLA's cost analysis of a compiled program with
abstract inputs (big_vision_style/flops.py, loops corrected). For each tower variant of the
local config (`towers=` in common.py: local, paper_text, paper_ratios) it compiles
  * the whole train step of i.i.d. and of Flexi-JEST (f = 0.8, cached reference), exactly as
    the trainer builds it (methods.standalone + methods.jit_step, as programs.build_program);
  * each piece of the Flexi step at the shapes the step uses: the image tower's forward over
    the super-batch B at the coarse patch, the text tower's over B (scoring); the image tower's
    forward + backward over b/2 at each patch, the text tower's over b, the SigLIP loss's, the
    optimiser update (training); the joint sampler; the patch-embedding resize on its own;
  * per-example forwards (slopes between two batch sizes, so per-call costs such as the resize
    fall out as intercepts).
The pieces must add up to the whole step (the rest: the gather of the chosen pairs and the
logged learnability of the chosen and i.i.d. sub-batches). An analytic per-iteration formula
in those per-example pieces (`flexi_ratio`) is then evaluated with the local proportions and
with the paper's (ViT-B/16 at 256 px, a B text transformer, the standard transformer count),
one piece substituted at a time. Writes flexi_cost.md, flexi_cost.json and flexi_cost.png.
Takes about 5 minutes on one CPU core (about 60 compiles of small programs).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from big_vision_style import contrastive
from big_vision_style import flops
from big_vision_style import methods
from big_vision_style import programs
from big_vision_style import selection
from big_vision_style.models import flexi
from big_vision_style.models import vit
from big_vision_style.selection import jest
from experiments import analysis
from experiments.jest import fig4_flops
from experiments.jest import filter_ratio

TOWER_VARIANTS = ('local', 'paper_text', 'paper_ratios')
PAPER_PERCENT = fig4_flops.PAPER_PERCENT
PAPER_SCORING_CUT = 0.72  # "about 72% fewer scoring FLOPs" at patch 32 instead of 16.
# The paper's model: ViT-B/16 at 256 px and a B text transformer (SigLIP); its text length is
# not stated in METHODS.md: SigLIP's released B/16-256 checkpoint reads 64 tokens.
VIT_B = dict(width=768, depth=12, mlp_dim=3072)
PAPER_IMAGE_SIZE, PAPER_PATCHES, PAPER_TEXT_LEN = 256, (16, 32), 64
PAPER_B, PAPER_F = 32_768, 0.8


# ---------------------------------------------------------------------------------------------
# The analytic model of one iteration, in units of one pair's forward at the native patch.

@dataclasses.dataclass(frozen=True)
class Proportions:
  """What a Flexi-JEST iteration's cost depends on, relative to one pair's native forward F."""
  text_share: float  # t = T / F: the text tower's share of a pair's forward (Flexi keeps it).
  coarse_ratio: float  # c = I_coarse / I: the image tower's forward at the coarse patch.
  super_ratio: float = 5.0  # B / b = 1 / (1 - f).
  coarse_half: float = 0.5  # h: fraction of the trained batch at the coarse patch.
  train_multiplier: float = 3.0  # m: a train step per example in forwards (paper: 3).
  overhead: float = 0.0  # Sampler, resize, gather, ...: per iteration, fraction of i.i.d.'s.

  @property
  def coarse_pair(self) -> float:
    """g: a pair's forward at the coarse patch (image coarse + the same text) / F."""
    return self.text_share + (1 - self.text_share) * self.coarse_ratio


def flexi_ratio(p: Proportions, *, reuse: bool = False) -> float:
  """Flexi-JEST's FLOPs per iteration / i.i.d.'s (cached reference), per trained example:
    scoring   B/b * g                      (the super-batch, coarse image + text, forward only)
    training  m * ((1 - h) + h * g)        (half native, half coarse, text once per pair)
    i.i.d.    m
  With `reuse` (analytic only; not implemented): the coarse half's image forward and every
  chosen text's forward come from the scoring forward, so those parts only pay the backward
  (m - 1): training = m (1 - h)(1 - t) + (m - 1) (h (1 - t) c + t).
  """
  t, c, h, m = p.text_share, p.coarse_ratio, p.coarse_half, p.train_multiplier
  scoring = p.super_ratio * p.coarse_pair
  if reuse:
    train = m * (1 - h) * (1 - t) + (m - 1) * (h * (1 - t) * c + t)
  else:
    train = m * ((1 - h) + h * p.coarse_pair)
  return (scoring + train) / m + p.overhead


def jest_ratio(p: Proportions, *, reuse: bool = False) -> float:
  """JEST (cached reference) at the native patch: B/b forwards scoring, m (or m - 1 when the
  scoring forward is reused) training. At B/b = 5, m = 3: 8/3 without reuse, 7/3 with."""
  m = p.train_multiplier
  return (p.super_ratio + m - (1 if reuse else 0)) / m + p.overhead


def encoder_flops(tokens: int, width: int, depth: int, mlp_dim: int) -> float:
  """Matmul FLOPs of a transformer encoder over `tokens`: per block the QKV and output
  projections (8 N D^2), attention logits and weighted sum (4 N^2 D) and the MLP (4 N D M)."""
  n, d = tokens, width
  return float(depth * (8 * n * d * d + 4 * n * n * d + 4 * n * d * mlp_dim))


def text_forward_flops(length: int, width: int, depth: int, mlp_dim: int, embed_dim: int):
  """One caption's text tower: the encoder and the projection head (the lookup is free)."""
  return encoder_flops(length, width, depth, mlp_dim) + 2 * width * embed_dim


def paper_proportions(text_len: int = PAPER_TEXT_LEN) -> dict:
  """Per-example forwards of the paper's towers by the standard count, and its proportions."""
  image = {p: vit.analytic_forward_flops(image_size=PAPER_IMAGE_SIZE, num_classes=768,
                                         patch_size=(p, p), **VIT_B) for p in PAPER_PATCHES}
  text = text_forward_flops(text_len, embed_dim=768, **VIT_B)
  return {'image_native': image[PAPER_PATCHES[0]], 'image_coarse': image[PAPER_PATCHES[1]],
          'text': text, 'text_len': text_len,
          'proportions': dataclasses.asdict(Proportions(
              text_share=text / (image[PAPER_PATCHES[0]] + text),
              coarse_ratio=image[PAPER_PATCHES[1]] / image[PAPER_PATCHES[0]],
              super_ratio=1 / (1 - PAPER_F)))}


# ---------------------------------------------------------------------------------------------
# Measured: the local configs' compiled steps and their pieces.

def mesh():
  return jax.sharding.Mesh(jax.devices()[:1], ('data',))


def config_of(policy: str, towers: str = 'local', runlocal: bool = False):
  """The local config of `policy` ('uniform', 'jest' or 'flexi'; f = 0.8, cached reference)."""
  arg = f'towers={towers}' + (',runlocal' if runlocal else '')
  if policy == 'uniform':
    arg += ',policy=uniform'
  else:  # The cache is a placeholder when built abstract: no file is read.
    arg += ',policy=learnability,filter_ratio=0.8,reference=cached,embedding_cache=unused.npz'
    arg += ',flexi=True' if policy == 'flexi' else ''
  return filter_ratio.get_config(arg)


def _standalone(config):
  num_classes = programs.num_classes_of(config)
  example = programs.example_from_config(config, num_classes)
  return methods.standalone(config, mesh(), example, num_classes=num_classes,
                            total_steps=int(config.total_steps))


def _measure(fn, *args) -> float:
  return flops.compile_and_measure(jax.jit(fn), *args)[1].flops


def whole_step(config, categories: bool = True) -> dict:
  """The trainer's step of `config` (programs.build_program), compiled with abstract inputs:
  its FLOPs and (`categories`) the trainer's own split by category."""
  program = programs.build_program(config, mesh())
  whole = flops.compile_and_measure(program.fn, *program.args)[1].flops
  if not categories:
    return {'flops': whole}
  state, frozen = program.args[:2]
  built = _standalone(config)[1]
  return {'flops': whole, 'by_category': built.phases[-1].costs(whole, state, frozen)}


def _spec(shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def pieces(config, per_example: bool = True) -> dict:
  """Each piece of a Flexi-JEST step (module doc), in FLOPs, at the step's own shapes; with
  `per_example`, also the towers' per-example forwards and i.i.d.'s image training."""
  built = _standalone(config)[1]
  sel = selection.parse(config, selection.CONTRASTIVE)
  model, tx = built.models['learner'], built.txs['learner']
  params = jax.eval_shape(built.init, jax.random.key(0))['learner']['params']
  b, big_b = config.input.batch_size, sel['super_batch_size']
  size, length, dim = config.input.pp.image_size, config.data.max_text_len, config.model.embed_dim
  native, coarse = tuple(config.model.image.patch_size), tuple(config.flexi_patch)
  images = lambda n: _spec((n, size, size, 3))
  texts = lambda n: _spec((n, length), jnp.int32)
  embs = lambda n: _spec((n, dim))

  def image_fwd(patch):
    return lambda p, x: model.apply({'params': p}, x, None, patch_size=patch)[0]

  def text_fwd(p, x):
    return model.apply({'params': p}, None, x)[1]

  def fwd_bwd(fwd):  # The tower's forward and backward, the loss's cotangent given.
    return lambda p, x, cot: jax.grad(lambda q: jnp.vdot(fwd(q, x), cot))(p)

  def loss(zi, zt, t, bias):
    return jax.value_and_grad(lambda *z: jnp.mean(contrastive.per_example_loss(
        config.contrastive_loss, *z)), argnums=(0, 1, 2, 3))(zi, zt, t, bias)

  def update(p, opt, grads):  # As image_text._apply: the update and the logged grad norm.
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt, optax.global_norm(grads)

  def sampler(zi, zt, ri, rt):
    one = jnp.float32(1.0)
    emb = lambda i, t: jest.Embeddings(i, t, 10 * one, -10 * one)
    return jest.sample_joint(emb(zi, zt), emb(ri, rt), num_selected=b,
                             num_chunks=sel['num_chunks'], rng=jax.random.key(0), mesh=mesh(),
                             policy=sel['policy'], loss=config.contrastive_loss,
                             gain=sel['gain']).indices

  grid_native = (size // native[0], size // native[1])
  grid_coarse = (size // coarse[0], size // coarse[1])

  def resize(p):  # What FlexiViT adds per call at the coarse patch (models/flexi.py).
    img = p['img']
    return (flexi.resize_kernel(img['embedding']['kernel'], coarse),
            flexi.resize_pos_embedding(img['pos_embedding'], grid_native, grid_coarse))

  half, scalar = b // 2, _spec(())
  opt = jax.eval_shape(tx.init, params)
  out = {
      # Scoring: the learner's forward over the super-batch, image at the coarse patch.
      'score_image_coarse': _measure(image_fwd(coarse), params, images(big_b)),
      'score_text': _measure(text_fwd, params, texts(big_b)),
      # Training on the chosen b: half the images at each patch, every text once.
      'train_image_native_half': _measure(fwd_bwd(image_fwd(native)), params, images(half),
                                          embs(half)),
      'train_image_coarse_half': _measure(fwd_bwd(image_fwd(coarse)), params, images(half),
                                          embs(half)),
      'train_text': _measure(fwd_bwd(text_fwd), params, texts(b), embs(b)),
      'train_loss': _measure(loss, embs(b), embs(b), scalar, scalar),
      'train_optimizer': _measure(update, params, opt, params),
      'sampler': _measure(sampler, embs(big_b), embs(big_b), embs(big_b), embs(big_b)),
      # Inside score_image_coarse and train_image_coarse_half, each; the step does it once.
      'resize_per_call': _measure(resize, params),
  }
  out['shapes'] = {'b': b, 'B': big_b, 'image_size': size, 'text_len': length,
                   'native_patch': native[0], 'coarse_patch': coarse[0],
                   'num_chunks': sel['num_chunks'], 'embed_dim': dim,
                   'image': dict(config.model.image), 'text': dict(config.model.text)}
  if not per_example:
    return out
  # i.i.d.'s training of the image tower on b at the native patch (its text part: train_text).
  out['iid_train_image'] = _measure(fwd_bwd(image_fwd(native)), params, images(b), embs(b))
  # Per-example forwards: slopes between b/2 and B examples (per-call costs drop out).
  def slope(fn, make):
    lo, hi = (_measure(fn, params, make(n)) for n in (half, big_b))
    return (hi - lo) / (big_b - half), lo - half * (hi - lo) / (big_b - half)

  (out['per_example_image_native'], out['per_call_image_native']) = slope(image_fwd(native), images)
  (out['per_example_image_coarse'], out['per_call_image_coarse']) = slope(image_fwd(coarse), images)
  (out['per_example_text'], out['per_call_text']) = slope(text_fwd, texts)
  return out


def analytic_forwards(shapes: dict) -> dict:
  """The standard matmul count of the local towers' per-example forwards (the cross-check of
  the measured slopes: XLA also counts norms, GELU, softmax, the L2 normalisation)."""
  image = {k: shapes['image'][k] for k in ('width', 'depth', 'mlp_dim', 'pool_type')}
  text = {k: shapes['text'][k] for k in ('width', 'depth', 'mlp_dim')}
  out = {f'image_{name}': vit.analytic_forward_flops(
      image_size=shapes['image_size'], num_classes=shapes['embed_dim'], patch_size=(p, p),
      **image) for name, p in (('native', shapes['native_patch']),
                               ('coarse', shapes['coarse_patch']))}
  out['text'] = text_forward_flops(shapes['text_len'], embed_dim=shapes['embed_dim'], **text)
  return out


SCORING = ('score_image_coarse', 'score_text')
TRAINING = ('train_image_native_half', 'train_image_coarse_half', 'train_text', 'train_loss',
            'train_optimizer')


def pieces_sum(p: dict) -> float:
  """What the pieces add up to in one step. The scoring forward and the coarse half's forward
  resize the patch kernel and position embedding of the same parameters: XLA computes that
  once per step, so one of the two counted resizes is taken off."""
  return sum(p[k] for k in SCORING + TRAINING + ('sampler',)) - p['resize_per_call']


def decompose(towers: str = 'local', runlocal: bool = False) -> dict:
  """Whole steps, pieces, their sum against the whole, and the measured proportions."""
  iid = whole_step(config_of('uniform', towers, runlocal))
  flexi_step = whole_step(config_of('flexi', towers, runlocal))
  p = pieces(config_of('flexi', towers, runlocal))
  b, big_b = p['shapes']['b'], p['shapes']['B']
  measured_sum = pieces_sum(p)
  pair = p['per_example_image_native'] + p['per_example_text']
  iid_flops = iid['flops']
  # What the formula's per-example terms leave out: the sampler and the resize (done once in
  # the forward, once more in the backward of the coarse half; per call, not per example).
  overhead = (p['sampler'] + 2 * p['resize_per_call']) / iid_flops
  props = Proportions(text_share=p['per_example_text'] / pair,
                      coarse_ratio=p['per_example_image_coarse'] / p['per_example_image_native'],
                      super_ratio=big_b / b, train_multiplier=iid_flops / (b * pair),
                      overhead=overhead)
  return {
      'towers': towers, 'iid': iid, 'flexi': flexi_step, 'pieces': p,
      'pieces_sum': measured_sum, 'rest': flexi_step['flops'] - measured_sum,
      'rest_fraction': (flexi_step['flops'] - measured_sum) / flexi_step['flops'],
      'train_pieces_sum': sum(p[k] for k in TRAINING),
      'percent_of_iid': 100 * flexi_step['flops'] / iid_flops,
      'proportions': dataclasses.asdict(props),
      'formula_percent': 100 * flexi_ratio(props),
      'formula_percent_reuse': 100 * flexi_ratio(props, reuse=True),
      'analytic_per_example': analytic_forwards(p['shapes']),
  }


def substitutions(local: Proportions, paper: Proportions) -> list[dict]:
  """Flexi's formula ratio with each of the paper's pieces swapped into the local proportions
  one at a time, and along a path from local to the paper's."""
  rows = [{'change': 'local, as measured', 'percent': 100 * flexi_ratio(local)}]
  names = {'text_share': 'text share', 'coarse_ratio': 'coarse / native image forward',
           'overhead': 'sampler + resize overhead', 'train_multiplier': 'train = m forwards',
           'super_ratio': 'B / b (f)', 'coarse_half': 'half-batch split'}
  for field, name in names.items():
    swapped = dataclasses.replace(local, **{field: getattr(paper, field)})
    rows.append({'change': f'only {name}: {getattr(local, field):.3g} -> '
                           f'{getattr(paper, field):.3g}',
                 'percent': 100 * flexi_ratio(swapped)})
  path = local
  for field in ('text_share', 'coarse_ratio', 'overhead', 'train_multiplier'):
    path = dataclasses.replace(path, **{field: getattr(paper, field)})
    rows.append({'change': f'cumulative, + {names[field]}', 'percent': 100 * flexi_ratio(path)})
  counted = dataclasses.replace(paper, text_share=0.0, coarse_ratio=1 - PAPER_SCORING_CUT)
  rows.append({'change': 'the paper\'s count: no text tower, coarse = 28% of native',
               'percent': 100 * flexi_ratio(counted)})
  return rows


# ---------------------------------------------------------------------------------------------
# Report.

def _pct(x):
  return f'{x:.1f}'


def report_lines(result: dict) -> list[str]:
  local = result['variants']['local']
  p, iid = local['pieces'], local['iid']['flops']
  lines = ['# Flexi-JEST\'s per-iteration cost, taken apart', '',
           'Command: `PYTHONPATH=. JAX_PLATFORMS=cpu python -m experiments.jest.flexi_cost '
           '--out results/jest`. XLA cost analysis of compiled programs (abstract inputs, '
           'nothing run); raw numbers in `flexi_cost.json`.', '',
           f'## Local Flexi step (b = {p["shapes"]["b"]}, B = {p["shapes"]["B"]}, '
           f'{p["shapes"]["image_size"]} px, patch {p["shapes"]["native_patch"]} / '
           f'{p["shapes"]["coarse_patch"]}, {p["shapes"]["text_len"]} text tokens)', '']
  rows = [[k, f'{p[k] / 1e6:.1f}', _pct(100 * p[k] / iid)] for k in SCORING + TRAINING +
          ('sampler',)]
  rows += [['less one resize (counted in both coarse forwards, done once)',
            f'-{p["resize_per_call"] / 1e6:.1f}', _pct(-100 * p['resize_per_call'] / iid)],
           ['sum of the pieces', f'{local["pieces_sum"] / 1e6:.1f}',
            _pct(100 * local['pieces_sum'] / iid)],
           ['whole compiled step', f'{local["flexi"]["flops"] / 1e6:.1f}',
            _pct(local['percent_of_iid'])],
           ['rest (gather, logged learnability)', f'{local["rest"] / 1e6:.1f}',
            _pct(100 * local['rest'] / iid)]]
  lines += analysis.markdown_table(['piece', 'MFLOPs', '% of i.i.d. step'], rows, 'lrr')
  lines += ['', f'i.i.d. step: {iid / 1e6:.1f} MFLOPs; the trainer\'s categories of the Flexi '
            f'step: learner_train {local["flexi"]["by_category"]["learner_train"] / 1e6:.1f}, '
            f'scoring {local["flexi"]["by_category"]["scoring"] / 1e6:.1f} (the sum of the '
            f'training pieces: {local["train_pieces_sum"] / 1e6:.1f}).', '',
            'Per example (slopes between b/2 and B examples), and per call:', '']
  analytic = local['analytic_per_example']
  rows = [[name, f'{p["per_example_" + k] / 1e6:.3f}', f'{analytic[k] / 1e6:.3f}',
           f'{p["per_call_" + k] / 1e6:.2f}']
          for name, k in (('image tower, native patch', 'image_native'),
                          ('image tower, coarse patch', 'image_coarse'),
                          ('text tower', 'text'))]
  rows.append(['patch-embedding resize alone', '-', '-', f'{p["resize_per_call"] / 1e6:.2f}'])
  lines += analysis.markdown_table(['forward', 'MFLOPs per example (XLA)',
                                    'per example, matmul count', 'MFLOPs per call (XLA)'], rows,
                                   'lrrr')
  lines += ['', '## Proportions and the formula', '',
            'Per trained example, in units of one pair\'s native forward F = I + T: Flexi / '
            'i.i.d. = (B/b g + m ((1 - h) + h g)) / m + overhead, with g = t + (1 - t) c the '
            'coarse pair forward, t = T / F the text share, c = I_coarse / I, h = 1/2 trained '
            'at the coarse patch, m = a train step in forwards (measured: the i.i.d. step / '
            '(b F)), overhead = (sampler + 2 resizes) / i.i.d. step. "With reuse" (not '
            'implemented): the coarse half\'s image forward and all b text forwards taken from '
            'the scoring forward, paying only their backward (m - 1). The paper model\'s rows '
            'use the standard matmul count (ViT-B/16 at 256 px, patch 32 coarse, a B text '
            'transformer).', '']
  header = ['', 'text share t', 'coarse/native image c', 'B/b', 'm', 'overhead',
            'formula %', 'measured %', 'formula with reuse %']
  rows = []
  for name, v in result['variants'].items():
    q = v['proportions']
    rows.append([f'local, towers={name}', f'{q["text_share"]:.3f}', f'{q["coarse_ratio"]:.3f}',
                 f'{q["super_ratio"]:.0f}', f'{q["train_multiplier"]:.2f}',
                 f'{q["overhead"]:.3f}', _pct(v['formula_percent']), _pct(v['percent_of_iid']),
                 _pct(v['formula_percent_reuse'])])
  for name, pp in result['paper'].items():
    q = pp['proportions']
    rows.append([f'paper model, {pp["text_len"]} text tokens (analytic)',
                 f'{q["text_share"]:.3f}', f'{q["coarse_ratio"]:.3f}', f'{q["super_ratio"]:.0f}',
                 f'{q["train_multiplier"]:.0f}', f'{q["overhead"]:.3f}', _pct(pp['percent']),
                 '-', _pct(pp['percent_reuse'])])
  rows.append(['paper\'s count (72% cut on the whole pair)', '0', '0.28', '5', '3', '0',
               _pct(result['paper_count_percent']), '110 (paper)', '-'])
  lines += analysis.markdown_table(header, rows, 'lrrrrrrrr')
  lines += ['', '## One piece at a time (local -> paper model, 64 text tokens)', '']
  lines += analysis.markdown_table(['change', 'Flexi % of i.i.d.'],
                                   [[r['change'], _pct(r['percent'])]
                                    for r in result['substitutions']], 'lr')
  return lines


def plot(out: str, result: dict, fig4: dict | None):
  """flexi_cost.png: measured per-iteration bars next to the paper's; the Flexi decomposition."""
  plt = analysis.pyplot()
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={'width_ratios': [1.2, 1]})
  names = list(PAPER_PERCENT)
  measured = [fig4[n]['percent_of_iid'] if fig4 and n in fig4 else np.nan for n in names]
  measured[-1] = result['variants']['local']['percent_of_iid']
  x = np.arange(len(names))
  ax.bar(x - 0.2, measured, 0.4, label='measured here (XLA)')
  ax.bar(x + 0.2, [PAPER_PERCENT[n] for n in names], 0.4, label='paper', color='0.6')
  extra = [(f'Flexi-JEST,\n{v}', result['variants'][v]['percent_of_iid'])
           for v in TOWER_VARIANTS[1:]]
  ax.bar(len(names) + np.arange(len(extra)) - 0.2, [e[1] for e in extra], 0.4, color='C0')
  for i, value in enumerate(measured + [e[1] for e in extra]):
    ax.text(i - 0.2, value + 5, f'{value:.0f}', ha='center', fontsize=7)
  ax.set_xticks(np.arange(len(names) + len(extra)),
                ['iid', 'JEST\nlive ref', 'JEST\ncached', 'Flexi-JEST\n(towers=local)'] +
                [e[0] for e in extra], fontsize=7)
  ax.set_ylabel('FLOPs per iteration (% of i.i.d.)')
  ax.set_title('measured (JEST: the sweep\'s runs, scoring forward not reused) vs paper',
               fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, axis='y')
  _plot_stack(bx, result)
  analysis.save_figure(fig, os.path.join(out, 'flexi_cost.png'), dpi=120)


def _stack_pieces(q: dict) -> dict:
  """Flexi's per-iteration terms (% of i.i.d.) from proportions `q` (flexi_ratio's terms)."""
  t, c, h, m, beta = (q['text_share'], q['coarse_ratio'], q['coarse_half'],
                      q['train_multiplier'], q['super_ratio'])
  return {'score: image (coarse)': 100 * beta * (1 - t) * c / m,
          'score: text': 100 * beta * t / m,
          'train: image, native half': 100 * (1 - h) * (1 - t),
          'train: image, coarse half': 100 * h * (1 - t) * c,
          'train: text': 100 * t,
          'sampler, rest': 100 * q['overhead']}


def _measured_stack(v: dict) -> dict:
  """A variant's measured Flexi pieces (% of its i.i.d. step), summing to its whole step."""
  p, iid = v['pieces'], v['iid']['flops']
  stack = {'score: image (coarse)': p['score_image_coarse'], 'score: text': p['score_text'],
           'train: image, native half': p['train_image_native_half'],
           'train: image, coarse half': p['train_image_coarse_half'],
           'train: text': p['train_text'] + p['train_loss'] + p['train_optimizer'],
           # The resize counted twice (pieces_sum) and the gather, logging (rest).
           'sampler, rest': p['sampler'] - p['resize_per_call'] + v['rest']}
  return {k: 100 * x / iid for k, x in stack.items()}


def _plot_stack(ax, result):
  stacks = {f'towers=\n{name}\n(measured)': _measured_stack(v)
            for name, v in result['variants'].items()}
  stacks['paper model,\n64 tokens\n(formula)'] = _stack_pieces(
      result['paper']['text_64']['proportions'])
  stacks["paper's count\n(72% cut on\nthe whole pair)"] = _stack_pieces(
      result['paper_count_proportions'])
  bottoms = np.zeros(len(stacks))
  for i, piece in enumerate(next(iter(stacks.values()))):
    values = np.array([s[piece] for s in stacks.values()])
    ax.bar(np.arange(len(stacks)), values, 0.6, bottom=bottoms, label=piece, color=f'C{i}')
    bottoms += values
  for i, total in enumerate(bottoms):
    ax.text(i, total + 3, f'{total:.0f}', ha='center', fontsize=8)
  ax.set_xticks(np.arange(len(stacks)), list(stacks), fontsize=7)
  ax.set_ylabel('% of i.i.d. iteration')
  ax.set_title('Flexi-JEST per iteration, by piece (train: fwd + bwd; text incl. loss, opt.)',
               fontsize=9)
  ax.legend(fontsize=7, loc='upper right')
  ax.grid(alpha=0.3, axis='y')
  ax.set_ylim(0, max(bottoms) * 1.4)


def _committed_fig4(path: str | None) -> dict | None:
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get('fig4_flops_per_iteration')


def run(out: str, fig4_summary: str | None) -> dict:
  variants = {}
  for towers in TOWER_VARIANTS:
    logging.info('Compiling towers=%s.', towers)
    variants[towers] = decompose(towers)
  paper = {}
  for length in (64, 16):
    pp = paper_proportions(length)
    q = Proportions(**pp['proportions'])
    pp['percent'], pp['percent_reuse'] = 100 * flexi_ratio(q), 100 * flexi_ratio(q, reuse=True)
    pp['jest_cached_percent'] = 100 * jest_ratio(q)
    paper[f'text_{length}'] = pp
  paper_64 = Proportions(**paper['text_64']['proportions'])
  counted = dataclasses.replace(paper_64, text_share=0.0, coarse_ratio=1 - PAPER_SCORING_CUT)
  result = {
      'command': 'python -m experiments.jest.flexi_cost --out results/jest',
      'variants': variants, 'paper': paper,
      'paper_count_proportions': dataclasses.asdict(counted),
      'paper_count_percent': 100 * flexi_ratio(counted),
      'substitutions': substitutions(Proportions(**variants['local']['proportions']), paper_64),
  }
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'flexi_cost.json'), 'w') as f:
    json.dump(result, f, indent=1, default=float)
  write_report(out, result, fig4_summary)
  return result


def write_report(out: str, result: dict, fig4_summary: str | None):
  analysis.write_text(os.path.join(out, 'flexi_cost.md'), report_lines(result))
  plot(out, result, _committed_fig4(fig4_summary))


def main():
  # As tests/conftest.py: LLVM -O0 and no MLIR fusion emitters cut compile time by half; XLA's
  # cost analysis is made on the optimised HLO before code generation, so it is unchanged.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0'
                             ' --xla_cpu_use_fusion_emitters=false').strip()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='results/jest')
  parser.add_argument('--fig4_summary', default='results/jest/summary.json',
                      help="The sweep's committed summary: its measured JEST bars.")
  parser.add_argument('--regenerate', action='store_true',
                      help='The report and figure again from <out>/flexi_cost.json (no compile).')
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO)
  if args.regenerate:
    with open(os.path.join(args.out, 'flexi_cost.json')) as f:
      write_report(args.out, json.load(f), args.fig4_summary)
  else:
    run(args.out, args.fig4_summary)


if __name__ == '__main__':
  main()
