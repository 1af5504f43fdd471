r"""Runs (or resumes) a whole Divide and Contrast pipeline: base MoCLR, embedding, k-means,
experts, distillation (methods/dnc.py), each stage in its own directory of --workdir.

  python -m big_vision_style.tools.dnc --config experiments/dnc/dnc_vs_moclr.py:runlocal \
      --workdir /tmp/dnc

Rerun the same command after an interruption: finished stages are skipped, the unfinished one
resumes from its last checkpoint. When the last stage finishes, `<workdir>/final.json` holds the
run's final row (the student's evaluations, FLOPs of every stage and their sum as
`flops/total`, cluster purity); exit code 75 means a stage stopped early (rerun to resume).
A config without a `dnc` block (the equal-compute MoCLR baseline) is trained as a plain run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import jax

from big_vision_style import config_utils
from big_vision_style import train
from big_vision_style.methods import dnc


def train_once(config, workdir: str) -> dict:
  """The final row of the DnC run (or plain run) `config` in `workdir`, training or resuming it
  unless `final.json` says it finished; for sweeps (experiments/sweep.py's train_fn)."""
  if not config.get('dnc'):
    return train.train_once(config, workdir)
  marker = os.path.join(workdir, train.FINAL_MARKER)
  if os.path.exists(marker):
    with open(marker) as f:
      return json.load(f)
  t0 = time.time()
  out = dnc.run(config, workdir, train_fn=train.train)
  if out.get('preempted'):
    logging.warning('%s: stage %s stopped before its end; rerun to resume it.', workdir,
                    out['preempted'])
    raise SystemExit(train.EXIT_PREEMPTED)
  final = {**dnc.summary_row(config, out), 'run_wall_s': time.time() - t0}
  if jax.process_index() == 0:
    with open(marker + '.tmp', 'w') as f:
      json.dump(final, f)
    os.replace(marker + '.tmp', marker)  # Atomic: a marker always means a finished run.
  return final


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='A DnC config, `path.py:arg`.')
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--jax_cache', default=None, help='Persistent compilation cache (default '
                      '<workdir>/jax_cache): the experts all compile the same program.')
  args = parser.parse_args()
  train.setup_script_logging()
  jax.config.update('jax_compilation_cache_dir',
                    args.jax_cache or os.path.join(args.workdir, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  final = train_once(config_utils.load_config(args.config), args.workdir)
  print(json.dumps({k: v for k, v in final.items() if k.startswith(('eval/', 'flops/', 'dnc/'))},
                   indent=1))


if __name__ == '__main__':
  main()
