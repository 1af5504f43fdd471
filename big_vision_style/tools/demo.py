r"""The main job of `make demo`: the uniform-sampling ViT baseline on Fashion-MNIST, short
version (about 2 minutes on a 2-core CPU), ending with a results table and a plot.

  python -m big_vision_style.tools.demo --workdir workdirs/demo

Rerunning with the same workdir resumes (or, if finished, just reports again).
"""
from __future__ import annotations

import argparse
import logging
import os

from big_vision_style import train
from big_vision_style.tools import report
from experiments.baseline import fashion_mnist


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='workdirs/demo')
  parser.add_argument('--config_arg', default='demo', help='Argument of the baseline config.')
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
  logging.getLogger('absl').addFilter(train.QuietLibraries())
  for handler in logging.getLogger().handlers:
    handler.addFilter(train.QuietLibraries())
  config = fashion_mnist.get_config(args.config_arg)
  train.train(config, args.workdir)
  model = ', '.join(f'{k}={v}' for k, v in config.model.items() if k != 'pool_type')
  table = report.report(args.workdir, args.workdir,
                        title=f'ViT ({model}) on Fashion-MNIST, uniform sampling')
  print('\nUniform-sampling ViT baseline on Fashion-MNIST (test split, 10,000 images):\n')
  print(table)
  print(f'\nPlot: {os.path.abspath(os.path.join(args.workdir, "accuracy.png"))}')


if __name__ == '__main__':
  main()
