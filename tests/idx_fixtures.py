"""Writers of small synthetic IDX files, for tests of the Fashion-MNIST reader."""
import gzip
import os

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  return header + array.tobytes()


def write_fake_fashion_mnist(directory, num_train=120, num_test=30, seed=0, gz=True):
  """Four IDX files with random 28x28 images and labels 0..9, like the real package's."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  arrays = {
      'train-images-idx3-ubyte': rng.integers(0, 256, (num_train, 28, 28)),
      'train-labels-idx1-ubyte': np.arange(num_train) % 10,
      't10k-images-idx3-ubyte': rng.integers(0, 256, (num_test, 28, 28)),
      't10k-labels-idx1-ubyte': np.arange(num_test) % 10,
  }
  for name, array in arrays.items():
    data = idx_bytes(array)
    if gz:
      with gzip.open(os.path.join(directory, name + '.gz'), 'wb') as f:
        f.write(data)
    else:
      with open(os.path.join(directory, name), 'wb') as f:
        f.write(data)
  return arrays
