"""Independent NumPy forward passes of the research variants of ResNet v2.

Basic units (ResNet-18/34) and Big Transfer's GroupNorm + Weight
Standardization, written from the papers' formulas with slim's variable
names and the primitives of `numpy_resnet`, not from the library's code:

- Weight Standardization (Qiao et al. 2019; BiT): each output filter's
  weights over its fan-in, w_hat = (w - mean) / sqrt(var + eps_ws).
- GroupNorm (Wu and He 2018): per example, channels split into G groups of
  consecutive channels, each normalized over its channels and all positions,
  then gamma * x_hat + beta per channel.
"""

import math

import numpy as np

from tests import numpy_resnet


def weight_shapes(blocks, num_classes, scope, norm, stem_depth=16, in_channels=3):
  """{slim name: shape} for a CIFAR-stem network of bottleneck/basic blocks.

  Args:
    blocks: [(block_name, kind, [(depth, depth_bottleneck, stride), ...])],
      kind 'bottleneck' or 'basic' (depth_bottleneck unused).
    num_classes: Logits width.
    scope: The network scope.
    norm: 'batch_norm' or 'group_norm'.
    stem_depth: The 3x3 stem's outputs.
    in_channels: Image channels.
  """
  shapes = {f'{scope}/conv1/weights': (3, 3, in_channels, stem_depth),
            f'{scope}/conv1/biases': (stem_depth,)}
  leaves = (('beta', 'gamma', 'moving_mean', 'moving_variance')
            if norm == 'batch_norm' else ('beta', 'gamma'))
  inner = 'BatchNorm' if norm == 'batch_norm' else 'GroupNorm'

  def normalizer(prefix, depth):
    for leaf in leaves:
      shapes[f'{prefix}/{leaf}'] = (depth,)

  depth_in = stem_depth
  for block_name, kind, units in blocks:
    for i, (depth, bottleneck, _) in enumerate(units):
      unit = f'{scope}/{block_name}/unit_{i + 1}/{kind}_v2'
      normalizer(f'{unit}/preact', depth_in)
      if depth != depth_in:
        shapes[f'{unit}/shortcut/weights'] = (1, 1, depth_in, depth)
        shapes[f'{unit}/shortcut/biases'] = (depth,)
      if kind == 'basic':
        shapes[f'{unit}/conv1/weights'] = (3, 3, depth_in, depth)
        normalizer(f'{unit}/conv1/{inner}', depth)
        shapes[f'{unit}/conv2/weights'] = (3, 3, depth, depth)
        shapes[f'{unit}/conv2/biases'] = (depth,)
      else:
        shapes[f'{unit}/conv1/weights'] = (1, 1, depth_in, bottleneck)
        normalizer(f'{unit}/conv1/{inner}', bottleneck)
        shapes[f'{unit}/conv2/weights'] = (3, 3, bottleneck, bottleneck)
        normalizer(f'{unit}/conv2/{inner}', bottleneck)
        shapes[f'{unit}/conv3/weights'] = (1, 1, bottleneck, depth)
        shapes[f'{unit}/conv3/biases'] = (depth,)
      depth_in = depth
  normalizer(f'{scope}/postnorm', depth_in)
  shapes[f'{scope}/logits/weights'] = (1, 1, depth_in, num_classes)
  shapes[f'{scope}/logits/biases'] = (num_classes,)
  return shapes


def parameter_count(shapes):
  """(trainable, total): moving statistics are not trainable."""
  total = sum(math.prod(s) for s in shapes.values())
  moving = sum(math.prod(s) for n, s in shapes.items() if '/moving_' in n)
  return total - moving, total


def standardize(w, eps):
  mean = w.mean(axis=(0, 1, 2), keepdims=True)
  var = w.var(axis=(0, 1, 2), keepdims=True)
  return (w - mean) / np.sqrt(var + eps)


def group_norm(x, gamma, beta, groups, eps):
  n, h, w, c = x.shape
  g = x.reshape(n, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(n, h, w, c) * gamma + beta


def forward(images, weights, blocks, scope, norm, groups=None, gn_eps=1e-5,
            ws_eps=1e-10):
  """Logits of a CIFAR-stem network (inference), in float64.

  Args:
    images: [N, H, W, C].
    weights: {slim name: array}.
    blocks: As for `weight_shapes`.
    scope: The network scope.
    norm: 'batch_norm' (moving statistics) or 'group_norm' (with Weight
      Standardization of every convolution but the logits).
    groups, gn_eps, ws_eps: GroupNorm's groups and epsilon, WS's epsilon.
  """
  w = {k: v.astype(np.float64) for k, v in weights.items()}
  gn = norm == 'group_norm'
  inner = 'GroupNorm' if gn else 'BatchNorm'

  def kernel(name):
    return standardize(w[name], ws_eps) if gn else w[name]

  def normalize(x, prefix):
    if gn:
      return group_norm(x, w[f'{prefix}/gamma'], w[f'{prefix}/beta'], groups, gn_eps)
    return numpy_resnet.batch_norm(x, w, prefix, training=False)

  relu = numpy_resnet.relu
  x = numpy_resnet.conv(images.astype(np.float64), kernel(f'{scope}/conv1/weights'),
                        w[f'{scope}/conv1/biases'])
  for block_name, kind, units in blocks:
    for i, (depth, _, stride) in enumerate(units):
      unit = f'{scope}/{block_name}/unit_{i + 1}/{kind}_v2'
      preact = relu(normalize(x, f'{unit}/preact'))
      if depth == x.shape[-1]:
        shortcut = x[:, ::stride, ::stride, :]
      else:
        shortcut = numpy_resnet.conv(preact, kernel(f'{unit}/shortcut/weights'),
                                     w[f'{unit}/shortcut/biases'], stride=stride)
      if kind == 'basic':
        r = relu(normalize(numpy_resnet.conv_same(
            preact, kernel(f'{unit}/conv1/weights'), stride), f'{unit}/conv1/{inner}'))
        r = numpy_resnet.conv(r, kernel(f'{unit}/conv2/weights'), w[f'{unit}/conv2/biases'])
      else:
        r = relu(normalize(numpy_resnet.conv(preact, kernel(f'{unit}/conv1/weights')),
                           f'{unit}/conv1/{inner}'))
        r = relu(normalize(numpy_resnet.conv_same(r, kernel(f'{unit}/conv2/weights'), stride),
                           f'{unit}/conv2/{inner}'))
        r = numpy_resnet.conv(r, kernel(f'{unit}/conv3/weights'), w[f'{unit}/conv3/biases'])
      x = shortcut + r
  x = relu(normalize(x, f'{scope}/postnorm')).mean(axis=(1, 2), keepdims=True)
  x = numpy_resnet.conv(x, w[f'{scope}/logits/weights'], w[f'{scope}/logits/biases'])
  return x[:, 0, 0, :]
