"""The layout choices of the families, as options of blocks, stems and arg scopes."""

import keras
import numpy as np
import pytest

import resnet_v2


def test_stride_unit_and_projection_options_from_text_and_arg_scope():
  slim = resnet_v2.parse_blocks('8x2/2, 16x2')
  assert [u['stride'] for u in slim[0].args] == [1, 2]
  bit = resnet_v2.parse_blocks('8x2, 16x2/2', stride_unit='first', projection='stride')
  assert [u['stride'] for u in bit[1].args] == [2, 1]
  assert [u.get('project', False) for b in bit for u in b.args] == [False, False, True, False]
  with resnet_v2.arg_scope([resnet_v2.resnet_v2_block], stride_unit='first',
                           projection='first_unit'):
    keras_like = resnet_v2.parse_blocks('8x2, 8x2/2')
  assert [u.get('project', False) for b in keras_like for u in b.args] == [
      True, False, True, False]
  with pytest.raises(ValueError, match="stride_unit must be one of"):
    resnet_v2.resnet_v2_block('block1', 8, 2, 2, stride_unit='middle')


def test_projection_rules_choose_their_units():
  # Block 2 keeps the depth of block 1 and strides: slim subsamples the
  # input, BiT projects it; 'first_unit' projects every first unit.
  spec = '8x1, 8x2/2'
  counts = {}
  for projection in ('depth', 'stride', 'first_unit'):
    blocks = resnet_v2.parse_blocks(spec, stride_unit='first', projection=projection)
    model = resnet_v2.build_model(blocks, 3, input_shape=(32, 32, 3), stem='cifar')
    counts[projection] = sum('shortcut/kernel' in w.path for w in model.weights)
  # depth: only block1/unit_1 (16 -> 32 channels); stride: + block2/unit_1.
  assert counts == {'depth': 1, 'stride': 2, 'first_unit': 2}


def test_conv_biases_off_leaves_only_the_logits_bias():
  blocks = resnet_v2.parse_blocks('8x1/2, 16x1')
  for arg_sc in (resnet_v2.resnet_arg_scope(conv_biases=False),
                 resnet_v2.bit_arg_scope(groups=8, conv_biases=False)):
    model = resnet_v2.build_model(blocks, 3, input_shape=(32, 32, 3), arg_sc=arg_sc)
    assert [w.path for w in model.weights if w.path.endswith('/bias')] == [
        'resnet_v2/logits/bias']


def _max_pool(x, pad_before, pad_after, value):
  """3x3/2 max pooling of [H, W, C] after padding with `value`."""
  x = np.pad(x, [(pad_before, pad_after), (pad_before, pad_after), (0, 0)],
             constant_values=value)
  out = (x.shape[0] - 3) // 2 + 1
  return np.max([x[i:i + 2 * out - 1:2, j:j + 2 * out - 1:2]
                 for i in range(3) for j in range(3)], axis=0)


@pytest.mark.parametrize('stem, pads', [
    ('imagenet', (0, 1, -np.inf)),           # slim: 'SAME' on an even size
    ('imagenet_zero_pad', (1, 1, 0.0)),      # Keras applications, BiT
    ('imagenet_symmetric', (1, 1, -np.inf)),  # PyTorch's MaxPool2d(padding=1)
])
def test_the_stems_pad_pool1_as_their_families_do(stem, pads):
  model = resnet_v2.build_model(resnet_v2.parse_blocks('8x1'), None,
                                input_shape=(16, 16, 3), stem=stem)
  probe = keras.Model(model.input, [
      model.get_layer('resnet_v2.conv1').output,
      model.get_layer('resnet_v2.pool1').output])
  images = np.random.default_rng(0).normal(size=(1, 16, 16, 3)).astype(np.float32)
  conv1, pool1 = (t.numpy()[0] for t in probe(images))
  assert conv1.min() < 0  # no ReLU before the pool: the padding value matters
  np.testing.assert_allclose(pool1, _max_pool(conv1, *pads), rtol=1e-6)
  assert resnet_v2.STEMS[stem].stride == 4
