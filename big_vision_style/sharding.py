"""Device mesh and multi-host setup.

The mesh has one axis, `data`: batches are split over it and parameters are replicated. Axis
types are set to Auto explicitly: `jax.make_mesh` now defaults to Explicit axes (sharding in
types), whereas this code relies on GSPMD propagating shardings from the batch and from
`out_shardings` annotations.
"""
from __future__ import annotations

import logging
import os

import jax
import numpy as np


def maybe_initialize_distributed(config=None):
  """Multi-host TPU pods need jax.distributed; one host (or CPU tests) must not call it."""
  wanted = (config or {}).get('distributed')
  if wanted is None:  # Auto: tpu/launch.sh sets BVS_DISTRIBUTED=1 on every TPU worker.
    wanted = (os.environ.get('BVS_DISTRIBUTED') == '1' or
              ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''))
  if wanted and not jax.distributed.is_initialized():
    jax.distributed.initialize()
    logging.info('jax.distributed: process %d of %d.', jax.process_index(), jax.process_count())


def make_mesh(num_devices=None) -> jax.sharding.Mesh:
  """A 1-D `data` mesh over all devices, or over the first `num_devices` (tests compare 1 vs 8),
  or, given a list, over the devices with those ids (disjoint sub-meshes: DnC's experts
  trained side by side, methods/dnc.py).

  Each process must hold a contiguous block of the axis: process p feeds rows
  [p*L, (p+1)*L) of every global batch (input_pipeline), so its devices must be the ones that
  hold those rows. jax.make_mesh orders devices for the interconnect, which on a pod can
  interleave hosts along a 1-D axis; the devices are then ordered by (process, id) instead.
  """
  devices = jax.devices()
  if isinstance(num_devices, (list, tuple)):
    by_id = {d.id: d for d in devices}
    missing = [i for i in num_devices if i not in by_id]
    if missing or not num_devices:
      raise ValueError(f'config.mesh_devices={list(num_devices)}: no device has id(s) {missing}; '
                       f'ids are {sorted(by_id)}.')
    chosen = sorted((by_id[i] for i in num_devices), key=lambda d: (d.process_index, d.id))
    return jax.sharding.Mesh(np.asarray(chosen), ('data',),
                             axis_types=(jax.sharding.AxisType.Auto,))
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f'config.mesh_devices={num_devices} but only {len(devices)} devices exist.')
    devices = devices[:num_devices]
  auto = (jax.sharding.AxisType.Auto,)
  if len(devices) == jax.device_count():
    mesh = jax.make_mesh((len(devices),), ('data',), axis_types=auto)
    if process_contiguous(mesh.devices.reshape(-1)):
      return mesh
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return jax.sharding.Mesh(np.asarray(devices), ('data',), axis_types=auto)


def process_contiguous(devices) -> bool:
  """Whether each process's devices form one contiguous block of `devices`, in process order."""
  order = [d.process_index for d in devices]
  return order == sorted(order)
