"""resnet_v2.backbone: one feature map per stride, described by feature_info."""

import numpy as np
import pytest

import resnet_v2


def _levels(model):
  return [(level.name, level.stride, level.channels, level.end_point)
          for level in model.feature_info]


def test_resnet_50_levels_at_strides_2_to_32():
  model = resnet_v2.backbone(50, input_shape=(64, 64, 3))
  assert _levels(model) == [
      ('stride_2', 2, 64, 'resnet_v2_50/conv1'),
      ('stride_4', 4, 256, 'resnet_v2_50/block1/unit_2/bottleneck_v2'),
      ('stride_8', 8, 512, 'resnet_v2_50/block2/unit_3/bottleneck_v2'),
      ('stride_16', 16, 1024, 'resnet_v2_50/block3/unit_5/bottleneck_v2'),
      ('stride_32', 32, 2048, 'resnet_v2_50/postnorm')]
  features = model(np.zeros((1, 64, 64, 3), np.float32))
  assert {k: tuple(v.shape) for k, v in features.items()} == {
      f'stride_{s}': (1, 64 // s, 64 // s, c)
      for s, c in ((2, 64), (4, 256), (8, 512), (16, 1024), (32, 2048))}


@pytest.mark.parametrize('output_stride', [8, 16])
def test_output_stride_merges_the_deepest_levels(output_stride):
  model = resnet_v2.backbone(18, input_shape=(65, 65, 3), output_stride=output_stride)
  strides = [level.stride for level in model.feature_info]
  assert strides == [s for s in (2, 4, 8, 16) if s <= output_stride]
  deepest = model.feature_info[-1]
  assert deepest.channels == 512 and deepest.end_point == 'resnet_v2_18/postnorm'
  size = (65 - 1) // output_stride + 1
  assert tuple(model.output[deepest.name].shape[1:]) == (size, size, 512)


def test_cifar_stem_and_min_stride():
  blocks = resnet_v2.parse_blocks('basic 8x2/2, basic 16x2/2, basic 32x1')
  model = resnet_v2.backbone(blocks, input_shape=(32, 32, 3), stem='cifar', min_stride=1)
  assert [(l.stride, l.channels) for l in model.feature_info] == [(1, 8), (2, 16), (4, 32)]
  assert model.feature_info[0].end_point == 'resnet_v2/block1/unit_1/basic_v2'
  with pytest.raises(ValueError, match="no 'num_classes'"):
    resnet_v2.backbone(blocks, num_classes=3)
