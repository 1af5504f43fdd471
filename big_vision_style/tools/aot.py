r"""Ahead-of-time compilation of a train step for a TPU slice, on this CPU host (no TPU needed).

  python -m big_vision_style.tools.aot --config experiments/jest/filter_ratio.py:tpu \
      --topology v5p:8x8x4 --topology v5p-128 --out aot.json
  python -m big_vision_style.tools.aot --list
  python -m big_vision_style.tools.aot --config ... --topology v4:2x2x2 --lower_only

`--lower_only` lowers without compiling (seconds) and prints the program's digest (sha256 of its
StableHLO text): equal digests compile to the same program, so a report stays valid across code
edits that do not change the step (tools/aot_sweep.py relies on it).

libtpu's compiler runs here against abstract TPU devices (`jax.experimental.topologies`, the
way google/maxtext's train_compile.py does it): the step is lowered with abstract arguments and
compiled for the target slice exactly as it would be there, so its memory, FLOPs and
collectives are those of the real program, and an out-of-memory shows up before any TPU is
rented. It needs the `libtpu` package (the wheel `jax[tpu]` pins); nothing runs on a TPU.

Python API (what the CLI uses, and what tests drive with their own steps):

  mesh = topology_mesh('v5p:2x2x1')                 # a Mesh over 4 abstract v5p chips
  report = compile_on('v5p:2x2x1', build)           # build(mesh) -> program
  report.fits, report.needed_bytes, report.flops_total, report.collectives['summary']

`build(mesh)` returns a *program*: any object with `.name` (str), `.fn` (a `jax.jit`-wrapped
step) and `.args` (a tuple of abstract arguments: pytrees of `jax.ShapeDtypeStruct` that carry
`NamedSharding`s on `mesh`). `--config` builds it with `build_program(config, mesh)`, which the
trainer provides (see `_load_builder`); `--builder module:function` names another builder.

Topology spellings (`--list` prints them all), case-insensitive:
  GEN:AxB[xC]  chips per dimension: v5p:8x8x4, v4:2x2x4, v5e:16x16, v6e:4x8, v3:4x4, v2:2x2
               (aliases: v5 = v5p; v5litepod, v5lite = v5e; v6, trillium = v6e)
  GEN-N        Cloud TPU accelerator types, mapped to Google's default slice shape:
               v2/v3/v4/v5p count TensorCores (2 per chip: v5p-128 = 64 chips = 4x4x4),
               v5e/v5litepod/v6e count chips (v5litepod-256 = 16x16).
A JAX device is one chip on v4, v5p (megacore), v5e and v6e, and one TensorCore on v2 and v3
(2 per chip), so memory below is per device, which is per chip except on v2/v3.

Memory per device, from `compiled.memory_analysis()`:
  argument + output - alias + temp is what the program holds (alias: donated arguments that the
  outputs reuse); XLA's heap-simulated `peak_memory_in_bytes` can exceed that sum when donated
  buffers cannot be updated in place (an Adam step here: sum 113 MiB, peak 161 MiB), so
  needed = max(sum, peak) + generated code. It is compared with the HBM the compiler itself
  allows a program (`Generation.usable_hbm_gib`, read off libtpu's out-of-memory messages: a
  little under the chip's nominal HBM). When the compiler itself runs out of memory (it checks),
  its own figures are reported.

Compile time depends on the program, hardly on the slice: a data-parallel step is one SPMD
program per device. Measured here (libtpu 0.0.42.1, a shared 2-core host): a 2-layer MLP Adam
step 1-3 s at 4, 64 and 1024 chips; a ViT-B/16 AdamW step (batch 32 per chip) 90-110 s of CPU
(180-240 s wall) at v5p:4x4x4 and at v5p:8x8x16.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import time
from typing import Any, Callable, Protocol, Sequence

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
  name: str                 # Our spelling: v2, v3, v4, v5e, v5p, v6e.
  libtpu_name: str          # libtpu's topology prefix ('v5' is v5p).
  ndim: int                 # Dimensions of the chip grid (3-D torus or 2-D).
  devices_per_chip: int     # JAX devices per chip: 2 TensorCores on v2/v3, else 1.
  hbm_gib_per_chip: float   # Nominal HBM of a chip (Cloud TPU system architecture pages).
  usable_hbm_gib: float     # Per JAX device, as libtpu 0.0.42.1 reports it when out of memory.
  accelerator_counts_cores: bool  # 'v4-8' counts TensorCores (2 per chip); 'v5e-8' counts chips.

  @property
  def hbm_gib_per_device(self) -> float:
    return self.hbm_gib_per_chip / self.devices_per_chip


# Nominal HBM per chip: v2 16 GiB, v3 32 GiB (2 cores of 16), v4 32 GiB, v5e 16 GB, v5p 95 GB,
# v6e 32 GB (cloud.google.com/tpu/docs/{v2,v3,v4,v5e,v5p,v6e}; those pages write GB for GiB-sized
# HBM stacks). Usable: "exceeds available HBM (N G)" from compiling an oversized program for each.
GENERATIONS = {
    'v2': Generation('v2', 'v2', 2, 2, 16, 7.48, True),
    'v3': Generation('v3', 'v3', 2, 2, 32, 15.48, True),
    'v4': Generation('v4', 'v4', 3, 1, 32, 30.75, True),
    'v5e': Generation('v5e', 'v5e', 2, 1, 16, 15.75, False),
    'v5p': Generation('v5p', 'v5', 3, 1, 95, 95.74, True),
    'v6e': Generation('v6e', 'v6e', 2, 1, 32, 31.25, False),
}
_ALIASES = {'v5': 'v5p', 'v5litepod': 'v5e', 'v5lite': 'v5e', 'v6': 'v6e', 'trillium': 'v6e'}

# Default slice shapes by chip count (Google's tables for the accelerator types; maxtext's
# accelerator_to_spec_map.py has the same). 3-D shapes past 64 chips are computed instead.
_DEFAULT_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}
_DEFAULT_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8),
               128: (8, 16), 256: (16, 16), 512: (16, 32), 1024: (32, 32)}


@dataclasses.dataclass(frozen=True)
class Topology:
  generation: Generation
  chips: tuple[int, ...]    # Chips per dimension.
  num_slices: int = 1

  @property
  def name(self) -> str:
    s = f'{self.generation.name}:{"x".join(map(str, self.chips))}'
    return s if self.num_slices == 1 else f'{s}*{self.num_slices}'

  @property
  def num_chips(self) -> int:
    return math.prod(self.chips) * self.num_slices

  @property
  def accelerator_type(self) -> str:
    """Cloud TPU's name of the slice (what `gcloud ... --accelerator-type` takes): v4-16 for
    v4:2x2x2 (TensorCores), v5litepod-8 for v5e:2x4 (chips)."""
    gen = self.generation
    count = self.num_chips * 2 if gen.accelerator_counts_cores else self.num_chips
    prefix = {'v5e': 'v5litepod'}.get(gen.name, gen.name)
    return f'{prefix}-{count}' + ('' if self.num_slices == 1 else f'*{self.num_slices}')

  @property
  def num_devices(self) -> int:
    return self.num_chips * self.generation.devices_per_chip

  def topology_desc_kwargs(self) -> dict[str, Any]:
    """Arguments of jax.experimental.topologies.get_topology_desc, as maxtext's table has them."""
    gen = self.generation
    kw = dict(topology_name=f'{gen.libtpu_name}:{"x".join(map(str, self.chips))}',
              platform='tpu')
    if self.num_slices > 1:
      kw['num_slices'] = self.num_slices
    if gen.name in ('v2', 'v3'):
      return kw  # libtpu's defaults: one device per TensorCore.
    single = math.prod(self.chips) == 1
    kw['chip_config_name'] = 'megacore' if gen.ndim == 3 else 'default'  # One device per chip.
    kw['chips_per_host_bounds'] = (1, 1, 1) if single else (2, 2, 1)
    if gen.ndim == 3:  # Slices of whole 4x4x4 cubes are tori; smaller ones are meshes.
      kw['wrap'] = (all(d % 4 == 0 for d in self.chips),) * 3
    else:  # 2-D pods wrap along a full 16-chip edge.
      kw['wrap'] = tuple(d == 16 for d in self.chips) + (False,)
    return kw


def _generation(name: str) -> Generation:
  key = _ALIASES.get(name.lower(), name.lower())
  if key not in GENERATIONS:
    raise ValueError(f'Unknown TPU generation {name!r}; expected one of '
                     f'{", ".join(GENERATIONS)} (or {", ".join(_ALIASES)}). See --list.')
  return GENERATIONS[key]


def _default_shape(gen: Generation, chips: int) -> tuple[int, ...]:
  if gen.ndim == 2:
    if chips in _DEFAULT_2D:
      return _DEFAULT_2D[chips]
  elif chips in _DEFAULT_3D:
    return _DEFAULT_3D[chips]
  elif chips % 64 == 0:
    # Whole cubes: dimensions that are multiples of 4, as close to a cube as possible.
    best = min((c, b, a) for a in range(4, chips + 1, 4) for b in range(a, chips + 1, 4)
               if chips % (a * b) == 0 and (c := chips // (a * b)) >= b and c % 4 == 0)
    return best[::-1]
  raise ValueError(f'No default {gen.name} slice of {chips} chips; give its shape instead, '
                   f'e.g. {gen.name}:{"x".join(["2"] * gen.ndim)}. See --list.')


def parse_topology(spec: str | Topology, num_slices: int = 1) -> Topology:
  """'v5p:8x8x4', 'v4:2x2x4', 'v5e:16x16', 'v5litepod-256', 'v5p-128' (see the module doc).
  A '*K' suffix ('v5p:4x4x4*2') means K slices joined over the data-center network."""
  if isinstance(spec, Topology):
    return spec
  text = spec.strip()
  if '*' in text:
    text, _, k = text.partition('*')
    num_slices *= int(k)
  m = re.fullmatch(r'([a-zA-Z0-9]+?):(\d+(?:x\d+)+)', text)
  if m:
    gen = _generation(m.group(1))
    chips = tuple(int(d) for d in m.group(2).split('x'))
    if len(chips) != gen.ndim:
      raise ValueError(f'{spec!r}: {gen.name} slices have {gen.ndim} dimensions, e.g. '
                       f'{gen.name}:{"x".join(["2"] * gen.ndim)}.')
    return Topology(gen, chips, num_slices)
  m = re.fullmatch(r'([a-zA-Z0-9]+?)-(\d+)', text)
  if m:
    gen = _generation(m.group(1))
    count = int(m.group(2))
    chips = count // 2 if gen.accelerator_counts_cores else count
    if gen.accelerator_counts_cores and count % 2:
      raise ValueError(f'{spec!r}: {gen.name}-N counts TensorCores (2 per chip); N must be even.')
    return Topology(gen, _default_shape(gen, chips), num_slices)
  raise ValueError(f'Cannot read topology {spec!r}: write GEN:AxBxC (chips per dimension, e.g. '
                   'v5p:8x8x4, v5e:16x16) or an accelerator type (v5p-128, v5litepod-256). '
                   'See --list.')


# ----------------------------------------------------------------------------- libtpu


def libtpu_available() -> bool:
  """Whether libtpu can be loaded: the `libtpu` package, or a library at $TPU_LIBRARY_PATH."""
  if os.path.isfile(os.environ.get('TPU_LIBRARY_PATH', '')):
    return True
  try:
    return importlib.util.find_spec('libtpu') is not None
  except (ImportError, ValueError):  # ValueError: a None placeholder in sys.modules.
    return False


def _prepare_libtpu_environment():
  """Settings for compiling with libtpu on a host that has no TPU. They must be in place before
  libtpu loads; on a TPU VM nothing is changed.
    TPU_SKIP_MDS_QUERY           no queries to the GCE metadata server (there is none here).
    ALLOW_MULTIPLE_LIBTPU_LOAD   libtpu otherwise takes /tmp/libtpu_lockfile for the process's
                                 life: one other jax process without JAX_PLATFORMS=cpu (which
                                 probes the TPU plugin and keeps the lock) makes every
                                 compilation here fail with "ABORTED: ... lockfile".
    TPU_WORKER_HOSTNAMES,        describe this host as a single-worker one, silencing libtpu's
    TPU_HOST_BOUNDS              "could not determine TPU worker hostnames" errors on stderr.
  """
  from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
  if hardware_utils.num_available_tpu_chips_and_device_id()[0]:
    return
  for key, value in (('TPU_SKIP_MDS_QUERY', '1'), ('ALLOW_MULTIPLE_LIBTPU_LOAD', '1'),
                     ('TPU_WORKER_HOSTNAMES', 'localhost'), ('TPU_HOST_BOUNDS', '1,1,1')):
    os.environ.setdefault(key, value)


def topology_devices(topology: str | Topology, num_slices: int = 1) -> list:
  """The abstract (compile-only) devices of a TPU slice."""
  topo = parse_topology(topology, num_slices)
  if not libtpu_available():
    raise RuntimeError('Compiling for TPU needs libtpu, the package jax[tpu] pins: pip install '
                       "'jax[tpu]==<your jax version>' (it installs on any x86-64 Linux host).")
  _prepare_libtpu_environment()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  devices = topologies.get_topology_desc(**topo.topology_desc_kwargs()).devices
  if len(devices) != topo.num_devices:
    raise RuntimeError(f'libtpu made {len(devices)} devices for {topo.name}; expected '
                       f'{topo.num_devices}. Its topology naming may have changed.')
  return list(devices)


def topology_mesh(topology: str | Topology, axis_names: Sequence[str] = ('data',),
                  mesh_shape: Sequence[int] | None = None, num_slices: int = 1):
  """A jax Mesh over a TPU slice's abstract devices, laid out by `mesh_utils` so that neighbours
  on each axis are neighbours on the torus. One axis spans every device unless `mesh_shape` says
  otherwise; with several slices, the first axis is the one that crosses them. Axis types are
  Auto, as in sharding.make_mesh."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
  topo = parse_topology(topology, num_slices)
  devices = topology_devices(topo)
  axis_names = tuple(axis_names)
  if mesh_shape is None:
    if len(axis_names) != 1:
      raise ValueError(f'Give mesh_shape for the {len(axis_names)} axes {axis_names}.')
    mesh_shape = (len(devices),)
  mesh_shape = tuple(mesh_shape)
  if math.prod(mesh_shape) != len(devices):
    raise ValueError(f'mesh_shape {mesh_shape} has {math.prod(mesh_shape)} devices; '
                     f'{topo.name} has {len(devices)}.')
  if topo.num_slices > 1:
    if mesh_shape[0] % topo.num_slices:
      raise ValueError(f'The first mesh axis ({mesh_shape[0]}) must split into the '
                       f'{topo.num_slices} slices.')
    per_slice = (mesh_shape[0] // topo.num_slices,) + mesh_shape[1:]
    dcn = (topo.num_slices,) + (1,) * (len(mesh_shape) - 1)
    grid = mesh_utils.create_hybrid_device_mesh(per_slice, dcn, devices)
  else:
    grid = mesh_utils.create_device_mesh(mesh_shape, devices)
  auto = (jax.sharding.AxisType.Auto,) * len(axis_names)
  return jax.sharding.Mesh(grid, axis_names, axis_types=auto)


# ----------------------------------------------------------------------------- compiling


class Program(Protocol):
  name: str
  fn: Any      # jax.jit-wrapped step.
  args: tuple  # Abstract arguments (ShapeDtypeStructs with NamedShardings on the mesh).


@dataclasses.dataclass
class StepProgram:
  """A plain Program, for builders that have nothing more to say."""
  name: str
  fn: Any
  args: tuple


@dataclasses.dataclass
class AotReport:
  name: str
  topology: str
  generation: str
  num_chips: int
  num_devices: int
  hbm_bytes_per_device: float      # Nominal.
  usable_hbm_bytes: float          # What the compiler lets a program use, per device.
  fits: bool
  needed_bytes: float              # Per device; see the module docstring.
  margin_bytes: float              # usable - needed (negative: short by that much).
  memory: dict[str, float] | None  # memory_analysis() fields, per device; None after an OOM.
  flops_per_device: float | None   # XLA's cost analysis: loop bodies counted once.
  flops_total: float | None        # flops_per_device x devices, plus loop corrections.
  uncorrected_loops: int | None
  collectives: dict[str, Any] | None  # hlo_stats: summary, moved_bytes_per_chip, ops.
  lower_s: float
  compile_s: float                 # Wall time of lowered.compile().
  compile_cpu_s: float             # CPU time of this process in it (the host may be shared).
  compiler_oom: str | None = None  # libtpu's own out-of-memory message, if it raised one.
  notes: list[str] = dataclasses.field(default_factory=list)
  lowered_digest: str | None = None  # program_digest of what was compiled.

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @property
  def moved_bytes_per_chip(self) -> float | None:
    """Per step, each conditional counted by its cheaper branch: for selection.gather, the
    windowed common path rather than its rare exact fallback (the JSON has both bounds)."""
    if self.collectives is None:
      return None
    return self.collectives.get('moved_bytes_per_chip_cheapest_branches',
                                self.collectives['moved_bytes_per_chip'])

  def not_fit_message(self) -> str:
    unit = 'chip' if GENERATIONS[self.generation].devices_per_chip == 1 else 'TensorCore'
    larger = _larger_slice(self.topology)
    return (f'{self.name} on {self.topology} does not fit: needs '
            f'{self.needed_bytes / GIB:.2f} GiB per {unit} of '
            f'{self.usable_hbm_bytes / GIB:.2f} GiB HBM on {self.generation}; use bf16 '
            f'parameters and activations, remat (jax.checkpoint), a smaller batch per chip, or a '
            f'larger slice such as {larger} (a larger slice shrinks only what is sharded, the '
            f'batch: replicated parameters and optimizer state take the same room on every chip).')

  @staticmethod
  def header() -> str:
    return (f'{"program":<24} {"topology":<14} {"chips":>6} {"needs GiB":>9} {"HBM GiB":>8} '
            f'{"fits":>4} {"margin":>7} {"TFLOP/step":>10} {"moved/chip":>11} {"compile s":>9}')

  def row(self) -> str:
    tflops = '-' if self.flops_total is None else f'{self.flops_total / 1e12:.3g}'
    moved = '-' if self.moved_bytes_per_chip is None else f'{self.moved_bytes_per_chip / GIB:.3g} GiB'
    return (f'{self.name[:24]:<24} {self.topology:<14} {self.num_chips:>6} '
            f'{self.needed_bytes / GIB:>9.2f} {self.usable_hbm_bytes / GIB:>8.2f} '
            f'{"yes" if self.fits else "NO":>4} {self.margin_bytes / GIB:>+7.2f} {tflops:>10} '
            f'{moved:>11} {self.compile_s:>9.1f}')


def _larger_slice(topology: str) -> str:
  """The next default slice of the same generation with twice the chips, as a suggestion."""
  topo = parse_topology(topology)
  for chips in (topo.num_chips * 2, topo.num_chips * 4):
    try:
      return parse_topology(f'{topo.generation.name}:'
                            f'{"x".join(map(str, _default_shape(topo.generation, chips)))}').name
    except ValueError:
      continue
  return f'{topo.name}*2 (two slices)'


def _memory(compiled) -> dict[str, float]:
  m = compiled.memory_analysis()
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
            'temp_size_in_bytes', 'generated_code_size_in_bytes', 'peak_memory_in_bytes')
  out = {f.replace('_size_in_bytes', '_bytes').replace('_in_bytes', '_bytes'):
         float(getattr(m, f, 0) or 0) for f in fields}
  out['sum_bytes'] = (out['argument_bytes'] + out['output_bytes'] - out['alias_bytes'] +
                      out['temp_bytes'])
  return out


def _parse_oom(message: str) -> float | None:
  """Bytes a program needs, from libtpu's out-of-memory message (two wordings seen)."""
  units = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}
  for pattern in (r'required for [^(]*\(([\d.]+)([KMGT]?)\)', r'Used ([\d.]+)([KMGT]?) of'):
    m = re.search(pattern, message)
    if m:
      return float(m.group(1)) * units[m.group(2)]
  return None


def program_digest(lowered) -> str:
  """The first 16 hex digits of the sha256 of the lowered StableHLO text (no debug locations).
  Two compiles with the same digest, topology and libtpu compile the same program, whatever
  code produced it: aot_sweep keeps a report across code edits that leave the step unchanged."""
  return hashlib.sha256(lowered.as_text().encode()).hexdigest()[:16]


def lower_on(topology: str | Topology, build: Callable[[Any], Program], *,
             axis_names: Sequence[str] = ('data',), mesh_shape: Sequence[int] | None = None,
             num_slices: int = 1) -> dict[str, Any]:
  """Builds and lowers `build(mesh)` for the slice without compiling it (seconds, not
  minutes): {'topology', 'lowered_digest', 'lower_s'}."""
  topo = parse_topology(topology, num_slices)
  program = build(topology_mesh(topo, axis_names, mesh_shape))
  t0 = time.perf_counter()
  lowered = program.fn.trace(*program.args).lower()
  return {'topology': topo.name, 'lowered_digest': program_digest(lowered),
          'lower_s': time.perf_counter() - t0}


def compile_on(topology: str | Topology, build: Callable[[Any], Program], *,
               axis_names: Sequence[str] = ('data',), mesh_shape: Sequence[int] | None = None,
               num_slices: int = 1) -> AotReport:
  """Builds `build(mesh)` for the slice's mesh, lowers and compiles it with libtpu on this host,
  and reports memory, FLOPs, collectives and compile time. An out-of-memory from the compiler
  is a report with fits=False, not an exception."""
  from big_vision_style import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from big_vision_style import hlo_stats  # pylint: disable=g-import-not-at-top

  topo = parse_topology(topology, num_slices)
  gen = topo.generation
  mesh = topology_mesh(topo, axis_names, mesh_shape)
  program = build(mesh)
  name = getattr(program, 'name', None) or 'program'
  common = dict(name=name, topology=topo.name, generation=gen.name, num_chips=topo.num_chips,
                num_devices=topo.num_devices, hbm_bytes_per_device=gen.hbm_gib_per_device * GIB,
                usable_hbm_bytes=gen.usable_hbm_gib * GIB)

  t0 = time.perf_counter()
  traced = program.fn.trace(*program.args)
  lowered = traced.lower()
  lower_s = time.perf_counter() - t0
  digest = program_digest(lowered)
  t0, c0 = time.perf_counter(), time.process_time()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    message = str(e)
    if 'RESOURCE_EXHAUSTED' not in message and 'Ran out of memory' not in message:
      raise
    needed = _parse_oom(message) or float('nan')
    usable = common['usable_hbm_bytes']
    avail = re.search(r'available HBM \(([\d.]+)G\)', message)
    if avail:  # The compiler's own figure is the one that binds.
      usable = float(avail.group(1)) * GIB
    common['usable_hbm_bytes'] = usable
    return AotReport(**common, fits=False, needed_bytes=needed, margin_bytes=usable - needed,
                     memory=None, flops_per_device=None, flops_total=None,
                     uncorrected_loops=None, collectives=None, lower_s=lower_s,
                     compile_s=time.perf_counter() - t0,
                     compile_cpu_s=time.process_time() - c0, compiler_oom=message.strip()[:2000],
                     lowered_digest=digest)
  compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0

  memory = _memory(compiled)
  needed = max(memory['sum_bytes'], memory['peak_memory_bytes']) + memory['generated_code_bytes']
  usable = common['usable_hbm_bytes']
  notes = []
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else {}
  per_device = float((cost or {}).get('flops', 0.0))
  try:  # Scan bodies: XLA counts them once; flops.py adds the other trip-count - 1 times.
    extra, uncorrected = flops_lib.loop_correction(traced.jaxpr)
  except Exception as e:  # pylint: disable=broad-except
    extra, uncorrected = 0.0, None
    notes.append(f'loop correction of FLOPs failed ({type(e).__name__}: {e}); scan bodies are '
                 'counted once')
  stats = hlo_stats.collectives(compiled)
  if stats.has_unknown_trip_counts:
    notes.append('some collectives sit in while loops of unknown trip count: counted once')
  return AotReport(**common, fits=needed <= usable, needed_bytes=needed,
                   margin_bytes=usable - needed, memory=memory, flops_per_device=per_device,
                   flops_total=per_device * topo.num_devices + extra,
                   uncorrected_loops=uncorrected, collectives=stats.as_dict(), lower_s=lower_s,
                   compile_s=compile_s, compile_cpu_s=compile_cpu_s, notes=notes,
                   lowered_digest=digest)


# ----------------------------------------------------------------------------- the CLI

# Where --config finds the trainer's builder, `build_program(config, mesh) -> program`.
DEFAULT_BUILDER = 'big_vision_style.programs:build_program'


def _load_builder(spec: str) -> Callable:
  module_name, _, attr = spec.partition(':')
  try:
    module = importlib.import_module(module_name)
    return getattr(module, attr)
  except (ImportError, AttributeError) as e:
    raise ValueError(f'--builder {spec!r}: cannot import {attr!r} from {module_name!r} ({e}).') \
        from e


def list_topologies() -> str:
  lines = ['generation  aliases             devices/chip  HBM/chip  usable/device  examples']
  for gen in GENERATIONS.values():
    aliases = ', '.join(a for a, g in _ALIASES.items() if g == gen.name) or '-'
    if gen.ndim == 3:
      sizes = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    else:
      sizes = [1, 4, 8, 16, 32, 64, 128, 256] if gen.name in ('v5e', 'v6e') else [4, 16, 64, 256]
    examples = []
    for chips in sizes:
      shape = 'x'.join(map(str, _default_shape(gen, chips)))
      acc = chips * (2 if gen.accelerator_counts_cores else 1)
      examples.append(f'{gen.name}:{shape} = {gen.name}-{acc}')
    first = (f'{gen.name:<11} {aliases:<19} {gen.devices_per_chip:>12}  '
             f'{gen.hbm_gib_per_chip:>5g} GiB  {gen.usable_hbm_gib:>9.2f} GiB  ')
    lines.append(first + examples[0])
    lines.extend(' ' * len(first) + e for e in examples[1:])
  lines.append('GEN:AxB[xC] counts chips per dimension; GEN-N counts TensorCores on v2/v3/v4/v5p '
               'and chips on v5e/v6e; a "*K" suffix compiles for K slices.')
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', help='path.py[:arg], e.g. experiments/jest/filter_ratio.py:tpu')
  parser.add_argument('--topology', action='append', default=[],
                      help='TPU slice, e.g. v5p:8x8x4 or v5litepod-256; repeat for a sweep')
  parser.add_argument('--num_slices', type=int, default=1, help='slices joined over DCN')
  parser.add_argument('--builder', default=DEFAULT_BUILDER,
                      help='module:function, called as function(config, mesh) -> program')
  parser.add_argument('--out', help='write the reports here as JSON')
  parser.add_argument('--collectives', action='store_true', help='print each collective too')
  parser.add_argument('--list', action='store_true', help='list the accepted topologies')
  parser.add_argument('--lower_only', action='store_true',
                      help='lower, do not compile: print the program digest per topology')
  args = parser.parse_args(argv)

  if args.list:
    print(list_topologies())
    return 0
  if not args.topology:
    parser.error('give --topology (see --list)')
  if args.builder == DEFAULT_BUILDER and not args.config:
    parser.error('give --config (or --builder module:function for a step of your own)')
  # Before anything imports jax: this host runs nothing on a TPU, and jax must not probe one.
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  try:
    topologies = [parse_topology(t, args.num_slices) for t in args.topology]
    builder = _load_builder(args.builder)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  config = None
  if args.config:
    from big_vision_style import config_utils  # pylint: disable=g-import-not-at-top
    config = config_utils.load_config(args.config)

  if args.lower_only:
    lowered = [lower_on(topo, lambda mesh: builder(config, mesh)) for topo in topologies]
    for r in lowered:
      print(f'{r["topology"]:<14} {r["lowered_digest"]}  lowered in {r["lower_s"]:.1f} s')
    if args.out:
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      with open(args.out, 'w') as f:
        json.dump(lowered, f, indent=1)
    return 0

  reports = []
  print(AotReport.header(), flush=True)
  for topo in topologies:
    report = compile_on(topo, lambda mesh: builder(config, mesh))
    reports.append(report)
    print(report.row(), flush=True)
    if args.collectives and report.collectives:
      summary = report.collectives['summary']
      print('  collectives per step:', ', '.join(
          f'{k} x{v["executions"]} raw {v["raw_bytes"] / 2**20:.1f} MiB, moved/chip '
          f'{v["moved_bytes_per_chip"] / 2**20:.1f} MiB' for k, v in summary.items()) or 'none')
    for note in report.notes:
      print(f'  note: {note}')
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump([r.as_dict() for r in reports], f, indent=1)
  failed = [r for r in reports if not r.fits]
  for r in failed:
    print(r.not_fit_message(), file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
