"""What comes before a ResNet's blocks: the stems, by name.

A stem is the network's first convolution (and pooling). The families of
pre-activation ResNets agree on its convolution, a 7x7/2 `conv1` whose input
is padded by 3 on each side (slim's `conv2d_same`), but not on how the 3x3/2
`pool1` after it pads its input:

- 'imagenet' (tf-slim): max pooling with 'SAME' padding. On an even input
  (112 at 224) that pads only the bottom and right, so the first window
  starts at row 0.
- 'imagenet_zero_pad' (Keras applications, BiT, timm's BiT models): zeros
  on every side, then 'VALID' pooling: the first window starts at row -1
  and, since a pre-activation stem has no ReLU before the pool, the zeros
  can win over negative values.
- 'imagenet_symmetric' (PyTorch's `MaxPool2d(3, 2, padding=1)`, timm's
  other ResNet v2s): -inf on every side, so windows start at row -1 but
  padding never wins.

The three give different outputs from the same weights (by about the
pool's share of the signal), which is one of the ways ported weights lose
accuracy. 'cifar' is the paper's CIFAR stem, one 3x3 `conv1` at full
resolution, and 'none' leaves the input as it is.

The stem's convolution has no normalizer or activation of its own, because
the first unit's `preact` applies them; whether it has a bias, or standardized
weights, comes from the arg scope. Weight paths are slim's, '<scope>/conv1/...',
and so is the end point '<scope>/conv1'. `register_stem` adds a stem.
"""

import collections

import keras
from tf_slim.ops.arg_scope import arg_scope

from resnet_v2 import layers
from resnet_v2 import resnet_utils
from resnet_v2 import scopes


class Stem(collections.namedtuple('Stem', ['build', 'stride', 'depth'])):
  """A named stem.

  Its parts are:
    build: fn(inputs, depth, feature_levels) -> the stem's output, called in
      the network's scope and arg scope; it records its end points through
      `outputs_collections` and its levels with `resnet_utils.record_level`.
      None for no stem.
    stride: How much it reduces the resolution.
    depth: The outputs of its convolution before any width multiplier.
  """


def _conv1(inputs, depth, kernel_size, stride, feature_levels):
  with arg_scope([layers.conv2d], activation_fn=None, normalizer_fn=None):
    net = resnet_utils.conv2d_same(inputs, depth, kernel_size, stride=stride,
                                   scope='conv1')
  resnet_utils.record_level(feature_levels, stride,
                            scopes.scope_name('conv1'), net)
  return net


def _pool1(net, padding=None, pad_value=None):
  """3x3/2 max pooling; with `pad_value`, padded by 1 with it, then VALID."""
  if pad_value is not None:
    net = keras.ops.pad(net, [[0, 0], [1, 1], [1, 1], [0, 0]],
                        constant_values=pad_value)
    padding = 'VALID'
  kwargs = {} if padding is None else {'padding': padding}
  # Not an end point, as in slim, so not a feature level either: block1's
  # units give the level at stride 4.
  return layers.max_pool2d(net, [3, 3], stride=2, scope='pool1', **kwargs)


def _imagenet(inputs, depth, feature_levels):
  # pool1's padding is the arg scope's: resnet_arg_scope sets slim's 'SAME'.
  return _pool1(_conv1(inputs, depth, 7, 2, feature_levels))


def _imagenet_zero_pad(inputs, depth, feature_levels):
  return _pool1(_conv1(inputs, depth, 7, 2, feature_levels), pad_value=0.0)


def _imagenet_symmetric(inputs, depth, feature_levels):
  return _pool1(_conv1(inputs, depth, 7, 2, feature_levels),
                pad_value=float('-inf'))


def _cifar(inputs, depth, feature_levels):
  return _conv1(inputs, depth, 3, 1, feature_levels)


STEMS = {
    'imagenet': Stem(_imagenet, 4, 64),
    'imagenet_zero_pad': Stem(_imagenet_zero_pad, 4, 64),
    'imagenet_symmetric': Stem(_imagenet_symmetric, 4, 64),
    'cifar': Stem(_cifar, 1, 16),
    'none': Stem(None, 1, None),
}


def register_stem(name, build, stride, depth):
  """Adds a stem that `build_model(stem=name)` and `resnet_v2` can use.

  Args:
    name: The stem's name.
    build: As `Stem.build`.
    stride: Its resolution reduction, a positive integer.
    depth: Its convolution's outputs before any width multiplier.

  Raises:
    ValueError: If the name is taken or the stride is not a positive integer.
  """
  if name in STEMS:
    raise ValueError(f'A stem named {name!r} exists already.')
  resnet_utils.check_positive_int(stride, f'Stem {name!r}', 'stride')
  STEMS[name] = Stem(build, stride, depth)


def get_stem(name):
  """The `Stem` of a name, or a ValueError listing the known ones."""
  if name not in STEMS:
    raise ValueError(f'stem must be one of {tuple(STEMS)}, got {name!r}.')
  return STEMS[name]
