"""Reader for the IDX format (MNIST, Fashion-MNIST), plain or gzipped, with strict validation.

A truncated or corrupt file raises IdxFormatError naming the file; it never yields a short or
empty array.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype('>i2'), 0x0C: np.dtype('>i4'),
           0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}


class IdxFormatError(ValueError):
  pass


def _read_bytes(path: str) -> bytes:
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        return f.read()
    with open(path, 'rb') as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise IdxFormatError(
        f'{path} is corrupt or truncated ({type(e).__name__}: {e}). Re-install it '
        '(`sudo apt-get install --reinstall dataset-fashion-mnist`) or point the data '
        'directory at an intact copy.') from e


def read_idx(path: str, expected_ndim: int | None = None) -> np.ndarray:
  raw = _read_bytes(path)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
    raise IdxFormatError(f'{path} is not an IDX file (bad magic number {raw[:4]!r}).')
  ndim = raw[3]
  if expected_ndim is not None and ndim != expected_ndim:
    raise IdxFormatError(f'{path} has {ndim} dimensions, expected {expected_ndim}.')
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise IdxFormatError(f'{path} is truncated inside its header.')
  shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
  dtype = np.dtype(_DTYPES[raw[2]])
  expected = int(np.prod(shape)) * dtype.itemsize
  got = len(raw) - header
  if got != expected or expected == 0:
    raise IdxFormatError(
        f'{path} is truncated or corrupt: header says shape {shape} ({expected} bytes of data) '
        f'but the file holds {got} bytes. Re-install or re-download it.')
  return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder('='))


def find_idx_file(directory: str, stem: str) -> str | None:
  for name in (stem, stem + '.gz'):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  return None
