"""An independent NumPy ResNet v2 forward pass and a tf-slim checkpoint writer.

Written from the paper and slim's documented layout, not from our code, so
that tests can compare the Keras implementation against it. Weights are a
dict from slim variable names to arrays.
"""

import math

import numpy as np
import tensorflow as tf

BN_EPSILON = 1e-5


def slim_weight_shapes(blocks, num_classes, scope, in_channels=3):
  """Returns {slim variable name: shape} for a root block + `blocks` + logits.

  Args:
    blocks: A list of (block_name, [(depth, depth_bottleneck, stride), ...]).
    num_classes: Logits width.
    scope: The network scope, e.g. 'resnet_v2_50'.
    in_channels: Image channels.
  """
  shapes = {f'{scope}/conv1/weights': (7, 7, in_channels, 64),
            f'{scope}/conv1/biases': (64,)}

  def bn(prefix, depth):
    for leaf in ('beta', 'gamma', 'moving_mean', 'moving_variance'):
      shapes[f'{prefix}/{leaf}'] = (depth,)

  depth_in = 64
  for block_name, units in blocks:
    for i, (depth, bottleneck, _) in enumerate(units):
      unit = f'{scope}/{block_name}/unit_{i + 1}/bottleneck_v2'
      bn(f'{unit}/preact', depth_in)
      if depth != depth_in:
        shapes[f'{unit}/shortcut/weights'] = (1, 1, depth_in, depth)
        shapes[f'{unit}/shortcut/biases'] = (depth,)
      shapes[f'{unit}/conv1/weights'] = (1, 1, depth_in, bottleneck)
      bn(f'{unit}/conv1/BatchNorm', bottleneck)
      shapes[f'{unit}/conv2/weights'] = (3, 3, bottleneck, bottleneck)
      bn(f'{unit}/conv2/BatchNorm', bottleneck)
      shapes[f'{unit}/conv3/weights'] = (1, 1, bottleneck, depth)
      shapes[f'{unit}/conv3/biases'] = (depth,)
      depth_in = depth
  bn(f'{scope}/postnorm', depth_in)
  if num_classes:
    shapes[f'{scope}/logits/weights'] = (1, 1, depth_in, num_classes)
    shapes[f'{scope}/logits/biases'] = (num_classes,)
  return shapes


def random_weights(shapes, seed=0):
  """Returns plausible random float32 values for `shapes`."""
  rng = np.random.default_rng(seed)
  weights = {}
  for name, shape in shapes.items():
    if name.endswith('moving_variance'):
      value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith('gamma'):
      value = rng.uniform(0.8, 1.2, shape)
    elif name.endswith('weights'):
      value = rng.normal(0, math.sqrt(2.0 / math.prod(shape[:-1])), shape)
    else:
      value = rng.normal(0, 0.1, shape)
    weights[name] = value.astype(np.float32)
  return weights


def write_tf1_checkpoint(weights, prefix):
  """Writes `weights` as a TF1 checkpoint with a tf.compat.v1 graph + Saver.

  Returns:
    The checkpoint path (the prefix).
  """
  with tf.Graph().as_default():
    for name, value in weights.items():
      tf.compat.v1.Variable(value, name=name)
    tf.compat.v1.train.get_or_create_global_step()
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      return saver.save(sess, prefix, write_meta_graph=False)


def _same_pads(size, kernel, stride):
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv(x, w, b=None, stride=1, padding='SAME', rate=1):
  """NHWC convolution, TF padding rules, in float64."""
  kh, kw = w.shape[:2]
  ekh, ekw = kh + (kh - 1) * (rate - 1), kw + (kw - 1) * (rate - 1)
  if padding == 'SAME':
    ph, pw = _same_pads(x.shape[1], ekh, stride), _same_pads(x.shape[2], ekw, stride)
    x = np.pad(x, [(0, 0), ph, pw, (0, 0)])
  out_h = (x.shape[1] - ekh) // stride + 1
  out_w = (x.shape[2] - ekw) // stride + 1
  y = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i * rate:i * rate + stride * (out_h - 1) + 1:stride,
                j * rate:j * rate + stride * (out_w - 1) + 1:stride, :]
      y += patch @ w[i, j]
  return y if b is None else y + b


def conv_same(x, w, stride, rate=1):
  """slim's conv2d_same: symmetric explicit padding when stride > 1."""
  if stride == 1:
    return conv(x, w, stride=1, padding='SAME', rate=rate)
  k = w.shape[0] + (w.shape[0] - 1) * (rate - 1)
  beg, end = (k - 1) // 2, (k - 1) - (k - 1) // 2
  x = np.pad(x, [(0, 0), (beg, end), (beg, end), (0, 0)])
  return conv(x, w, stride=stride, padding='VALID')


def batch_norm(x, weights, prefix, training):
  """Inference BN with the moving statistics, or training BN with the batch's."""
  if training:
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  else:
    mean, var = weights[f'{prefix}/moving_mean'], weights[f'{prefix}/moving_variance']
  return (weights[f'{prefix}/gamma'] * (x - mean) / np.sqrt(var + BN_EPSILON)
          + weights[f'{prefix}/beta'])


def relu(x):
  return np.maximum(x, 0)


def max_pool_same(x, kernel, stride):
  ph, pw = _same_pads(x.shape[1], kernel, stride), _same_pads(x.shape[2], kernel, stride)
  x = np.pad(x, [(0, 0), ph, pw, (0, 0)], constant_values=-np.inf)
  out_h, out_w = (x.shape[1] - kernel) // stride + 1, (x.shape[2] - kernel) // stride + 1
  y = np.full((x.shape[0], out_h, out_w, x.shape[3]), -np.inf)
  for i in range(kernel):
    for j in range(kernel):
      y = np.maximum(y, x[:, i:i + stride * (out_h - 1) + 1:stride,
                         j:j + stride * (out_w - 1) + 1:stride])
  return y


def forward(images, weights, blocks, scope, num_classes, output_stride=None,
            global_pool=True, training=False):
  """The ResNet v2 forward pass; returns logits (or features) in float64.

  Args:
    images: [N, H, W, C] array.
    weights: {slim name: array}.
    blocks: A list of (block_name, [(depth, depth_bottleneck, stride), ...]).
    scope: The network scope.
    num_classes: Logits width, or None for features.
    output_stride: None, or the target stride (atrous beyond it).
    global_pool: Mean over space before the logits.
    training: BatchNorm with batch statistics instead of moving ones.
  """
  w = {k: v.astype(np.float64) for k, v in weights.items()}
  x = conv_same(images.astype(np.float64), w[f'{scope}/conv1/weights'], 2)
  x = x + w[f'{scope}/conv1/biases']
  x = max_pool_same(x, 3, 2)
  current_stride, rate = 4, 1
  for block_name, units in blocks:
    for i, (depth, _, stride) in enumerate(units):
      unit = f'{scope}/{block_name}/unit_{i + 1}/bottleneck_v2'
      unit_rate = rate
      if output_stride is not None and current_stride == output_stride:
        rate, stride = rate * stride, 1
      else:
        unit_rate, current_stride = 1, current_stride * stride
      preact = relu(batch_norm(x, w, f'{unit}/preact', training))
      if depth == x.shape[-1]:
        shortcut = x[:, ::stride, ::stride, :]
      else:
        shortcut = conv(preact, w[f'{unit}/shortcut/weights'],
                        w[f'{unit}/shortcut/biases'], stride=stride)
      r = relu(batch_norm(conv(preact, w[f'{unit}/conv1/weights']), w,
                          f'{unit}/conv1/BatchNorm', training))
      r = relu(batch_norm(conv_same(r, w[f'{unit}/conv2/weights'], stride, unit_rate),
                          w, f'{unit}/conv2/BatchNorm', training))
      r = conv(r, w[f'{unit}/conv3/weights'], w[f'{unit}/conv3/biases'])
      x = shortcut + r
  x = relu(batch_norm(x, w, f'{scope}/postnorm', training))
  if global_pool:
    x = x.mean(axis=(1, 2), keepdims=True)
  if num_classes:
    x = conv(x, w[f'{scope}/logits/weights'], w[f'{scope}/logits/biases'])
    if global_pool:
      x = x[:, 0, 0, :]
  return x
