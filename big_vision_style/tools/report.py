r"""Turns a run's metrics.jsonl into a results table (markdown), raw numbers (JSON) and a plot of
test accuracy vs learner steps and vs FLOPs.

  python -m big_vision_style.tools.report --workdir workdirs/baseline --out results/baseline
"""
from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use('Agg')  # Headless: CI and TPU VMs have no display.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from big_vision_style import metrics_writer  # pylint: disable=g-import-not-at-top,wrong-import-position

EVAL_KEY = 'eval/test/accuracy'
COLUMNS = ('step', 'examples_seen', 'flops/learner', 'flops/total', 'wall_s', 'train/loss',
           'eval/test/loss', EVAL_KEY)


def eval_curve(workdir: str) -> list[dict]:
  """The logged rows that carry a test evaluation, with the columns a report needs."""
  return [{k: row[k] for k in COLUMNS if k in row}
          for row in metrics_writer.read_metrics(workdir) if EVAL_KEY in row]


def markdown_table(curve: list[dict]) -> str:
  lines = ['| step | examples seen | learner FLOPs | total FLOPs | wall (s) | train loss | '
           'test loss | test accuracy |', '|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in curve:
    lines.append(f'| {r["step"]} | {r["examples_seen"]:,} | {r["flops/learner"]:.3g} | '
                 f'{r["flops/total"]:.3g} | {r["wall_s"]:.0f} | {r.get("train/loss", float("nan")):.4f} | '
                 f'{r.get("eval/test/loss", float("nan")):.4f} | {r[EVAL_KEY]:.4f} |')
  return '\n'.join(lines)


def plot(curves: dict[str, list[dict]], path: str, title: str = ''):
  fig, (ax_steps, ax_flops) = plt.subplots(1, 2, figsize=(11, 4.2))
  for label, curve in curves.items():
    steps = [r['step'] for r in curve]
    acc = [100 * r[EVAL_KEY] for r in curve]
    ax_steps.plot(steps, acc, marker='o', ms=3, label=label)
    ax_flops.plot([r['flops/total'] for r in curve], acc, marker='o', ms=3, label=label)
  ax_steps.set_xlabel('learner steps')
  ax_flops.set_xlabel('total training FLOPs (XLA cost analysis)')
  ax_flops.set_xscale('log')
  for ax in (ax_steps, ax_flops):
    ax.set_ylabel('Fashion-MNIST test accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def report(workdir: str, out: str, label: str = 'uniform (baseline)', title: str = '') -> str:
  curve = eval_curve(workdir)
  if not curve:
    raise ValueError(f'{workdir}/metrics.jsonl has no rows with {EVAL_KEY}: did the run reach '
                     'its first evaluation?')
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'curve.json'), 'w') as f:
    json.dump({'workdir': workdir, 'label': label, 'rows': curve}, f, indent=1)
  table = markdown_table(curve)
  with open(os.path.join(out, 'table.md'), 'w') as f:
    f.write(table + '\n')
  plot({label: curve}, os.path.join(out, 'accuracy.png'), title)
  return table


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', default=None, help='Default: the workdir.')
  parser.add_argument('--label', default='uniform (baseline)')
  parser.add_argument('--title', default='')
  args = parser.parse_args()
  out = args.out or args.workdir
  print(report(args.workdir, out, args.label, args.title))
  print(f'\nWrote {out}/accuracy.png, {out}/curve.json, {out}/table.md')


if __name__ == '__main__':
  main()
