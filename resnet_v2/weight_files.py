"""Reading published weight files, each with its own library, by content.

The families of ResNet v2 publish weights in four formats:

- tf-slim: TF1 checkpoints (`resnet_v2_50.ckpt`: an `.index` and data
  files), read with TensorFlow's checkpoint reader.
- Keras applications: legacy HDF5 weight files
  (`resnet50v2_weights_tf_dim_ordering_tf_kernels[_notop].h5`), read with
  h5py: one group per layer, its `weight_names` attribute naming its
  datasets.
- BiT: NumPy `.npz` archives (`BiT-M-R50x1.npz`), read with NumPy one array
  at a time, so that an R152x4 file (3.7 GB) never needs twice its size in
  memory; shapes come from the arrays' headers without reading them.
- timm: `.safetensors` files, read through the `safetensors` package's NumPy
  API (no PyTorch), also one tensor at a time.

`open_weights` tells them apart by what the file holds, not by its name, and
returns a `WeightFile`: the keys with their shapes, and a reader for one
array.
"""

import json
import os
import struct
import zipfile

import numpy as np
import tensorflow as tf

_HDF5_MAGIC = b'\x89HDF\r\n\x1a\n'
_ZIP_MAGIC = b'PK\x03\x04'


class WeightFile:
  """The arrays of a weight file, by key.

  Attributes:
    path: The file (or checkpoint prefix).
    kind: 'tf_checkpoint', 'keras_h5', 'npz' or 'safetensors'.
    shapes: {key: shape tuple}, known without reading the arrays.
  """

  def __init__(self, path, kind, shapes, read):
    self.path, self.kind, self.shapes = path, kind, shapes
    self._read = read

  def read(self, key):
    """The array stored under `key`, as NumPy."""
    return np.asarray(self._read(key))


def _tf_checkpoint(path):
  reader = tf.compat.v1.train.NewCheckpointReader(path)  # A prefix, as is.
  shapes = {name: tuple(shape)
            for name, shape in reader.get_variable_to_shape_map().items()}
  return WeightFile(path, 'tf_checkpoint', shapes, reader.get_tensor)


def _keras_h5(path):
  import h5py  # pylint: disable=g-import-not-at-top
  handle = h5py.File(path, 'r')
  # A whole-model file keeps the weights in 'model_weights'.
  root = handle['model_weights'] if 'model_weights' in handle else handle
  text = lambda name: name.decode() if isinstance(name, bytes) else name
  datasets = {}
  for layer in map(text, root.attrs.get('layer_names', [])):
    for weight in map(text, root[layer].attrs.get('weight_names', [])):
      # 'conv1_conv/kernel:0' -> key 'conv1_conv/kernel'.
      leaf = weight.split('/')[-1].split(':')[0]
      datasets[f'{layer}/{leaf}'] = root[layer][weight]
  if not datasets:
    raise ValueError(f'{path} is an HDF5 file without Keras layer weights '
                     "(no 'layer_names' attribute).")
  return WeightFile(path, 'keras_h5',
                    {key: tuple(d.shape) for key, d in datasets.items()},
                    lambda key: datasets[key][()])


def _npz(path):
  archive = np.load(path, allow_pickle=False)  # Reads members on access.
  shapes = {}
  with zipfile.ZipFile(path) as members:
    for info in members.infolist():
      if not info.filename.endswith('.npy'):
        continue
      with members.open(info) as member:
        version = np.lib.format.read_magic(member)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shapes[info.filename[:-len('.npy')]] = tuple(header(member)[0])
  return WeightFile(path, 'npz', shapes, archive.__getitem__)


def _safetensors(path):
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  handle = safe_open(path, framework='numpy')
  shapes = {key: tuple(handle.get_slice(key).get_shape())
            for key in handle.keys()}
  return WeightFile(path, 'safetensors', shapes, handle.get_tensor)


def _is_safetensors(head):
  """A safetensors file: an 8-byte header length, then a JSON header."""
  if len(head) < 9:
    return False
  length = struct.unpack('<Q', head[:8])[0]
  return 0 < length < 100 << 20 and head[8:9] == b'{'


def open_weights(path):
  """Opens a weight file of any of the four formats, by its content.

  Args:
    path: A TF checkpoint prefix or directory, or a `.h5`, `.npz` or
      `.safetensors` file (whatever its name).

  Returns:
    A `WeightFile`.

  Raises:
    ValueError: If nothing readable is there, saying what was expected.
  """
  path = os.fspath(path)
  try:
    if tf.io.gfile.exists(path + '.index'):
      return _tf_checkpoint(path)
    if tf.io.gfile.isdir(path):
      prefix = tf.train.latest_checkpoint(path)
      if prefix is None:
        raise ValueError(f'{path} is a directory without a TF checkpoint.')
      return _tf_checkpoint(prefix)
    if not os.path.isfile(path):
      raise ValueError(f'There is no file {path!r} (nor a TF checkpoint with '
                       "that prefix, the path before '.index').")
    with open(path, 'rb') as f:
      head = f.read(16)
    if head.startswith(_HDF5_MAGIC):
      return _keras_h5(path)
    if head.startswith(_ZIP_MAGIC):
      return _npz(path)
    if _is_safetensors(head):
      return _safetensors(path)
  except (tf.errors.OpError, OSError, zipfile.BadZipFile,
          json.JSONDecodeError) as e:
    raise ValueError(f'{path} cannot be read as weights: {e}') from None
  raise ValueError(
      f'{path} is not a weight file this library reads: expected a TF '
      "checkpoint (tf-slim's or ours), a Keras HDF5 weights file, a BiT .npz "
      'or a timm .safetensors file.')
