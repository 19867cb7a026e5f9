"""Bad block specs, strides, inputs and depths raise clear ValueErrors."""

import keras
import pytest

import resnet_v2
from resnet_v2 import bottleneck, Block


def _build(blocks, **kwargs):
  inputs = keras.Input(kwargs.pop('shape', (64, 64, 3)))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    return resnet_v2.resnet_v2(inputs, blocks, **kwargs)


@pytest.mark.parametrize('blocks, message', [
    ([], 'blocks must be a non-empty list'),
    (None, 'blocks must be a non-empty list'),
    ([('block1', bottleneck)], r'blocks\[0\] must be a Block'),
    ([Block('', bottleneck, [(8, 2, 1)])], 'scope must be a non-empty name'),
    ([Block('a/b', bottleneck, [(8, 2, 1)])], 'without "/"'),
    ([Block('b', bottleneck, [(8, 2, 1)]), Block('b', bottleneck, [(8, 2, 1)])],
     "Block 'b' appears twice"),
    ([Block('b', 'bottleneck', [(8, 2, 1)])], 'unit_fn must be callable'),
    ([Block('b', bottleneck, [])], "Block 'b': args must be a non-empty list"),
    ([Block('b', bottleneck, [(8, 2)])], "Block 'b' unit_1: expected 3 values"),
    ([Block('b', bottleneck, [(8, 2, 1), (8, 2, 1, 1)])],
     "Block 'b' unit_2: expected 3 values"),
    ([Block('b', bottleneck, [(0, 2, 1)])],
     "Block 'b' unit_1: depth must be a positive integer, got 0"),
    ([Block('b', bottleneck, [(8, -2, 1)])],
     "Block 'b' unit_1: depth_bottleneck must be a positive integer, got -2"),
    ([Block('b', bottleneck, [(8, 2.5, 1)])], 'depth_bottleneck must be a positive integer, got 2.5'),
    ([Block('b', bottleneck, [(8, 2, True)])], 'stride must be a positive integer, got True'),
    ([Block('b', bottleneck, [{'depth_bottleneck': 2, 'stride': 1}])], "missing 'depth'"),
    ([Block('b', bottleneck, ['8,2,1'])], "Block 'b' unit_1: got '8,2,1'"),
])
def test_malformed_block_specs(blocks, message):
  with pytest.raises(ValueError, match=message):
    _build(blocks)


def test_resnet_v2_block_checks_its_arguments():
  with pytest.raises(ValueError, match="Block 'block1': num_units must be a positive integer, got 0"):
    resnet_v2.resnet_v2_block('block1', 64, 0, 2)
  with pytest.raises(ValueError, match="Block 'block2': base_depth must be a positive integer, got -1"):
    resnet_v2.resnet_v2_block('block2', -1, 3, 2)


@pytest.mark.parametrize('output_stride, message', [
    (6, 'must be a multiple of 4 when the root block is included'),
    (64, r'output_stride 64 cannot be reached by these blocks; reachable values are \[4, 8, 16, 32\]'),
    (0, 'output_stride must be a positive integer, got 0'),
    ('16', "output_stride must be a positive integer, got '16'"),
])
def test_bad_output_stride(output_stride, message):
  with pytest.raises(ValueError, match=message):
    _build(resnet_v2.blocks_for_depth(50), output_stride=output_stride)


def test_output_stride_without_root_block():
  blocks = [resnet_v2.resnet_v2_block('block1', 4, 2, 2),
            resnet_v2.resnet_v2_block('block2', 8, 2, 3)]
  with pytest.raises(ValueError, match=r'reachable values are \[1, 2, 6\]'):
    _build(blocks, include_root_block=False, output_stride=4)
  net, _ = _build(blocks, include_root_block=False, output_stride=2,
                  global_pool=False, shape=(12, 12, 16))
  assert tuple(net.shape) == (None, 6, 6, 32)


def test_stack_blocks_dense_checks_output_stride():
  with pytest.raises(ValueError, match=r'reachable values are \[1, 2\]'):
    resnet_v2.stack_blocks_dense(keras.Input((8, 8, 4)),
                                 [resnet_v2.resnet_v2_block('b', 2, 1, 2)], 4)


@pytest.mark.parametrize('shape', [(64, 3), (4, 64, 64, 3)])
def test_input_must_be_4d(shape):
  with pytest.raises(ValueError, match='expects a 4-D input'):
    _build(resnet_v2.blocks_for_depth(50), shape=shape)


def test_unknown_depth_names_the_known_ones():
  with pytest.raises(ValueError, match=r'Unknown ResNet v2 depth 26; known depths are \[18, 34, 50, 101, 152, 200\]'):
    resnet_v2.build_model(26)


def test_registered_custom_depth():
  resnet_v2.register_depth(26, (2, 2, 2, 2))
  try:
    model = resnet_v2.build_model(26, num_classes=10, input_shape=(32, 32, 3))
    assert model.name == 'resnet_v2_26'
    assert 'resnet_v2_26/block4/unit_2/bottleneck_v2' in model.end_points
  finally:
    resnet_v2.nets._DEPTHS.pop(26)
  with pytest.raises(ValueError, match='must have one entry per block'):
    resnet_v2.register_depth(27, (2, 2, 2))


@pytest.mark.parametrize('text, message', [
    ('', 'must be non-empty text'),
    ('64x3/2, 128', "block 2 is '128'"),
    ('64x3/2; 128x4', "block 1 is '64x3/2; 128x4'"),
    ('__import__("os")', 'each block must be BASExUNITS'),
    ('64x-3', "block 1 is '64x-3'"),
    ('64x0/2', 'num_units must be a positive integer, got 0'),
])
def test_bad_text_specs(text, message):
  with pytest.raises(ValueError, match=message):
    resnet_v2.parse_blocks(text)


def test_text_specs_round_trip():
  blocks = resnet_v2.parse_blocks(' 64x3/2,128x4/2, 256x6/2 ,512x3')
  assert [(b.scope, b.args) for b in blocks] == [
      (b.scope, b.args) for b in resnet_v2.blocks_for_depth(50)]
  assert resnet_v2.format_blocks(blocks) == '64x3/2, 128x4/2, 256x6/2, 512x3'
  with pytest.raises(ValueError, match='has no text form'):
    resnet_v2.format_blocks([Block('b', bottleneck, [(8, 2, 2), (8, 2, 1)])])


def test_reuse_is_slims_none_and_true_says_how_keras_shares():
  inputs = keras.Input((32, 32, 3))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    net, _ = resnet_v2.resnet_v2_50(inputs, 10, reuse=None)  # as Google's slim tests pass it
    assert net.shape == (None, 10)
    with pytest.raises(ValueError, match='call the same model again|calling the same model'):
      resnet_v2.resnet_v2(inputs, resnet_v2.parse_blocks('4x1'), reuse=True, scope='again')


def _weight_files(directory):
  """A small weight file of each format, as {kind: path to open}, and the
  file of each that a cut-short copy would end early."""
  import h5py  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  arrays = {'kernel': np.ones((32, 32), np.float32), 'bias': np.ones(32, np.float32)}
  save_file(arrays, directory / 'timm.safetensors')
  np.savez(directory / 'bit.npz', **arrays)
  with h5py.File(directory / 'keras.h5', 'w') as f:
    f.attrs['layer_names'] = [b'dense']
    f.create_group('dense').attrs['weight_names'] = [b'dense/kernel:0']
    f['dense']['dense/kernel:0'] = arrays['kernel']
  prefix = tf.train.Checkpoint(kernel=tf.Variable(arrays['kernel'])).write(
      str(directory / 'slim' / 'model.ckpt'))
  return {'safetensors': (directory / 'timm.safetensors',) * 2,
          'npz': (directory / 'bit.npz',) * 2,
          'keras_h5': (directory / 'keras.h5',) * 2,
          'tf_checkpoint data': (prefix, directory / 'slim' / 'model.ckpt.data-00000-of-00001'),
          'tf_checkpoint index': (prefix, directory / 'slim' / 'model.ckpt.index')}


@pytest.mark.parametrize('kind', ['safetensors', 'npz', 'keras_h5', 'tf_checkpoint data',
                                  'tf_checkpoint index'])
def test_a_weight_file_cut_short_is_one_clear_error(tmp_path, kind):
  """A download cut short fails as UnreadableWeightsError naming the file and
  what to do, whichever reader finds out, on opening or on reading."""
  path, file = _weight_files(tmp_path)[kind]
  whole = file.read_bytes()
  for kept in (len(whole) // 2, len(whole) - 8):
    file.write_bytes(whole[:kept])
    with pytest.raises(resnet_v2.weight_files.UnreadableWeightsError,
                       match='cannot be read as weights .*download or copy it again'):
      weights = resnet_v2.open_weights(str(path))
      for key in weights.shapes:
        weights.read(key)
