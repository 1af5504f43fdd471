"""Every test runs with 8 simulated CPU devices, as multi-device code is tested in CI.

Compiled programs are cached on disk (jax's persistent compilation cache), for this process
and the subprocesses tests start: many tests compile the same programs, and a rerun compiles
almost nothing. The cache lives in `.jax_cache/` (git-ignored; $BVS_JAX_CACHE overrides it);
CI may start it empty. Cached executables give the same results and the same XLA cost
analysis as freshly compiled ones.
"""
import os

# LLVM -O0 for the CPU code XLA generates: the tests' programs are tiny and run a few steps, so
# their compile time dominates, and -O0 cuts it by about a third (measured: 3 trainer tests,
# 60 -> 40 s of CPU). What the tests compare (layout against layout, resumed against
# uninterrupted, fused against unfused, XLA's cost analysis, made before code generation)
# holds at any optimisation level; users' runs keep XLA's default. Inherited by subprocesses.
# The CPU backend's MLIR fusion emitters off too (XLA then emits fusions with its older
# elemental IR emitter): another third of the compile CPU (measured: 3 tests, 141 -> 94 s).
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8'
                           ' --xla_backend_optimization_level=0'
                           ' --xla_cpu_use_fusion_emitters=false').strip()
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


# The slowest modules first (measured), so that a parallel run (`pytest -n 2 --dist loadfile`,
# as `make test` runs) starts them at once instead of leaving one for the end.
SLOWEST_FIRST = ('test_multiprocess_methods.py', 'test_multiprocess_preemption.py',
                 'test_image_text_train.py', 'test_dnc.py', 'test_multiprocess.py',
                 'test_forward_reuse.py', 'test_rela.py', 'test_bad_students.py',
                 'test_train.py')


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: order within a
  # module, and of the other modules, is kept.


# $BVS_COMPILE_PROFILE=DIR: each pytest process writes, per test, the seconds jax spent tracing,
# lowering and compiling in it (jax.monitoring's compile events), how many backend compiles it
# ran and how many programs it found in the persistent cache, to DIR/compile_<pid>.json: where
# the suite's compile time goes. Subprocesses (the multi-process tests' workers) are not counted.
_PROFILE_DIR = os.environ.get('BVS_COMPILE_PROFILE')
if _PROFILE_DIR:
  import collections  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from jax import monitoring  # pylint: disable=g-import-not-at-top

  _profile = collections.defaultdict(lambda: collections.defaultdict(float))
  _current = ['<collection>']

  def _on_duration(event, duration, **unused):
    if event.startswith('/jax/core/compile/'):
      row = _profile[_current[0]]
      row[event.rsplit('/', 1)[-1]] += duration
      if event.endswith('backend_compile_duration'):
        row['compiles'] += 1

  def _on_event(event, **unused):
    if event == '/jax/compilation_cache/cache_hits':
      _profile[_current[0]]['cache_hits'] += 1

  monitoring.register_event_duration_secs_listener(_on_duration)
  monitoring.register_event_listener(_on_event)

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_protocol(item, nextitem):
    del nextitem
    _current[0] = item.nodeid
    yield
    _current[0] = '<between tests>'

  def pytest_sessionfinish(session):
    del session
    os.makedirs(_PROFILE_DIR, exist_ok=True)
    with open(os.path.join(_PROFILE_DIR, f'compile_{os.getpid()}.json'), 'w') as f:
      json.dump(_profile, f, indent=1)
