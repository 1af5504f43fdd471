"""The probe that chose the v2 benchmark (results/jest/v2/README.md): i.i.d. runs with one knob changed.

  PYTHONPATH=. python experiments/jest/benchmark_probe.py NAME CONFIG_ARG [JSON_OVERRIDES]

JSON_OVERRIDES: config paths to values, plus "style" (a string of flags) and "reference" (train
the reference config instead). Style "garment": captions from ALT_TEXT_TEMPLATES with its last
template replaced by "a {size} {garment}" (the probe ran before the alt-text style existed; it
patches captions.TEMPLATES in-process); "fixed": layout='centred'. Appends to
/tmp/probe/results.jsonl; the rows are committed in results/jest/v2/benchmark_probe.json (the
style is in each row's name: base = v1, g = garment, gfix = garment + fixed).
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

GARMENT_T = captions.ALT_TEXT_TEMPLATES[:-1] + ('a {size} {garment}',)

def patch(style):
  if 'garment' in style:
    captions.TEMPLATES = GARMENT_T
    captions.VOCABULARY = captions._vocabulary()

def main(name, arg, **over):
  style = over.pop('style', 'attributes')
  patch(style)
  from experiments.jest import reference
  # benchmark=v1: the probe patches v1's captions and layout (it ran when v1 was the default).
  cfg = (reference if over.pop('reference', False) else filter_ratio).get_config(
      f'{arg},benchmark=v1')
  if 'fixed' in style:
    cfg.data.layout = 'centred'
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
    f.write(json.dumps({'name': name, 'arg': arg, 'style': style,
                        'over': {k: str(v) for k, v in over.items()}, **row}) + '\n')

if __name__ == '__main__':
  name, arg = sys.argv[1], sys.argv[2]
  over = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
  main(name, arg, **over)
