"""The probe that chose the v2 benchmark (results/jest/v2/README.md): i.i.d. runs with one knob changed.

  PYTHONPATH=. python experiments/jest/benchmark_probe.py NAME CONFIG_ARG [JSON_OVERRIDES]

It predates the `caption_style` / `layout` data knobs and patches captions.py in-process
instead: style "garment" = ALT_TEXT_TEMPLATES (one template differed: "a {size} {garment}"),
"fixed" = every garment large and centred (layout="centred"). Appends to /tmp/probe/results.jsonl;
the rows are committed in results/jest/v2/benchmark_probe.json.
"""
import json, sys, os, time
import numpy as np
from big_vision_style.datasets import captions
from experiments.jest import filter_ratio
from big_vision_style import train

def attr_prompts(n_per_class=64, seed=123):
  rng = np.random.default_rng(seed)
  out = []
  attrs = captions.sample_attributes(n_per_class * 10, seed)
  for c in range(10):
    out.append([captions.caption(attrs, c * n_per_class + i, c) for i in range(n_per_class)])
  return out

GARMENT_T = (
    'a photo of a {garment}', '{garment}', 'my new {garment}', '{garment} for sale',
    'buy this {garment} online', 'product photo: {garment}', 'close-up of a {garment}',
    'cheap {garment}', 'a {colour} {garment}', '{colour} {garment} for sale',
    '{garment} on a {background} background', 'a {size} {garment}')

def patch(style):
  if 'fixed' in style:
    for k in captions.SIZES: captions.SIZES[k] = 0.85
    for k in captions.POSITIONS: captions.POSITIONS[k] = (1, 1)
  if 'mild' in style:
    captions.SIZES.update(small=0.7, medium=0.8, large=0.9)
  if 'garment' in style:
    captions.TEMPLATES = GARMENT_T
    captions.VOCABULARY = captions._vocabulary()

def main(name, arg, **over):
  patch(over.pop('style', 'attributes'))
  from experiments.jest import reference
  # benchmark=v1: the probe patches v1's captions and layout (it ran when v1 was the default).
  cfg = (reference if over.pop('reference', False) else filter_ratio).get_config(
      f'{arg},benchmark=v1')
  for k, v in over.items():
    node = cfg
    *path, last = k.split('.')
    for p in path: node = node[p]
    node[last] = v
  cfg.evals.zeroshot_attr = dict(type='zero_shot', split='test', log_steps=cfg.evals.zeroshot.log_steps,
                                 batch_size=1000, prompts=attr_prompts())
  wd = f'/tmp/probe/wd/{name}'
  t = time.time()
  row = train.train_once(cfg, wd)
  row = {k: v for k, v in row.items() if k.startswith('eval/')}
  row['wall'] = time.time() - t
  print(name, json.dumps(row))
  with open('/tmp/probe/results.jsonl', 'a') as f:
    f.write(json.dumps({'name': name, 'arg': arg, 'over': {k: str(v) for k, v in over.items()}, **row}) + '\n')

if __name__ == '__main__':
  name, arg = sys.argv[1], sys.argv[2]
  over = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
  main(name, arg, **over)
