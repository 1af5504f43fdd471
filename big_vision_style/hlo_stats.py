"""Collective operations of a compiled XLA program, read from its HLO text.

  compiled = jax.jit(step).lower(*args).compile()
  stats = hlo_stats.collectives(compiled)          # or hlo_stats.collectives(compiled.as_text())
  print(hlo_stats.format_table(stats))
  stats.summary()  # {'all-reduce': {'count', 'raw_bytes', 'moved_bytes_per_chip'}, ...}

Every collective instruction is listed once: all-reduce, all-gather, reduce-scatter, all-to-all,
collective-permute (also collective-broadcast and ragged-all-to-all), in their synchronous form,
their `-start`/`-done` pair (counted at the start, sized with the done's result), or wrapped in
`async-start` / a fusion (counted where the op itself stands, in the called computation). Every
computation of the module is scanned once, so nesting does not matter; an op inside a `while`
body is counted `executions` times when the loop's trip count is known (XLA's
`known_trip_count`, or a condition `i < N` as jax's scan lowers to; TPU programs print no
known_trip_count), and is flagged `unknown_trip_count` otherwise. An op inside a `conditional`'s
branch is counted once, as if its branch ran (so `summary` adds up every branch, an upper bound),
and its `branch` names the conditional and the branch ('conditional.3:1', the index into
branch_computations, or :true / :false; nested ones joined by '/'; '' outside any).

Sizes are what the *compiled, partitioned* program holds: per-device shapes. Two numbers per op:

  raw_bytes: the size S of the collective's buffer on one chip, the larger side of it:
    all-reduce         operand (= result) bytes, summed over a tuple's elements
    all-gather         result bytes (the gathered buffer)
    reduce-scatter     operand bytes (the buffer before scattering)
    all-to-all         operand bytes (= result bytes)
    collective-permute operand bytes
  moved_bytes_per_chip: the bytes each chip of a group of n sends (and receives) over the
  interconnect with a bandwidth-optimal algorithm (ring / bucket), a lower bound whatever the
  topology:
    all-reduce         2 (n-1)/n S    (a reduce-scatter then an all-gather)
    all-gather         (n-1)/n S      (a chip receives the n-1 shards it lacks)
    reduce-scatter     (n-1)/n S      (a chip sends the n-1 shards it does not keep)
    all-to-all         (n-1)/n S      (a chip keeps 1/n of its buffer, sends the rest)
    collective-permute S for a chip that sends to another, 0 for a self-pair
                       (reported for the busiest chip: S if any pair moves data)
  A group of one moves nothing. Time on the wire is roughly moved / (link bandwidth x links
  used), which depends on topology and is not modelled here.

What a jax collective becomes is the compiler's choice, and differs by backend: shard_map's
psum_scatter is a reduce-scatter on XLA CPU (jaxlib 0.10.2) but an all-reduce of the whole
buffer plus a local dynamic-slice on TPU v4 / v5e / v5p (libtpu 0.0.42.1, 4 KiB to 32 MiB per
device; v6e kept a 32 MiB one a reduce-scatter); GSPMD's partitioning of a sum to a sharded result is an all-reduce plus
dynamic-slice on all of them. Read the compiled program, not the source.

Only the text is read (no XLA bindings), so the same code reads CPU, TPU and GPU programs and
saved dumps. It reads the text that `compiled.as_text()` prints; StableHLO (`lowered.as_text()`)
is refused, since it has no partitioned shapes and no collectives chosen by the compiler yet.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Iterable

# Opcodes that move data between devices. Async `-start` forms count; `-done` forms do not.
KINDS = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute',
         'collective-broadcast', 'ragged-all-to-all')
_START = {k + '-start': k for k in KINDS}
_DONE = {k + '-done' for k in KINDS}

# Bytes per element; sub-byte types count fractionally (XLA packs them).
_DTYPE_BYTES = {
    'pred': 1, 's2': 0.25, 'u2': 0.25, 's4': 0.5, 'u4': 0.5, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2,
    's32': 4, 'u32': 4, 's64': 8, 'u64': 8, 'f16': 2, 'bf16': 2, 'f32': 4, 'f64': 8, 'c64': 8,
    'c128': 16, 'f4e2m1fn': 0.5, 'f8e3m4': 1, 'f8e4m3': 1, 'f8e4m3fn': 1, 'f8e4m3b11fnuz': 1,
    'f8e4m3fnuz': 1, 'f8e5m2': 1, 'f8e5m2fnuz': 1, 'f8e8m0fnu': 1, 'token': 0,
}
# An array shape inside any shape string: `f32[8,128]`, `bf16[<=16,4]`, `f32[]`.
_ARRAY_RE = re.compile(r'\b([a-z]+[0-9a-z]*)\[([^\]]*)\]')
_INSTR_RE = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$')
_COMP_RE = re.compile(r'^\s*(ENTRY\s+)?%?([\w.\-]+)\s*(\(.*\))?\s*(->.*)?\{\s*$')
_CALLEE_ATTRS = ('calls', 'to_apply', 'body', 'condition', 'true_computation',
                 'false_computation', 'branch_computations', 'called_computations')


@dataclasses.dataclass(frozen=True)
class Array:
  dtype: str
  shape: tuple[int, ...]

  @property
  def bytes(self) -> float:
    return _DTYPE_BYTES.get(self.dtype, 0) * math.prod(self.shape)

  def __str__(self):
    return f'{self.dtype}[{",".join(map(str, self.shape))}]'


@dataclasses.dataclass
class Collective:
  """One collective instruction of the module (per-device shapes)."""
  kind: str                   # One of KINDS.
  name: str                   # The instruction's name (the -start's for async pairs).
  computation: str            # The computation it stands in.
  operands: list[Array]
  results: list[Array]
  group_size: int             # Devices per replica group (n); for a permute, devices taking part.
  num_groups: int
  is_async: bool              # A -start/-done pair or an async-start wrapper.
  executions: int = 1         # Times one call of the entry runs it (known loop trip counts).
  unknown_trip_count: bool = False  # Inside a while loop whose trip count XLA does not know.
  op_name: str = ''           # jax's metadata op_name, to trace it back to the source.
  branch: str = ''            # The conditional branch it sits in ('' when it always runs).

  @property
  def dtypes(self) -> list[str]:
    return sorted({a.dtype for a in self.operands + self.results})

  @property
  def operand_bytes(self) -> float:
    return sum(a.bytes for a in self.operands)

  @property
  def result_bytes(self) -> float:
    return sum(a.bytes for a in self.results)

  @property
  def raw_bytes(self) -> float:
    """S, the buffer the collective works on (see the module docstring), one execution."""
    if self.kind == 'all-gather':
      return self.result_bytes
    return self.operand_bytes or self.result_bytes

  @property
  def moved_bytes_per_chip(self) -> float:
    """Bytes each chip sends over the interconnect, bandwidth-optimal, one execution."""
    n, s = self.group_size, self.raw_bytes
    if self.kind == 'collective-permute':
      return s if n > 1 else 0.0
    if n <= 1:
      return 0.0
    factor = 2.0 if self.kind == 'all-reduce' else 1.0
    return factor * (n - 1) / n * s

  def as_dict(self) -> dict[str, Any]:
    return dict(kind=self.kind, name=self.name, computation=self.computation,
                operands=[str(a) for a in self.operands], results=[str(a) for a in self.results],
                dtypes=self.dtypes, operand_bytes=self.operand_bytes,
                result_bytes=self.result_bytes, raw_bytes=self.raw_bytes,
                moved_bytes_per_chip=self.moved_bytes_per_chip, group_size=self.group_size,
                num_groups=self.num_groups, is_async=self.is_async, executions=self.executions,
                unknown_trip_count=self.unknown_trip_count, op_name=self.op_name,
                branch=self.branch)


@dataclasses.dataclass
class CollectiveStats:
  ops: list[Collective]
  num_partitions: int
  replica_count: int

  def of_kind(self, kind: str) -> list[Collective]:
    return [op for op in self.ops if op.kind == kind]

  def summary(self) -> dict[str, dict[str, float]]:
    """Per kind: instruction count, and raw / moved bytes per step (times loop trip counts)."""
    out = {}
    for op in self.ops:
      s = out.setdefault(op.kind, dict(count=0, executions=0, raw_bytes=0.0,
                                       moved_bytes_per_chip=0.0))
      s['count'] += 1
      s['executions'] += op.executions
      s['raw_bytes'] += op.raw_bytes * op.executions
      s['moved_bytes_per_chip'] += op.moved_bytes_per_chip * op.executions
    return out

  @property
  def moved_bytes_per_chip(self) -> float:
    return sum(op.moved_bytes_per_chip * op.executions for op in self.ops)

  def moved_bytes_per_chip_by_branch(self, choose=min) -> float:
    """Moved bytes per chip with each conditional counted by one branch, `choose` (min or max)
    over its branches' bytes: min is the cheaper path (for selection.gather's cond, the
    windowed common path; its exact fallback is the expensive branch), max the worst case.
    `moved_bytes_per_chip` adds every branch, an upper bound on any one step."""
    def cost(ops):
      return sum(op.moved_bytes_per_chip * op.executions for op in ops)

    def total(ops, depth):
      always = [op for op in ops if len(_branch_path(op)) <= depth]
      branched = {}
      for op in ops:
        path = _branch_path(op)
        if len(path) > depth:
          cond, _, branch = path[depth].rpartition(':')
          branched.setdefault(cond, {}).setdefault(branch, []).append(op)
      return cost(always) + sum(choose(total(b, depth + 1) for b in branches.values())
                                for branches in branched.values())

    return total(self.ops, 0)

  @property
  def has_unknown_trip_counts(self) -> bool:
    return any(op.unknown_trip_count for op in self.ops)

  def as_dict(self) -> dict[str, Any]:
    return dict(num_partitions=self.num_partitions, replica_count=self.replica_count,
                summary=self.summary(), moved_bytes_per_chip=self.moved_bytes_per_chip,
                moved_bytes_per_chip_cheapest_branches=self.moved_bytes_per_chip_by_branch(min),
                moved_bytes_per_chip_costliest_branches=self.moved_bytes_per_chip_by_branch(max),
                has_unknown_trip_counts=self.has_unknown_trip_counts,
                ops=[op.as_dict() for op in self.ops])


def _branch_path(op) -> list[str]:
  return [part for part in op.branch.split('/') if part]


# ----------------------------------------------------------------------------- parsing helpers


def parse_arrays(shape: str) -> list[Array]:
  """Every array in a (possibly tuple, possibly laid-out) HLO shape string, in order."""
  out = []
  for dtype, dims in _ARRAY_RE.findall(shape):
    if dtype not in _DTYPE_BYTES:
      continue  # Not an element type (e.g. a layout's tiling); skip rather than guess.
    sizes = tuple(int(d.lstrip('<=')) for d in dims.split(',') if d.strip())
    out.append(Array(dtype, sizes))
  return out


def _balanced(text: str, start: int) -> int:
  """Index just past the bracket group opening at text[start] ('(', '{' or '[')."""
  pairs = {'(': ')', '{': '}', '[': ']'}
  stack = []
  for i in range(start, len(text)):
    c = text[i]
    if c in pairs:
      stack.append(pairs[c])
    elif stack and c == stack[-1]:
      stack.pop()
      if not stack:
        return i + 1
  raise ValueError(f'Unbalanced brackets in HLO text: {text[start:start + 80]!r}...')


def _attr(attrs: str, key: str) -> str | None:
  """The value of `key=...` in an instruction's attribute text (bracket groups kept whole)."""
  m = re.search(r'(?:^|[,\s])' + re.escape(key) + r'=', attrs)
  if not m:
    return None
  i = m.end()
  if i < len(attrs) and attrs[i] in '({[':
    return attrs[i:_balanced(attrs, i)]
  j = i
  while j < len(attrs) and attrs[j] not in ', ':
    j += 1
  return attrs[i:j]


def _split_groups(text: str) -> list[list[int]]:
  return [[int(x) for x in g.split(',') if x.strip()] for g in re.findall(r'\{([^{}]*)\}', text)]


def replica_group_shape(attrs: str, num_devices: int) -> tuple[int, int]:
  """(group size, number of groups) from an instruction's replica_groups, in any of XLA's forms:
  explicit `{{0,1},{2,3}}`, all devices `{}`, iota `[2,4]<=[8]` / `[4,2]<=[2,4]T(1,0)`, or mesh
  axes `mesh['x'=2,'y'=4] {'y'}` (sub-axes `'y':(1)2`). Collective-permute has no groups: its
  source_target_pairs give the devices that take part."""
  pairs = _attr(attrs, 'source_target_pairs')
  if pairs is not None:
    moving = [p for p in _split_groups(pairs) if len(p) == 2 and p[0] != p[1]]
    devices = {d for p in moving for d in p}
    return max(len(devices), 1), 1  # The devices that take part, as one "group".
  m = re.search(r'replica_groups=', attrs)
  if not m:
    return num_devices, 1
  rest = attrs[m.end():]
  if rest.startswith('{'):
    groups = _split_groups(rest[:_balanced(rest, 0)])
    groups = [g for g in groups if g]
    if not groups:  # `{}`: one group of every device.
      return num_devices, 1
    return len(groups[0]), len(groups)
  iota = re.match(r'\[(\d+),(\d+)\]<=', rest)
  if iota:
    return int(iota.group(2)), int(iota.group(1))
  mesh = re.match(r'mesh\[([^\]]*)\]', rest)
  if mesh:
    sizes = dict(re.findall(r"'?([^',=\s]+)'?=(\d+)", mesh.group(1)))
    total = math.prod(int(v) for v in sizes.values()) or num_devices
    brace = rest.find('{', mesh.end())
    axes = rest[brace + 1:_balanced(rest, brace) - 1] if brace >= 0 else ''
    size = 1
    for ref in filter(None, (a.strip() for a in axes.split(','))):
      sub = re.match(r"'?([^':]+)'?:\((\d+)\)(\d+)", ref)
      size *= int(sub.group(3)) if sub else int(sizes.get(ref.strip("'"), 1))
    return size, max(total // max(size, 1), 1)
  raise ValueError(f'Unrecognised replica_groups in HLO: {rest[:120]!r}. Extend '
                   'hlo_stats.replica_group_shape for this form.')


@dataclasses.dataclass
class _Instr:
  name: str
  shape: str
  opcode: str
  operands: list[str]
  attrs: str
  is_root: bool


def _parse_instr(line: str) -> _Instr | None:
  m = _INSTR_RE.match(line)
  if not m:
    return None
  name, rest = m.group(1), m.group(2).strip()
  if rest.startswith('('):  # Tuple shape.
    end = _balanced(rest, 0)
  else:  # Array shape with layout: `f32[8,128]{1,0:T(8,128)}`; no spaces inside.
    end = rest.find(' ')
    if end < 0:
      return None
  shape, rest = rest[:end], rest[end:].strip()
  op = re.match(r'([\w\-]+)\(', rest)
  if not op:
    return None
  close = _balanced(rest, op.end() - 1)
  inside = rest[op.end():close - 1]
  operands = re.findall(r'%([\w.\-]+)', inside)
  if not operands:  # Text printed without '%' sigils: `all-reduce(f32[8]{0} a, b)`.
    operands = [t.strip().split(' ')[-1] for t in re.sub(r'\([^()]*\)|\{[^{}]*\}', '', inside)
                .split(',') if t.strip()]
  return _Instr(name, shape, op.group(1), operands, rest[close:],
                line.lstrip().startswith('ROOT'))


def _depth(line: str) -> int:
  """Net bracket depth of a line, ignoring quoted strings (backend_config JSON)."""
  depth, quoted = 0, False
  for i, c in enumerate(line):
    if c == '"' and (i == 0 or line[i - 1] != '\\'):
      quoted = not quoted
    elif not quoted:
      depth += (c in '({[') - (c in ')}]')
  return depth


def _logical_lines(text: str) -> Iterable[str]:
  """One line per instruction: `compiled.as_text()` prints them so, but hand-written or parser
  style HLO breaks long instructions over several lines, which are joined here."""
  pending = ''
  for line in text.splitlines():
    pending = f'{pending} {line.strip()}' if pending else line
    body = pending.rstrip()
    if body.endswith('{') and _COMP_RE.match(body):  # A computation header opens a block.
      body = body[:-1]
    if _depth(body) <= 0:
      yield pending
      pending = ''
  if pending:
    yield pending


def _module_text(compiled_or_text) -> str:
  text = compiled_or_text if isinstance(compiled_or_text, str) else compiled_or_text.as_text()
  if isinstance(text, (list, tuple)):  # Some jax versions return one text per program.
    text = '\n'.join(text)
  if 'HloModule' not in text and ('func.func' in text or 'module @' in text):
    raise ValueError('This is StableHLO (`lowered.as_text()`): collectives are chosen by the '
                     'compiler. Pass the compiled object (`lowered.compile()`) or its as_text().')
  return text


def _trip_count(while_instr: _Instr, comps: dict[str, list[_Instr]]) -> int | None:
  """A while loop's trip count: XLA's `known_trip_count` if it printed one, else read off a
  condition of the form `i < N` (how jax lowers scan and static fori_loop, i counting from 0).
  None when neither is there (a data-dependent while)."""
  known = re.search(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)', while_instr.attrs)
  if known:
    return int(known.group(1))
  cond = (_attr(while_instr.attrs, 'condition') or '').lstrip('%')
  instrs = comps.get(cond, [])
  by_name = {ins.name: ins for ins in instrs}
  root = next((ins for ins in instrs if ins.is_root), None)
  if root is None or root.opcode != 'compare' or len(root.operands) != 2:
    return None
  direction = _attr(root.attrs, 'direction')
  lhs, rhs = (by_name.get(o) for o in root.operands)

  def constant(ins):  # The value of a scalar integer constant, else None.
    if ins is None or ins.opcode != 'constant' or not re.match(r'[su]\d+\[\]', ins.shape):
      return None
    # _parse_instr keeps a constant's literal as its one "operand" (no '%': it is no name).
    literal = ins.operands[0] if ins.operands else ''
    return int(literal) if re.fullmatch(r'-?\d+', literal) else None

  if direction == 'LT' and constant(rhs) is not None and constant(lhs) is None:
    return max(constant(rhs), 0)
  if direction == 'GT' and constant(lhs) is not None and constant(rhs) is None:
    return max(constant(lhs), 0)
  return None


# ----------------------------------------------------------------------------- the analysis


def collectives(compiled_or_text) -> CollectiveStats:
  """Every collective of a compiled program (`jitted.lower(...).compile()` or its `as_text()`)."""
  text = _module_text(compiled_or_text)
  header = re.search(r'HloModule\s+\S+(.*)', text)
  header = header.group(1) if header else ''
  num_partitions = int((re.search(r'num_partitions=(\d+)', header) or [0, 1])[1])
  replica_count = int((re.search(r'replica_count=(\d+)', header) or [0, 1])[1])
  num_devices = num_partitions * replica_count

  # Pass 1: computations and their instructions.
  comps: dict[str, list[_Instr]] = {}
  entry, current = None, None
  for line in _logical_lines(text):
    if current is None:
      m = _COMP_RE.match(line)
      if m and ' = ' not in line.split('(')[0]:
        current = m.group(2)
        comps[current] = []
        if m.group(1):
          entry = current
      continue
    if line.strip().startswith('}'):
      current = None
      continue
    instr = _parse_instr(line)
    if instr is not None:
      comps[current].append(instr)
  if not comps:
    raise ValueError('No HLO computations found: is this the text of a compiled XLA program?')
  if entry is None:
    entry = list(comps)[-1]  # XLA prints the entry computation last.

  # Who calls whom; a while's body and condition run trip-count times (-1: unknown).
  calls: dict[str, list[tuple[str, int, str]]] = {c: [] for c in comps}
  for comp, instrs in comps.items():
    for ins in instrs:
      trips = _trip_count(ins, comps) if ins.opcode == 'while' else 1
      for key in _CALLEE_ATTRS:
        value = _attr(ins.attrs, key)
        if value is None:
          continue
        for position, callee in enumerate(re.findall(r'%?([\w.\-]+)', value)):
          if callee in comps:
            looped = ins.opcode == 'while' and key in ('body', 'condition')
            branch = ''
            if ins.opcode == 'conditional' and key.endswith('_computation'):
              branch = f'{ins.name}:{key.split("_")[0]}'  # true_computation -> ':true'.
            elif ins.opcode == 'conditional' and key == 'branch_computations':
              branch = f'{ins.name}:{position}'
            calls[comp].append((callee, (-1 if trips is None else trips) if looped else 1,
                                branch))

  # Executions of each computation per call of the entry: the sum over call paths of the product
  # of trip counts (a loop of unknown trip count counts once, and flags what it holds).
  executions: dict[str, int] = {}
  unknown: set[str] = set()

  branch_of: dict[str, str] = {}  # The branch path a computation was first reached by.

  def visit(comp, times, in_unknown, depth=0, branch=''):
    if depth > 64:
      raise ValueError('HLO call graph too deep (cyclic?); cannot count loop executions.')
    executions[comp] = executions.get(comp, 0) + times
    branch_of.setdefault(comp, branch)
    if in_unknown:
      unknown.add(comp)
    for callee, trips, where in calls.get(comp, ()):
      inner = '/'.join(filter(None, (branch, where)))
      visit(callee, times * (trips if trips >= 0 else 1), in_unknown or trips < 0, depth + 1,
            inner)

  visit(entry, 1, False)

  # Bodies of XLA's generic async wrapper (`async-start(...), calls=%body`): an op inside one
  # runs asynchronously, and is counted there (the wrapper itself is no collective opcode).
  async_bodies = {callee for instrs in comps.values() for ins in instrs
                  if ins.opcode == 'async-start'
                  for callee in re.findall(r'%?([\w.\-]+)', _attr(ins.attrs, 'calls') or '')}

  # Pass 2: the collectives, sized from the shapes their operands were defined with.
  ops = []
  for comp, instrs in comps.items():
    shapes = {ins.name: ins.shape for ins in instrs}
    done_of = {}  # -start name -> the -done consuming it (its shape is the result).
    for ins in instrs:
      if ins.opcode in _DONE and ins.operands:
        done_of[ins.operands[0]] = ins
    for ins in instrs:
      if ins.opcode in KINDS:
        kind, is_async, result_shape = ins.opcode, comp in async_bodies, ins.shape
      elif ins.opcode in _START:
        kind, is_async = _START[ins.opcode], True
        done = done_of.get(ins.name)
        result_shape = done.shape if done is not None else ins.shape
      else:
        continue
      operands = [a for o in ins.operands for a in parse_arrays(shapes.get(o, ''))]
      results = parse_arrays(result_shape)
      if ins.opcode in _START and done_of.get(ins.name) is None and operands:
        # No -done in sight: the start's tuple shape holds (operands..., results..., scratch).
        results = results[len(operands):2 * len(operands)] or results
      group_size, num_groups = replica_group_shape(ins.attrs, num_devices)
      op_name = re.search(r'op_name="([^"]*)"', ins.attrs)
      ops.append(Collective(kind=kind, name=ins.name, computation=comp, operands=operands,
                            results=results, group_size=group_size, num_groups=num_groups,
                            is_async=is_async, executions=executions.get(comp, 1),
                            unknown_trip_count=comp in unknown,
                            branch=branch_of.get(comp, ''),
                            op_name=op_name.group(1) if op_name else ''))
  return CollectiveStats(ops, num_partitions, replica_count)


# ----------------------------------------------------------------------------- output


def _fmt_bytes(b: float) -> str:
  for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if b >= size:
      return f'{b / size:.2f} {unit}'
  return f'{b:.0f} B'


def format_table(stats: CollectiveStats, max_ops: int = 50) -> str:
  """A plain-text table of the ops (largest first) and the per-kind summary."""
  lines = [f'{"kind":<19} {"n":>5} {"x":>5} {"raw/op":>11} {"moved/chip":>11}  shapes']
  ordered = sorted(stats.ops, key=lambda o: -o.moved_bytes_per_chip * o.executions)
  for op in ordered[:max_ops]:
    shapes = ', '.join(map(str, op.operands))[:60]
    flag = '?' if op.unknown_trip_count else ''
    lines.append(f'{op.kind:<19} {op.group_size:>5} {op.executions:>4}{flag:1} '
                 f'{_fmt_bytes(op.raw_bytes):>11} {_fmt_bytes(op.moved_bytes_per_chip):>11}  '
                 f'{shapes}')
  if len(ordered) > max_ops:
    lines.append(f'... {len(ordered) - max_ops} more')
  lines.append('per step:')
  for kind, s in sorted(stats.summary().items()):
    lines.append(f'  {kind:<19} {s["count"]:>4} ops {s["executions"]:>5} runs  raw '
                 f'{_fmt_bytes(s["raw_bytes"]):>11}  moved/chip '
                 f'{_fmt_bytes(s["moved_bytes_per_chip"]):>11}')
  if not stats.ops:
    lines.append('  (no collectives)')
  return '\n'.join(lines)


def to_json(stats: CollectiveStats) -> str:
  return json.dumps(stats.as_dict(), indent=1)


def kinds_of(ops: Iterable[Collective]) -> set[str]:
  return {op.kind for op in ops}
