"""Wall-clock timing for the benchmarks: the best of `reps` calls after a warm-up."""
import time

import jax


def best_time(fn, reps: int) -> float:
  """Seconds of the fastest of `reps` calls of `fn` (waiting for its jax results), after one
  warm-up call (compilation, caches). The minimum is the least noisy estimate on a shared
  machine: interference only ever adds time."""
  jax.block_until_ready(fn())
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
  return best
