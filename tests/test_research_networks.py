"""Basic units (ResNet-18/34 v2), GroupNorm + Weight Standardization,
stochastic depth and width multipliers, against independent references."""

import math

import keras
import numpy as np
import pytest

import resnet_v2
from tests import numpy_variants

# resnet_v2_18/34 with resnet_arg_scope() and 1001 classes: (trainable,
# total), as counted from the layer shapes by numpy_variants-style rules in
# `_imagenet_shapes` below; stated in the README.
PARAMETER_COUNTS = {18: (11_691_113, 11_698_921), 34: (21_801_129, 21_816_361)}


def _imagenet_shapes(depth):
  """Slim variable shapes of resnet_v2_18/34 written out from the paper."""
  units = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
  blocks = []
  for b, (width, n) in enumerate(zip((64, 128, 256, 512), units)):
    stride = 2 if b < 3 else 1
    blocks.append((f'block{b + 1}', 'basic',
                   [(width, None, 1)] * (n - 1) + [(width, None, stride)]))
  shapes = numpy_variants.weight_shapes(blocks, 1001, 's', 'batch_norm', stem_depth=64)
  shapes['s/conv1/weights'] = (7, 7, 3, 64)  # the ImageNet root conv1
  return shapes


def _count(model):
  return (sum(math.prod(w.shape) for w in model.trainable_weights),
          sum(math.prod(w.shape) for w in model.weights))


@pytest.mark.parametrize('depth', [18, 34])
def test_basic_networks_have_the_parameters_their_layers_imply(depth):
  model = resnet_v2.build_model(depth, num_classes=1001)
  assert _count(model) == numpy_variants.parameter_count(_imagenet_shapes(depth))
  assert _count(model) == PARAMETER_COUNTS[depth]
  assert {w.path.replace(f'resnet_v2_{depth}/', 's/').replace('kernel', 'weights')
          .replace('bias', 'biases') for w in model.weights} == set(_imagenet_shapes(depth))
  points = model.end_points
  assert tuple(points[f'resnet_v2_{depth}/block4'].shape[1:]) == (7, 7, 512)
  assert tuple(points[f'resnet_v2_{depth}/block1/unit_1/basic_v2/conv1'].shape[1:]) == (
      56, 56, 64)


@pytest.mark.parametrize('output_stride, size', [(8, 28), (16, 14)])
def test_basic_networks_keep_resolution_at_output_stride(output_stride, size):
  model = resnet_v2.build_model(18, None, input_shape=(224, 224, 3), global_pool=False,
                                output_stride=output_stride)
  assert tuple(model.output.shape[1:]) == (size, size, 512)
  layer = model.get_layer('resnet_v2_18.block4.unit_2.basic_v2.conv2')
  assert layer.dilation_rate == (32 // output_stride,) * 2


def test_text_spec_of_basic_units_round_trips():
  text = 'basic 64x2/2, basic 128x2/2, basic 256x2/2, basic 512x2'
  blocks = resnet_v2.parse_blocks(text)
  assert resnet_v2.format_blocks(blocks) == text
  assert blocks == resnet_v2.blocks_for_depth(18)
  mixed = resnet_v2.parse_blocks('basic 16x2/2, 32x3')  # blocks may mix units
  assert [b.unit_fn for b in mixed] == [resnet_v2.basic, resnet_v2.bottleneck]
  assert resnet_v2.format_blocks(mixed) == 'basic 16x2/2, 32x3'
  with pytest.raises(ValueError, match="'basic 64x2/2'"):
    resnet_v2.parse_blocks('basik 64x2')


SPEC = [('block1', 'basic', [(8, None, 1), (8, None, 2)]),
        ('block2', 'bottleneck', [(32, 8, 1), (32, 8, 2)]),
        ('block3', 'basic', [(16, None, 1)])]


def _blocks():
  return resnet_v2.parse_blocks('basic 8x2/2, 8x2/2, basic 16x1')


def _load(model, weights, scope):
  for weight in model.weights:
    name = weight.path.replace('/kernel', '/weights').replace('/bias', '/biases')
    weight.assign(weights[name.replace(scope, 's', 1)])


@pytest.mark.parametrize('norm', ['batch_norm', 'group_norm'])
def test_forward_matches_an_independent_numpy_network(norm):
  arg_sc = (resnet_v2.bit_arg_scope(groups=4) if norm == 'group_norm'
            else resnet_v2.resnet_arg_scope())
  model = resnet_v2.build_model(_blocks(), 5, input_shape=(12, 12, 3), stem='cifar',
                                arg_sc=arg_sc)
  shapes = numpy_variants.weight_shapes(SPEC, 5, 's', norm)
  assert {w.path.replace('resnet_v2/', 's/', 1).replace('kernel', 'weights')
          .replace('bias', 'biases') for w in model.weights} == set(shapes)
  rng = np.random.default_rng(0)
  weights = {name: (rng.uniform(0.5, 1.5, shape) if name.endswith(('gamma', 'variance'))
                    else rng.normal(0.3, 0.5, shape)).astype(np.float32)
             for name, shape in shapes.items()}  # non-zero filter means: WS matters
  _load(model, weights, 'resnet_v2')
  images = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
  reference = numpy_variants.forward(images, weights, SPEC, 's', norm, groups=4)
  np.testing.assert_allclose(model(images, training=False), reference, rtol=2e-4, atol=2e-4)


def test_group_norm_replaces_every_batch_norm():
  model = resnet_v2.build_model(_blocks(), 5, input_shape=(12, 12, 3), stem='cifar',
                                arg_sc=resnet_v2.bit_arg_scope(groups=4))
  kinds = {type(layer).__name__ for layer in model.layers}
  assert 'BatchNorm' not in kinds and 'GroupNormalization' in kinds
  convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
  assert all(isinstance(l, resnet_v2.layers.StandardizedConv2D) == ('logits' not in l.name)
             for l in convs)
  # Independent of the batch: one image gives what it gives within a batch.
  images = np.random.default_rng(1).normal(size=(3, 12, 12, 3)).astype(np.float32)
  np.testing.assert_allclose(model(images[:1], training=True),
                             model(images, training=True)[:1], atol=1e-5)
  with pytest.raises(ValueError, match='do not split into 32 groups'):
    resnet_v2.build_model(_blocks(), 5, input_shape=(12, 12, 3), stem='cifar',
                          arg_sc=resnet_v2.bit_arg_scope())


def test_stochastic_depth_rates_rise_linearly_and_vanish_at_inference():
  blocks = resnet_v2.with_stochastic_depth(resnet_v2.parse_blocks('4x2/2, 8x2'), 0.2)
  assert [u['drop_rate'] for b in blocks for u in b.args] == pytest.approx(
      [0.05, 0.1, 0.15, 0.2])
  plain = resnet_v2.build_model(resnet_v2.parse_blocks('4x2/2, 8x2'), 3,
                                input_shape=(8, 8, 3), stem='cifar')
  dropped = resnet_v2.build_model(resnet_v2.parse_blocks('4x2/2, 8x2'), 3,
                                  input_shape=(8, 8, 3), stem='cifar', drop_path_rate=0.5)
  values = {w.path: w.numpy() for w in plain.weights}
  for weight in dropped.weights:
    if weight.path in values:
      weight.assign(values.pop(weight.path))
  assert not values
  images = np.random.default_rng(2).normal(size=(64, 8, 8, 3)).astype(np.float32)
  np.testing.assert_array_equal(dropped(images, training=False), plain(images, training=False))
  # In training, each example's residual of the last unit (rate 0.5) is
  # either dropped (output = shortcut) or kept and doubled.
  unit = 'resnet_v2/block2/unit_2/bottleneck_v2'
  probe = keras.Model(dropped.input, [dropped.end_points[unit],
                                      dropped.end_points['resnet_v2/block2/unit_1/bottleneck_v2'],
                                      dropped.end_points[unit + '/conv3']])
  out, shortcut, residual = (np.asarray(t) for t in probe(images, training=True))
  kept = np.abs(out - shortcut - 2 * residual).max(axis=(1, 2, 3)) < 1e-4
  dropped_examples = np.abs(out - shortcut).max(axis=(1, 2, 3)) < 1e-6
  assert np.all(kept ^ dropped_examples) and 16 < dropped_examples.sum() < 48


def test_width_multiplier_scales_every_depth():
  wide = resnet_v2.build_model(resnet_v2.parse_blocks('4x1/2, basic 8x1'), 3,
                               input_shape=(8, 8, 3), width_multiplier=2)
  assert wide.get_layer('resnet_v2.conv1').filters == 128
  assert [wide.end_points[f'resnet_v2/block{i}'].shape[-1] for i in (1, 2)] == [32, 16]
  assert wide.get_layer('resnet_v2.block1.unit_1.bottleneck_v2.conv1').filters == 8
