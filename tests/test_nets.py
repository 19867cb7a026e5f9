"""ResNet v2 networks match tf-slim's parameter counts, end points and shapes."""

import math

import keras
import pytest

import resnet_v2

# tf-slim's resnet_v2_* with resnet_arg_scope() and 1001 classes:
# (trainable parameters, total including BatchNorm moving statistics).
SLIM_PARAMETER_COUNTS = {
    50: (25_570_409, 25_615_849),
    101: (44_579_945, 44_677_609),
    152: (60_238_953, 60_382_697),
    200: (64_728_169, 64_896_489),
}
UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


def slim_end_points(depth, size, output_stride=None, num_classes=1001):
  """tf-slim's end points {name: (height, width, channels)} for a square input.

  Written from slim's rules: conv1 7x7/2 and pool1 3x3/2 ('SAME') give
  stride 4; each block's LAST unit has stride 2 (block4: 1), carried by conv2
  (and the shortcut); once `output_stride` is reached every later unit has
  stride 1. Each unit records shortcut (only when it is a conv, i.e. the
  first unit of a block), conv1, conv2, conv3 and itself; each block itself.
  """
  scope = f'resnet_v2_{depth}'
  points = {}
  size = -(-size // 2)
  points[f'{scope}/conv1'] = (size, size, 64)
  size = -(-size // 2)
  stride = 4
  for b, (base, units) in enumerate(zip((64, 128, 256, 512), UNITS[depth])):
    block = f'{scope}/block{b + 1}'
    for u in range(units):
      unit = f'{block}/unit_{u + 1}/bottleneck_v2'
      unit_stride = 2 if (u == units - 1 and b < 3) else 1
      if output_stride is not None and stride >= output_stride:
        unit_stride = 1
      out = -(-size // unit_stride)
      if u == 0:
        points[f'{unit}/shortcut'] = (out, out, 4 * base)
      points[f'{unit}/conv1'] = (size, size, base)
      points[f'{unit}/conv2'] = (out, out, base)
      points[f'{unit}/conv3'] = (out, out, 4 * base)
      points[unit] = (out, out, 4 * base)
      size, stride = out, stride * unit_stride
    points[block] = (size, size, 4 * base)
  if output_stride is None:
    points['global_pool'] = (1, 1, 2048)
    points[f'{scope}/logits'] = (1, 1, num_classes)
    points[f'{scope}/spatial_squeeze'] = (num_classes,)
    points['predictions'] = (num_classes,)
  return points


def test_expected_end_points_are_stated_correctly():
  """Spot checks of the generator against numbers from slim's own tests."""
  points = slim_end_points(50, 224)
  assert len(points) == 77
  assert points['resnet_v2_50/block1'] == (28, 28, 256)
  assert points['resnet_v2_50/block3/unit_6/bottleneck_v2/conv2'] == (7, 7, 256)
  assert points['resnet_v2_50/block4'] == (7, 7, 2048)
  assert slim_end_points(50, 321, 16)['resnet_v2_50/block4'] == (21, 21, 2048)
  assert slim_end_points(50, 321, 8)['resnet_v2_50/block4'] == (41, 41, 2048)


@pytest.mark.parametrize('depth', [50, 101, 152, 200])
def test_parameter_counts_and_end_points_match_slim(depth):
  model = resnet_v2.build_model(depth, num_classes=1001)
  trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
  total = sum(math.prod(w.shape) for w in model.weights)
  assert (trainable, total) == SLIM_PARAMETER_COUNTS[depth]
  shapes = {name: tuple(t.shape[1:]) for name, t in model.end_points.items()}
  assert shapes == slim_end_points(depth, 224)
  assert list(shapes) == list(slim_end_points(depth, 224))  # slim's order too


@pytest.mark.parametrize('output_stride', [8, 16])
def test_dense_features_at_output_stride(output_stride):
  inputs = keras.Input((321, 321, 3))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    net, end_points = resnet_v2.resnet_v2_50(
        inputs, global_pool=False, output_stride=output_stride)
  shapes = {name: tuple(t.shape[1:]) for name, t in end_points.items()}
  assert shapes == slim_end_points(50, 321, output_stride)
  size = (321 - 1) // output_stride + 1
  assert tuple(net.shape) == (None, size, size, 2048)


def test_atrous_rates_follow_output_stride():
  inputs = keras.Input((321, 321, 3))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    net, _ = resnet_v2.resnet_v2_50(inputs, global_pool=False, output_stride=8)
  model = keras.Model(inputs, net)
  rate = lambda unit: model.get_layer(
      f'resnet_v2_50.{unit}.bottleneck_v2.conv2').dilation_rate
  # Stride 8 is reached after block1. From then on a unit's stride becomes 1
  # and multiplies the rate of the units AFTER it: block2's last unit still
  # runs at rate 1, block3 at rate 2, and block4 at rate 4.
  assert rate('block1.unit_3') == (1, 1)
  assert rate('block2.unit_1') == (1, 1)
  assert rate('block2.unit_4') == (1, 1)
  assert rate('block3.unit_1') == (2, 2)
  assert rate('block3.unit_6') == (2, 2)
  assert rate('block4.unit_1') == (4, 4)
  assert model.get_layer('resnet_v2_50.block4.unit_1.bottleneck_v2.conv2').strides == (1, 1)


def test_weight_paths_mirror_slim_variable_names():
  model = resnet_v2.build_model(50, num_classes=1001)
  paths = {w.path for w in model.weights}
  for path in ['resnet_v2_50/conv1/kernel', 'resnet_v2_50/conv1/bias',
               'resnet_v2_50/block1/unit_1/bottleneck_v2/preact/gamma',
               'resnet_v2_50/block1/unit_1/bottleneck_v2/shortcut/kernel',
               'resnet_v2_50/block1/unit_1/bottleneck_v2/shortcut/bias',
               'resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/kernel',
               'resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/BatchNorm/moving_mean',
               'resnet_v2_50/block2/unit_4/bottleneck_v2/conv2/BatchNorm/beta',
               'resnet_v2_50/block4/unit_3/bottleneck_v2/conv3/bias',
               'resnet_v2_50/postnorm/moving_variance',
               'resnet_v2_50/logits/kernel', 'resnet_v2_50/logits/bias']:
    assert path in paths
  assert len(paths) == len(model.weights)  # every path is unique
  assert 'resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/bias' not in paths


def test_feature_extractor_and_chosen_outputs():
  model = resnet_v2.build_model(
      50, input_shape=(64, 64, 3),
      outputs=['resnet_v2_50/block2', 'resnet_v2_50/block4', 'global_pool'])
  out = model(keras.ops.zeros((2, 64, 64, 3)))
  assert {k: tuple(v.shape) for k, v in out.items()} == {
      'resnet_v2_50/block2': (2, 4, 4, 512),
      'resnet_v2_50/block4': (2, 2, 2, 2048),
      'global_pool': (2, 1, 1, 2048)}
  with pytest.raises(ValueError, match='Unknown end points'):
    resnet_v2.build_model(50, outputs=['resnet_v2_50/block9'])


@pytest.mark.parametrize('policy', ['mixed_bfloat16', 'mixed_float16'])
def test_mixed_precision_keeps_logits_and_predictions_float32(policy):
  model = resnet_v2.build_model(
      [resnet_v2.resnet_v2_block('block1', 4, 2, 2)], 7,
      input_shape=(32, 32, 3), dtype_policy=policy)
  assert keras.config.dtype_policy().name == 'float32'  # restored
  conv = model.get_layer('resnet_v2.block1.unit_1.bottleneck_v2.conv1')
  assert conv.compute_dtype == policy.split('_')[1] and conv.kernel.dtype == 'float32'
  assert model.end_points['resnet_v2/block1'].dtype == policy.split('_')[1]
  assert model.end_points['resnet_v2/spatial_squeeze'].dtype == 'float32'
  assert model.end_points['predictions'].dtype == 'float32'
  assert model(keras.ops.ones((1, 32, 32, 3))).dtype == 'float32'
