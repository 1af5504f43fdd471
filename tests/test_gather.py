"""selection.gather: windowed ppermute shifts with an exact psum_scatter fallback.

Exactness (bit for bit against numpy's x[indices], -0.0 and NaN payloads included) on 8, 4, 2
and 1 devices, for i.i.d. and adversarial selections, on both paths; and the compiled HLO on 8
simulated devices: the common path moves only [b/n, ...] buckets by collective-permute, and the
whole [b, ...] selected batch is reduced only inside the fallback branch.
"""
import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_dtypes
import numpy as np
import pytest

from big_vision_style import hlo_stats
from big_vision_style import sharding
from big_vision_style.selection import batch as selection_batch

B, b = 128, 32  # 8 devices: 16 rows each, m = 4 selected rows each; default W = 3 < 7.


def put(x, mesh):
  return jax.device_put(x, NamedSharding(mesh, P('data')))


def make_batch(total, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(total, 3, 2)).astype(np.float32)
  image[1, 0, 0] = -0.0  # A sum with +0.0 would lose the sign.
  image[2, 1, 1] = np.frombuffer(np.uint32(0x7fc01234).tobytes(), np.float32)[0]  # NaN payload.
  image[::7, 2, 0] = -0.0
  return {'image': image,
          'half': rng.normal(size=(total, 4)).astype(ml_dtypes.bfloat16),
          'label': rng.integers(-2**31, 2**31 - 1, total, dtype=np.int64).astype(np.int32),
          'bytes': rng.integers(0, 256, (total, 2, 2)).astype(np.uint8),
          'small': rng.integers(-128, 128, total).astype(np.int8),
          'mask': rng.random(total) < 0.5,
          'masks': rng.random((total, 3)) < 0.5}


def index_sets(total, num_selected, n, seed=0):
  """Named selections, all ascending: i.i.d., and the adversarial layouts."""
  rng = np.random.default_rng(seed)
  local = total // n
  sets = {f'iid{s}': np.sort(rng.choice(total, num_selected, replace=False)) for s in range(6)}
  sets.update({
      'first_b': np.arange(num_selected),  # top-k of a uniform policy: all on the first devices.
      'last_b': np.arange(total - num_selected, total),
      'all_on_device_0': np.sort(rng.choice(local, min(num_selected, local), replace=False)),
      'middle_block': np.arange(num_selected) + (total - num_selected) // 2,
      'even_spread': np.arange(num_selected) * (total // num_selected),
      'ends': np.concatenate([np.arange(num_selected // 2),
                              np.arange(total - num_selected // 2, total)]),
      'everything_on_ends_of_devices': np.sort(rng.choice(
          np.arange(total).reshape(n, local)[[0, -1]].ravel(), num_selected, replace=False)),
  })
  if local >= num_selected:
    sets['all_on_last_device'] = np.arange(total - local, total - local + num_selected)
  return {k: v.astype(np.int32) for k, v in sets.items() if len(v) == num_selected}


def max_shift(idx, total, num_selected, n):
  return int(np.max(np.abs(np.arange(num_selected) // (num_selected // n) - idx // (total // n))))


def assert_bitwise_equal(got, want, what):
  got = np.asarray(got)
  assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape)
  if want.dtype.kind in 'fV' or want.dtype == ml_dtypes.bfloat16:
    view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
    got, want = got.view(view), want.view(view)
  np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize('n', [8, 4, 2, 1])
def test_gather_is_bitwise_plain_gather_on_both_paths(n):
  mesh = sharding.make_mesh(n)
  data = make_batch(B)
  sharded = jax.tree.map(lambda x: put(x, mesh), data)
  default = selection_batch.gather_window(B, b, n)
  windows = sorted({None if default < n - 1 else n - 1, 0, 1 if n > 2 else 0, n - 1},
                   key=lambda w: -1 if w is None else w)
  taken = {}
  for window in windows:
    w = default if window is None else min(window, n - 1)
    fn = jax.jit(lambda x, i, w=window: selection_batch.gather(x, i, mesh, window=w,
                                                              return_fallback=True))
    for name, idx in index_sets(B, b, n).items():
      out, fallback = fn(sharded, idx)
      for key, value in data.items():
        assert_bitwise_equal(out[key], value[idx], (n, window, name, key))
        assert out[key].sharding.is_equivalent_to(NamedSharding(mesh, P('data')), value.ndim)
      expected = w < n - 1 and max_shift(idx, B, b, n) > w
      assert bool(fallback) == expected, (n, window, name)
      assert bool(selection_batch.gather_fallback(idx, B, mesh, window=window)) == expected
      taken.setdefault(window, set()).add(bool(fallback))
  if n == 8:  # Both branches ran, with the default window and with a tight one.
    assert taken[None] == {False, True} and taken[1] == {False, True}, taken


@pytest.mark.parametrize('n', [8, 4])
def test_each_path_alone_is_exact(n):
  # The common path without the cond (exact whenever the fallback is not needed), and the
  # fallback alone on every selection, including unsorted ones and repeats.
  mesh = sharding.make_mesh(n)
  data = make_batch(B, seed=1)
  sharded = jax.tree.map(lambda x: put(x, mesh), data)
  windowed = jax.jit(lambda x, i: selection_batch._gather(x, i, mesh, window=2,
                                                          path='windowed')[0])
  fallback = jax.jit(lambda x, i: selection_batch._gather(x, i, mesh, path='fallback')[0])
  old = jax.jit(lambda x, i: selection_batch._gather(x, i, mesh, path='old')[0])
  rng = np.random.default_rng(2)
  sets = dict(index_sets(B, b, n, seed=3),
              unsorted=rng.permutation(B)[:b].astype(np.int32),
              repeats=np.sort(rng.integers(0, B, b)).astype(np.int32))
  checked = 0
  for name, idx in sets.items():
    for path, fn in (('windowed', windowed), ('fallback', fallback), ('old', old)):
      if path == 'windowed' and max_shift(idx, B, b, n) > 2:
        continue
      out = fn(sharded, idx)
      checked += path == 'windowed' and max_shift(idx, B, b, n) > 0
      for key, value in data.items():
        assert_bitwise_equal(out[key], value[idx], (n, path, name, key))
  assert checked >= 3  # The windowed path really moved rows between devices.


def test_gather_eagerly_and_with_x64():
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    data = {'id': np.int64(2**40) + rng.permutation(10 * B)[:B],
            'score': rng.normal(size=B),  # float64: compared as uint64 bits.
            'image': make_batch(B)['image']}
    sharded = jax.tree.map(lambda x: put(x, mesh), data)
    for idx in (np.sort(rng.choice(B, b, replace=False)), np.arange(b)):
      out = selection_batch.gather(sharded, jnp.asarray(idx), mesh)  # Eager: no jit.
      for key, value in data.items():
        assert_bitwise_equal(out[key], value[idx], key)


def test_gather_window():
  # JEST paper: b = 32768 of B = 163840 over 256 chips: sigma = 81 rows, m = 128, W = 3.
  assert selection_batch.gather_window(163840, 32768, 256) == 3
  assert selection_batch.gather_window(640, 128, 8) == 2   # Local JEST-like, f = 0.8.
  assert selection_batch.gather_window(128, 32, 8) == 3
  assert selection_batch.gather_window(128, 32, 1) == 0
  assert selection_batch.gather_window(32, 8, 2) == 1      # 2, capped at n - 1.
  assert selection_batch.gather_window(256, 256, 8) == 0   # f = 0: nothing moves.
  with pytest.raises(ValueError, match='window must be a non-negative integer'):
    selection_batch.gather({'x': jnp.zeros(64)}, jnp.arange(8), sharding.make_mesh(), window=-1)


def test_iid_selections_rarely_fall_back():
  # 2000 i.i.d. selections at the local JEST-like size (b = 128 of B = 640 on 8 devices, W = 2):
  # none needs the fallback (the bound is 2 exp(-20) per step); all b on the first devices does.
  mesh = sharding.make_mesh()
  total, num_selected = 640, 128
  rng = np.random.default_rng(0)
  idx = np.sort(np.argsort(rng.random((2000, total)), axis=1)[:, :num_selected], axis=1)
  check = jax.jit(jax.vmap(lambda i: selection_batch.gather_fallback(i, total, mesh)))
  assert not np.asarray(check(jnp.asarray(idx, jnp.int32))).any()
  assert bool(selection_batch.gather_fallback(jnp.arange(num_selected), total, mesh))
  # And through select_indices, as the trainers call it, with the flag out of gather itself.
  data = {'image': put(np.zeros((total, 2), np.float32), mesh)}
  step = jax.jit(lambda s, r: selection_batch.gather(
      data, selection_batch.select_indices(s, num_selected, r), mesh, return_fallback=True)[1])
  scores = put(rng.normal(size=total).astype(np.float32), mesh)
  for seed in range(5):
    assert not bool(step(scores, jax.random.key(seed)))


def _compiled_stats(fn, *args):
  return hlo_stats.collectives(jax.jit(fn).lower(*args).compile())


def test_compiled_common_path_moves_only_buckets():
  # Local JEST-like sizes on 8 simulated devices: b = 128 of B = 640, W = 2 < n - 1 = 7.
  mesh = sharding.make_mesh()
  n, total, num_selected = 8, 640, 128
  m, w = num_selected // n, selection_batch.gather_window(total, num_selected, n)
  assert w == 2
  shapes = {'image': ((8, 8, 3), jnp.float32), 'label': ((), jnp.int32),
            'mask': ((), jnp.bool_)}
  data = {k: jax.ShapeDtypeStruct((total,) + s, d, sharding=NamedSharding(mesh, P('data')))
          for k, (s, d) in shapes.items()}
  idx = jax.ShapeDtypeStruct((num_selected,), jnp.int32, sharding=NamedSharding(mesh, P()))
  row_bytes = {k: math.prod(s) * jnp.dtype(d).itemsize for k, (s, d) in shapes.items()}
  whole = {k: num_selected * v for k, v in row_bytes.items()}
  # bools travel as pred on the common path and as uint8 in the fallback: 1 byte either way.

  stats = _compiled_stats(lambda x, i: selection_batch.gather(x, i, mesh), data, idx)
  windowed = [op for op in stats.ops if 'gather_windowed' in op.op_name]
  fallback = [op for op in stats.ops if 'gather_fallback' in op.op_name]
  assert windowed and fallback and len(windowed) + len(fallback) == len(stats.ops), \
      hlo_stats.format_table(stats)
  # The two paths are the two branches of one conditional.
  assert {op.branch for op in windowed} | {op.branch for op in fallback} and \
      all(op.branch for op in stats.ops)
  [windowed_branch] = {op.branch for op in windowed}
  [fallback_branch] = {op.branch for op in fallback}
  assert windowed_branch != fallback_branch
  assert windowed_branch.split(':')[0] == fallback_branch.split(':')[0]
  # Common path: collective-permutes of [m, ...] buckets only, 2 W m rows per chip.
  for op in windowed:
    assert op.kind == 'collective-permute', op
    assert all(a.shape[:1] == (m,) for a in op.operands + op.results), op
  assert sum(op.moved_bytes_per_chip for op in windowed) == 2 * w * m * sum(row_bytes.values())
  # Nothing outside the fallback branch reduces or gathers a buffer the size of a whole
  # selected leaf, nor any [n, ...]-row buffer.
  reducing = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all')
  for op in stats.ops:
    if op.branch != fallback_branch:
      assert op.kind not in reducing, op
      assert all(not a.shape or a.shape[0] <= m for a in op.operands + op.results), op
      assert op.raw_bytes <= m * row_bytes['image'] < whole['image'], op
  # The fallback reduce-scatters all b rows, (n-1)/n of them per chip (XLA CPU; an all-reduce
  # on TPU), in m / chunk steps of an [n chunk, ...] buffer no larger than the 2W+1 buckets.
  chunk = selection_batch._fallback_chunk(m, n, w)
  assert chunk == 8 and chunk * n <= (2 * w + 1) * m
  assert {op.kind for op in fallback} == {'reduce-scatter'}
  assert all(op.executions == m // chunk for op in fallback)
  assert max(op.raw_bytes for op in fallback) == chunk * n * row_bytes['image']
  assert sum(op.moved_bytes_per_chip * op.executions for op in fallback) == \
      pytest.approx((n - 1) / n * num_selected * sum(row_bytes.values()))

  # The common path compiled alone: only the permutes.
  alone = _compiled_stats(lambda x, i: selection_batch._gather(x, i, mesh, path='windowed')[0],
                          data, idx)
  assert hlo_stats.kinds_of(alone.ops) == {'collective-permute'}
  assert alone.moved_bytes_per_chip == 2 * w * m * sum(row_bytes.values())
  # Before: one psum_scatter of the whole [b, ...] buffer, (n-1)/n of all b rows per chip (a
  # reduce-scatter here, an all-reduce of twice that on TPU).
  old = _compiled_stats(lambda x, i: selection_batch._gather(x, i, mesh, path='old')[0],
                        data, idx)
  assert max(op.raw_bytes for op in old.ops) == whole['image']
  assert old.moved_bytes_per_chip == pytest.approx(
      (n - 1) / n * num_selected * sum(row_bytes.values()))
  assert alone.moved_bytes_per_chip < old.moved_bytes_per_chip


def test_full_window_has_no_cond_and_no_whole_buffer():
  mesh = sharding.make_mesh(4)
  data = {'image': put(np.zeros((B, 3), np.float32), mesh)}
  stats = _compiled_stats(lambda x, i: selection_batch.gather(x, i, mesh, window=3), data,
                          jnp.arange(b, dtype=jnp.int32))
  assert hlo_stats.kinds_of(stats.ops) == {'collective-permute'}
  assert not any(op.branch for op in stats.ops)


_COND_MODULE = """HloModule cond_test, num_partitions=4

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%yes (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %ar = f32[8]{0} all-reduce(%p), replica_groups={}, to_apply=%add
}

%no (q: f32[8]) -> f32[8] {
  %q = f32[8]{0} parameter(0)
  ROOT %cp = f32[8]{0} collective-permute(%q), source_target_pairs={{0,1},{1,0}}
}

ENTRY %main (x: f32[8], c: pred[]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %c = pred[] parameter(1)
  %y = f32[8]{0} conditional(%c, %x, %x), true_computation=%yes, false_computation=%no
  ROOT %z = f32[8]{0} all-reduce(%y), replica_groups={}, to_apply=%add
}
"""


def test_hlo_stats_names_the_branch_of_a_collective():
  stats = hlo_stats.collectives(_COND_MODULE)
  branches = {op.name: op.branch for op in stats.ops}
  assert branches == {'ar': 'y:true', 'cp': 'y:false', 'z': ''}
  assert stats.as_dict()['ops'][0]['branch'] in branches.values()


def test_hlo_stats_counts_one_branch_of_each_conditional():
  stats = hlo_stats.collectives(_COND_MODULE)
  moved = {op.name: op.moved_bytes_per_chip * op.executions for op in stats.ops}
  assert stats.moved_bytes_per_chip == sum(moved.values())  # Every branch: an upper bound.
  assert stats.moved_bytes_per_chip_by_branch(min) == moved['z'] + min(moved['ar'], moved['cp'])
  assert stats.moved_bytes_per_chip_by_branch(max) == moved['z'] + max(moved['ar'], moved['cp'])
