"""Every test runs with 8 simulated CPU devices, as multi-device code is tested in CI.

Compiled programs are cached on disk (jax's persistent compilation cache), for this process
and the subprocesses tests start: many tests compile the same programs, and a rerun compiles
almost nothing. The cache lives in `.jax_cache/` (git-ignored; $BVS_JAX_CACHE overrides it);
CI may start it empty. Cached executables give the same results and the same XLA cost
analysis as freshly compiled ones.
"""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Subprocesses too (with libtpu installed, jax would probe for a TPU and hold its lock file).
os.environ['JAX_PLATFORMS'] = 'cpu'
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.environ.get('BVS_JAX_CACHE', os.path.join(_REPO, '.jax_cache')))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_platforms', 'cpu')


@pytest.fixture(scope='session', autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, 'tests expect 8 simulated CPU devices'
