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

import keras

from resnet_v2 import models


def backbone(depth_or_blocks, input_shape=(224, 224, 3), output_stride=None,
             min_stride=2, **build_kwargs):
  """Builds a multi-level feature model of a ResNet v2.

  The levels are those the network recorded while it was built
  (`model.feature_info` of `build_model`); this picks them as outputs.

  Args:
    depth_or_blocks: As for `build_model`, but not a network function.
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
    ValueError: As `build_model`, for a `num_classes` or `outputs` argument
      (a backbone has neither), or for a network function (whose levels are
      unknown).
  """
  for key in ('num_classes', 'outputs', 'global_pool'):
    if key in build_kwargs:
      raise ValueError(f'backbone() takes no {key!r}: it returns features.')
  if callable(depth_or_blocks):
    raise ValueError('backbone() takes a depth or blocks: the feature levels '
                     'of a network function are not known.')
  features = models.build_model(
      depth_or_blocks, None, input_shape, global_pool=False,
      output_stride=output_stride, **build_kwargs)
  info = [level for level in features.feature_info
          if level.stride >= min_stride]
  tensors = {level.name: features.end_points.get(level.end_point,
                                                 features.output)
             for level in info}
  model = keras.Model(features.input, tensors, name=features.name)
  model.feature_info = info
  model.end_points = features.end_points
  return model
