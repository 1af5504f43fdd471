"""Data sources looked up by name: `get_source(data_config, split)`.

`config.data.name` is `fashion_mnist`, `tfds:<tfds name>` (e.g. `tfds:imagenet2012`) or
`array_record`; for image-text data `captioned_fashion_mnist` or `image_text` (ArrayRecord or
TFDS); the remaining keys of `config.data` go to that source's `make_source`.
`config.data.label_noise` applies to the splits in `config.data.noise_splits` (default: train).
`config.data.classes`, if set, keeps only the examples of those classes (e.g. a prior trained on
half of the classes), in every split.
"""
from __future__ import annotations

from big_vision_style import registry
from big_vision_style.datasets import base


def get_source(data_config, split: str):
  kwargs = dict(data_config)
  name = kwargs.pop('name')
  classes = kwargs.pop('classes', None)
  # Label noise models noisy *training* data: evaluation and held-out splits stay clean unless
  # `noise_splits` says otherwise.
  if split not in kwargs.pop('noise_splits', ('train',)):
    kwargs['label_noise'] = 0.0
  if name.startswith('tfds:'):
    module, kwargs['tfds_name'] = 'tfds_source', name.split(':', 1)[1]
  else:
    module = name
  mod = registry.lookup('datasets', module, 'data source',
                        'fashion_mnist, sklearn_digits, tfds:<name>, array_record, '
                        'captioned_fashion_mnist or image_text')
  source = mod.make_source(split=split, **kwargs)
  return base.Subset.of_classes(source, classes) if classes is not None else source
