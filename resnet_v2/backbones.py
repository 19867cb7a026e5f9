"""ResNet v2 as a backbone: multi-level features with their strides.

Detection and segmentation heads (FPN, DeepLab, U-Net) take a network's
features at several resolutions. `backbone` builds the network without its
classifier and returns a model whose outputs are one feature map per
stride (2, 4, 8, 16, 32 for slim's ImageNet network), described by
`model.feature_info`:

    model = resnet_v2.backbone(50, input_shape=(512, 512, 3))
    [(level.name, level.stride, level.channels) for level in model.feature_info]
    # [('stride_2', 2, 64), ('stride_4', 4, 256), ..., ('stride_32', 32, 2048)]
    features = model(images)          # {'stride_2': ..., 'stride_32': ...}

Each level is the last feature map the network computes at its stride. A
pre-activation network's unit outputs are sums that its next unit
normalizes, so they are taken as they are, except the deepest level, which
is the network's final `postnorm` output (normalized and activated), as the
classifier sees it. With `output_stride`, the deepest levels merge into one
at that stride (atrous units keep the resolution).
"""

import collections

import keras

from resnet_v2 import models
from resnet_v2 import nets
from resnet_v2 import resnet_utils

FeatureLevel = collections.namedtuple(
    'FeatureLevel', ['name', 'stride', 'channels', 'end_point'])
FeatureLevel.__doc__ = """One level of a backbone's features.

  name: The model output's key, 'stride_<stride>'.
  stride: Ratio of the input's resolution to this level's.
  channels: The level's depth.
  end_point: Where it comes from: a slim end-point name (a unit's or the stem's
    output), or '<scope>/postnorm' for the deepest level.
"""


def backbone(depth_or_blocks, input_shape=(224, 224, 3), output_stride=None,
             min_stride=2, **build_kwargs):
  """Builds a multi-level feature model of a ResNet v2.

  Args:
    depth_or_blocks: As for `build_model`.
    input_shape: The image shape; height and width may be None.
    output_stride: None for the nominal strides, else the deepest level's
      stride (atrous convolutions beyond it), e.g. 16 or 8 for segmentation.
    min_stride: Levels at a smaller stride are left out (1 drops none; the
      CIFAR stem's conv1 is at stride 1).
    **build_kwargs: Further `build_model` arguments (stem, scope,
      dtype_policy, arg_sc, width_multiplier, drop_path_rate, ...).

  Returns:
    A `keras.Model` from images to a dict {level name: features}, with
    `feature_info`, a list of `FeatureLevel` from the finest level to the
    deepest, and the usual `end_points`.

  Raises:
    ValueError: As `build_model`, or for a `num_classes` or `outputs`
      argument (a backbone has neither).
  """
  for key in ('num_classes', 'outputs', 'global_pool'):
    if key in build_kwargs:
      raise ValueError(f'backbone() takes no {key!r}: it returns features.')
  stem = build_kwargs.get('stem', 'imagenet')
  features = models.build_model(
      depth_or_blocks, None, input_shape, global_pool=False,
      output_stride=output_stride, **build_kwargs)
  blocks, scope = models.resolve_network(depth_or_blocks, stem,
                                         build_kwargs.get('scope'))
  input_stride = nets.ROOT_STRIDE if stem == 'imagenet' else 1
  candidates = []  # (stride, end point), in the order the network runs.
  if stem != 'none':
    candidates.append((2 if stem == 'imagenet' else 1, f'{scope}/conv1'))
  plan = resnet_utils.unit_plan(blocks, output_stride, input_stride)
  for block, steps in zip(resnet_utils.check_blocks(blocks), plan):
    for i, (_, _, stride) in enumerate(steps):
      unit = f'{scope}/{block.scope}/unit_{i + 1}/'
      name = next((n for n in features.end_points
                   if n.startswith(unit) and n.count('/') == unit.count('/')),
                  None)  # None: a user's unit function that records none.
      if name:
        candidates.append((stride, name))
  # The last map at each stride; at the deepest, the postnorm output.
  last = {stride: name for stride, name in candidates if stride >= min_stride}
  last[plan[-1][-1][2]] = f'{scope}/postnorm'
  tensors, info = {}, []
  for stride, name in sorted(last.items()):
    tensor = features.end_points.get(name, features.output)
    key = f'stride_{stride}'
    tensors[key] = tensor
    info.append(FeatureLevel(key, stride, tensor.shape[-1], name))
  model = keras.Model(features.input, tensors, name=features.name)
  model.feature_info = info
  model.end_points = features.end_points
  return model
