"""hlo_stats: the collectives XLA compiles shard_map / jit programs into, on 8 CPU devices.

Shapes are per device: a [64, 128] f32 array sharded over 8 devices is f32[8,128] (4 KiB) on each.
"""
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import pytest

from big_vision_style import hlo_stats
from big_vision_style import sharding
from big_vision_style.hlo_stats import Array

N = 8
X = jax.ShapeDtypeStruct((64, 128), jnp.float32)
LOCAL = 8 * 128 * 4  # Bytes of one device's [8, 128] f32 block.


@pytest.fixture(scope='module')
def mesh():
  return sharding.make_mesh()


def _stats(mesh, body, in_specs, out_specs, arg=X, check_vma=True):
  fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=check_vma))
  return hlo_stats.collectives(fn.lower(arg).compile())


def test_psum_is_one_all_reduce_of_the_local_block(mesh):
  stats = _stats(mesh, lambda a: jax.lax.psum(a, 'data'), P('data'), P())
  [op] = stats.ops
  assert op.kind == 'all-reduce'
  assert op.operands == [Array('f32', (8, 128))] and op.results == [Array('f32', (8, 128))]
  assert op.dtypes == ['f32']
  assert (op.group_size, op.num_groups) == (N, 1)
  assert op.raw_bytes == LOCAL
  assert op.moved_bytes_per_chip == pytest.approx(2 * (N - 1) / N * LOCAL)  # Ring all-reduce.
  assert stats.summary() == {'all-reduce': dict(count=1, executions=1, raw_bytes=LOCAL,
                                                moved_bytes_per_chip=2 * (N - 1) / N * LOCAL)}
  assert stats.num_partitions == N


def test_psum_scatter_compiles_to_a_reduce_scatter_on_cpu(mesh):
  # What this XLA (jaxlib 0.10.2, CPU) makes of shard_map's psum_scatter: one reduce-scatter,
  # no all-reduce. (GSPMD's own partitioning of a sum does not get there on CPU: see below.)
  stats = _stats(mesh, lambda a: jax.lax.psum_scatter(a, 'data', tiled=True), P('data'),
                 P('data'))
  assert [op.kind for op in stats.ops] == ['reduce-scatter']
  [op] = stats.ops
  assert op.operands == [Array('f32', (8, 128))] and op.results == [Array('f32', (1, 128))]
  assert op.group_size == N
  assert op.raw_bytes == LOCAL  # The operand, before scattering.
  assert op.moved_bytes_per_chip == pytest.approx((N - 1) / N * LOCAL)


def test_gspmd_sum_to_a_sharded_result_is_an_all_reduce_on_cpu(mesh):
  # The same reduction left to GSPMD (jit, sharded in and out) compiles on this XLA CPU into an
  # all-reduce of the whole [1024] sum followed by a local dynamic-slice: XLA CPU does not turn
  # the pattern into a reduce-scatter, so every device moves 2x what a reduce-scatter would.
  fn = jax.jit(lambda a: a.sum(0), in_shardings=NamedSharding(mesh, P('data')),
               out_shardings=NamedSharding(mesh, P('data')))
  compiled = fn.lower(jax.ShapeDtypeStruct((64, 1024), jnp.float32)).compile()
  [op] = hlo_stats.collectives(compiled).ops
  assert (op.kind, op.operands) == ('all-reduce', [Array('f32', (1024,))])
  assert 'dynamic-slice' in compiled.as_text()


def test_all_gather_is_sized_by_its_result(mesh):
  stats = _stats(mesh, lambda a: jax.lax.all_gather(a, 'data', tiled=True), P('data'), P(),
                 check_vma=False)
  [op] = stats.ops
  assert op.kind == 'all-gather'
  assert op.operands == [Array('f32', (8, 128))] and op.results == [Array('f32', (64, 128))]
  assert op.raw_bytes == N * LOCAL
  assert op.moved_bytes_per_chip == pytest.approx((N - 1) / N * N * LOCAL)


def test_all_to_all_counts_its_tuple_of_chunks_once(mesh):
  # XLA CPU splits the local block into N chunks and emits one tuple-shaped all-to-all of them.
  stats = _stats(mesh, lambda a: jax.lax.all_to_all(a, 'data', 0, 0, tiled=True), P('data'),
                 P('data'))
  [op] = stats.ops
  assert op.kind == 'all-to-all'
  assert op.operand_bytes == LOCAL and op.result_bytes == LOCAL
  assert len(op.operands) in (1, N)  # One array, or the tuple of N chunks this CPU build emits.
  assert op.moved_bytes_per_chip == pytest.approx((N - 1) / N * LOCAL)


def test_tuple_all_reduce_and_loop_trip_counts(mesh):
  def body(a):
    pair = jax.lax.psum((a, 2 * a), 'data')  # One tuple-shaped all-reduce of two buffers.
    looped = jax.lax.scan(lambda c, _: (jax.lax.psum(c, 'data') / N, None), a, None, length=5)
    return pair[0] + pair[1] + looped[0]

  stats = _stats(mesh, body, P('data'), P('data'), check_vma=False)
  by_executions = sorted(stats.of_kind('all-reduce'), key=lambda op: op.executions)
  assert [op.executions for op in by_executions] == [1, 5]
  tuple_op, loop_op = by_executions
  assert tuple_op.raw_bytes == 2 * LOCAL and len(tuple_op.operands) == 2
  assert loop_op.raw_bytes == LOCAL and not loop_op.unknown_trip_count
  assert stats.summary()['all-reduce']['raw_bytes'] == 2 * LOCAL + 5 * LOCAL


def test_data_parallel_gradient_is_one_all_reduce_of_the_weights(mesh):
  def loss(w, x):
    return jnp.sum(jnp.tanh(x @ w))

  grad = jax.jit(jax.grad(loss), in_shardings=(NamedSharding(mesh, P()),
                                               NamedSharding(mesh, P('data'))),
                 out_shardings=NamedSharding(mesh, P()))
  compiled = grad.lower(jax.ShapeDtypeStruct((128, 256), jnp.float32), X).compile()
  [op] = hlo_stats.collectives(compiled).ops
  # GSPMD writes this group in the mesh-axes form, `mesh['axis_0'=8,...] {'axis_0'}`.
  assert (op.kind, op.group_size, op.raw_bytes) == ('all-reduce', N, 128 * 256 * 4)
  assert hlo_stats.collectives(compiled.as_text()).as_dict() == \
      hlo_stats.collectives(compiled).as_dict()  # The text reads the same as the object.


def test_no_collectives(mesh):
  fn = jax.jit(lambda a: jnp.tanh(a) * 2, in_shardings=NamedSharding(mesh, P('data')))
  stats = hlo_stats.collectives(fn.lower(X).compile())
  assert stats.ops == [] and stats.summary() == {} and stats.moved_bytes_per_chip == 0
  assert '(no collectives)' in hlo_stats.format_table(stats)


def test_stablehlo_is_refused_with_a_hint(mesh):
  with pytest.raises(ValueError, match='compile'):
    hlo_stats.collectives(jax.jit(jnp.tanh).lower(X).as_text())


@pytest.mark.parametrize('attrs,expected', [
    ('replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}', (4, 2)),
    ('replica_groups={}, to_apply=%add', (8, 1)),
    ('replica_groups=[2,4]<=[8], to_apply=%add', (4, 2)),
    ('replica_groups=[4,2]<=[2,4]T(1,0), dimensions={0}', (2, 4)),
    ("replica_groups=mesh['x'=2,'y'=4] {'y'}, to_apply=%add", (4, 2)),
    ("replica_groups=mesh['x'=2,'y'=4] {'x','y'}, to_apply=%add", (8, 1)),
    ("replica_groups=mesh['x'=8], device_ids=([8]<=[2,4]T(1,0)) {'x':(1)2}, to_apply=%a", (2, 4)),
    ('source_target_pairs={{0,1},{1,2},{2,3},{3,0}}', (4, 1)),
    ('source_target_pairs={{0,0},{1,1}}', (1, 1)),
])
def test_replica_group_forms(attrs, expected):
  assert hlo_stats.replica_group_shape(attrs, num_devices=8) == expected


def test_shapes_with_tpu_layouts_and_tuples():
  shape = ('(bf16[4,1024]{1,0:T(8,128)(2,1)}, f32[512]{0:T(512)S(1)}, u32[]{:S(2)}, '
           '/*index=3*/s4[8,8]{1,0:T(8,128)(4,1)E(4)})')
  assert hlo_stats.parse_arrays(shape) == [Array('bf16', (4, 1024)), Array('f32', (512,)),
                                           Array('u32', ()), Array('s4', (8, 8))]
  assert [a.bytes for a in hlo_stats.parse_arrays(shape)] == [8192, 2048, 4, 32]


# Async and wrapped forms, as TPU and GPU programs print them (written here in XLA's text format;
# the CPU compiler emits none of them). Each collective must be counted exactly once.
_ASYNC_MODULE = """\
HloModule jit_step, is_scheduled=true, num_partitions=8

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%wrapped_a2a (p: bf16[8,64]) -> bf16[8,64] {
  %p = bf16[8,64]{1,0:T(8,128)(2,1)} parameter(0)
  ROOT %all-to-all.1 = bf16[8,64]{1,0:T(8,128)(2,1)} all-to-all(%p), channel_id=4, replica_groups=[2,4]<=[8], dimensions={0}
}

%fused_ar (q: f32[256]) -> f32[256] {
  %q = f32[256]{0:T(256)} parameter(0)
  %all-reduce.9 = f32[256]{0:T(256)} all-reduce(%q), channel_id=5, replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add
  ROOT %neg = f32[256]{0:T(256)} negate(%all-reduce.9)
}

%cond (c: (s32[], f32[128])) -> pred[] {
  %c = (s32[]{:T(128)}, f32[128]{0}) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%c), index=0
  %limit = s32[]{:T(128)} constant(6)
  ROOT %lt = pred[]{:T(512)} compare(%i, %limit), direction=LT
}

%body (b: (s32[], f32[128])) -> (s32[], f32[128]) {
  %b = (s32[]{:T(128)}, f32[128]{0}) parameter(0)
  %j = s32[]{:T(128)} get-tuple-element(%b), index=0
  %v = f32[128]{0} get-tuple-element(%b), index=1
  %all-reduce-start = f32[128]{0} all-reduce-start(%v), channel_id=6, replica_groups={}, to_apply=%add
  %all-reduce-done = f32[128]{0} all-reduce-done(%all-reduce-start)
  ROOT %t = (s32[]{:T(128)}, f32[128]{0}) tuple(%j, %all-reduce-done)
}

ENTRY %main (a: bf16[16,512], w: bf16[8,64], z: f32[256], r: f32[32], s: f32[32], l: f32[128]) -> f32[128] {
  %a = bf16[16,512]{1,0:T(8,128)(2,1)} parameter(0)
  %w = bf16[8,64]{1,0:T(8,128)(2,1)} parameter(1)
  %z = f32[256]{0:T(256)} parameter(2)
  %r = f32[32]{0} parameter(3)
  %s = f32[32]{0} parameter(4)
  %l = f32[128]{0} parameter(5)
  %all-gather-start = (bf16[16,512]{1,0:T(8,128)(2,1)}, bf16[128,512]{1,0:T(8,128)(2,1)}) all-gather-start(%a), channel_id=1, replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}, use_global_device_ids=true
  %all-gather-done = bf16[128,512]{1,0:T(8,128)(2,1)} all-gather-done(%all-gather-start)
  %a2a-start = ((bf16[8,64]{1,0:T(8,128)(2,1)}), bf16[8,64]{1,0:T(8,128)(2,1)}, u32[]{:S(2)}) async-start(%w), calls=%wrapped_a2a
  %a2a-done = bf16[8,64]{1,0:T(8,128)(2,1)} async-done(%a2a-start)
  %fusion.3 = f32[256]{0:T(256)} fusion(%z), kind=kOutput, calls=%fused_ar
  %reduce-scatter-start = ((f32[32]{0}, f32[32]{0}), (f32[4]{0}, f32[4]{0})) reduce-scatter-start(%r,
      %s), channel_id=2, replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}, to_apply=%add
  %reduce-scatter-done = (f32[4]{0}, f32[4]{0}) reduce-scatter-done(%reduce-scatter-start)
  %cp-start = (f32[128]{0}, f32[128]{0}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%l), channel_id=3, source_target_pairs={{0,1},{1,0}}
  %cp-done = f32[128]{0} collective-permute-done(%cp-start)
  %zero = s32[]{:T(128)} constant(0)
  %init = (s32[]{:T(128)}, f32[128]{0}) tuple(%zero, %cp-done)
  %loop = (s32[]{:T(128)}, f32[128]{0}) while(%init), condition=%cond, body=%body
  ROOT %out = f32[128]{0} get-tuple-element(%loop), index=1
}
"""


def test_async_fused_and_looped_collectives_are_counted_once():
  stats = hlo_stats.collectives(_ASYNC_MODULE)
  by_kind = {op.kind: op for op in stats.ops}
  assert sorted(op.kind for op in stats.ops) == ['all-gather', 'all-reduce', 'all-reduce',
                                                 'all-to-all', 'collective-permute',
                                                 'reduce-scatter']
  ag = by_kind['all-gather']  # -start/-done pair: sized by the done's result.
  assert (ag.is_async, ag.results, ag.raw_bytes) == (True, [Array('bf16', (128, 512))],
                                                      128 * 512 * 2)
  a2a = by_kind['all-to-all']  # Inside an async-start wrapper, groups in the iota form.
  assert (a2a.is_async, a2a.group_size, a2a.num_groups, a2a.raw_bytes) == (True, 4, 2, 1024)
  assert a2a.moved_bytes_per_chip == pytest.approx(3 / 4 * 1024)
  rs = by_kind['reduce-scatter']  # Tuple of two buffers, broken over two lines.
  assert rs.operands == [Array('f32', (32,))] * 2 and rs.results == [Array('f32', (4,))] * 2
  assert rs.raw_bytes == 256 and rs.moved_bytes_per_chip == pytest.approx(7 / 8 * 256)
  cp = by_kind['collective-permute']  # Scratch u32s of the start's tuple are not data.
  assert (cp.raw_bytes, cp.moved_bytes_per_chip, cp.group_size) == (512, 512, 2)
  fused, looped = sorted(stats.of_kind('all-reduce'), key=lambda op: op.executions)
  assert (fused.computation, fused.is_async, fused.executions) == ('fused_ar', False, 1)
  # In a while body whose condition is `i < 6` (no known_trip_count printed): six runs.
  assert (looped.computation, looped.executions, looped.group_size) == ('body', 6, 8)
  assert not looped.unknown_trip_count
  assert stats.summary()['all-reduce']['raw_bytes'] == 1024 + 6 * 512


def test_unknown_trip_count_is_flagged_and_known_one_is_used():
  data_dependent = _ASYNC_MODULE.replace('direction=LT', 'direction=NE')
  [looped] = [op for op in hlo_stats.collectives(data_dependent).ops if op.computation == 'body']
  assert (looped.executions, looped.unknown_trip_count) == (1, True)
  known = data_dependent.replace('body=%body', 'body=%body, backend_config={"known_trip_count":'
                                 '{"n":"3"}}')
  [looped] = [op for op in hlo_stats.collectives(known).ops if op.computation == 'body']
  assert (looped.executions, looped.unknown_trip_count) == (3, False)
