"""Reading published weight files, each with its own library, by content.

The families of ResNet v2 publish weights in four formats:

- tf-slim: TF1 checkpoints (`resnet_v2_50.ckpt`: one V1 file, or a V2
  `.index` and data files), read with TensorFlow's checkpoint reader.
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
array. A file that is there but cannot be read whole (cut short by an
interrupted download or copy, or damaged) raises `UnreadableWeightsError`,
whichever library found it out, when opened or when an array is read.
"""

import json
import os
import struct
import zipfile
import zlib

import numpy as np
from safetensors import SafetensorError
import tensorflow as tf

_HDF5_MAGIC = b'\x89HDF\r\n\x1a\n'
_ZIP_MAGIC = b'PK\x03\x04'
_V1_MAGIC = bytes.fromhex('57fb808b247547db')  # leveldb's table footer


class UnreadableWeightsError(ValueError):
  """A weight file that is there but cannot be read: cut short or damaged."""

  def __init__(self, path, error):
    """Names the file and the reason of the reader (`error`) that failed."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ''
    super().__init__(
        f'{path} cannot be read as weights ({reason or type(error).__name__}).'
        ' If it was cut short or damaged (an interrupted download or copy), '
        'download or copy it again.')


# What each reader raises for a file cut short or damaged: TF's checkpoint
# reader an OpError, or an IndexError for a truncated data file; h5py an
# OSError; NumPy's zip a BadZipFile (a bad CRC too), zlib.error or EOFError;
# safetensors a SafetensorError.
_READ_ERRORS = (tf.errors.OpError, OSError, IndexError, EOFError,
                zipfile.BadZipFile, zlib.error, json.JSONDecodeError,
                SafetensorError)


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
    """The array stored under `key`, as NumPy.

    Raises:
      UnreadableWeightsError: If the file is cut short or damaged there.
    """
    try:
      return np.asarray(self._read(key))
    except _READ_ERRORS as e:
      raise UnreadableWeightsError(self.path, e) from None


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


def _is_v1_checkpoint(path):
  """A TF1 checkpoint in the V1 format, one file (`resnet_v2_50.ckpt` in
  tf-slim's 2017 archives): a table that ends with its magic number."""
  with open(path, 'rb') as f:
    f.seek(0, os.SEEK_END)
    if f.tell() < 8:
      return False
    f.seek(-8, os.SEEK_END)
    return f.read() == _V1_MAGIC


def open_weights(path):
  """Opens a weight file of any of the four formats, by its content.

  Args:
    path: A TF checkpoint prefix or directory, or a `.h5`, `.npz` or
      `.safetensors` file (whatever its name).

  Returns:
    A `WeightFile`.

  Raises:
    UnreadableWeightsError: If the file is cut short or damaged.
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
    if _is_v1_checkpoint(path):
      return _tf_checkpoint(path)
  except _READ_ERRORS as e:
    raise UnreadableWeightsError(path, e) from None
  raise ValueError(
      f'{path} is not a weight file this library reads: expected a TF '
      "checkpoint (tf-slim's or ours), a Keras HDF5 weights file, a BiT .npz "
      'or a timm .safetensors file.')
