"""Independent NumPy forward passes of BiT's and timm's published layouts.

Written from the families' own code (google-research/big_transfer
`bit_pytorch/models.py`, timm `models/resnetv2.py`), in their own layouts and
key names, not from this library: BiT in NHWC with HWIO kernels under
'resnet/...' keys, timm in PyTorch's NCHW with OIHW kernels under
'stages.i.blocks.j...' keys, PyTorch's padding rules and `MaxPool2d`'s
implicit -inf padding. Also the writers of weight files in those layouts
(random values, the published shapes).
"""

import math

import numpy as np

# --- BiT: NHWC, HWIO, 'resnet/...' ------------------------------------------


def _bit_conv(x, w, stride=1, pad=0):
  """NHWC x, HWIO w, zero padding `pad` on each side, no bias."""
  x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
  kh, kw = w.shape[:2]
  oh = (x.shape[1] - kh) // stride + 1
  ow = (x.shape[2] - kw) // stride + 1
  y = np.zeros((x.shape[0], oh, ow, w.shape[3]))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + stride * (oh - 1) + 1:stride,
                j:j + stride * (ow - 1) + 1:stride]
      y += np.einsum('nhwi,io->nhwo', patch, w[i, j])
  return y


def _standardize_hwio(w, eps):
  mean = w.mean(axis=(0, 1, 2), keepdims=True)
  var = w.var(axis=(0, 1, 2), keepdims=True)
  return (w - mean) / np.sqrt(var + eps)


def _group_norm_nhwc(x, gamma, beta, groups=32, eps=1e-5):
  n, h, w, c = x.shape
  g = x.reshape(n, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(n, h, w, c) * gamma + beta


def bit_shapes(units, width, num_classes):
  """{BiT key: shape} of a BiT ResNet v2 (bit_pytorch's ResNetV2)."""
  wf = width
  shapes = {'resnet/root_block/standardized_conv2d/kernel':
                (7, 7, 3, round(64 * wf))}
  cin = round(64 * wf)
  for b, n in enumerate(units, 1):
    cmid, cout = round(64 * wf * 2 ** (b - 1)), round(256 * wf * 2 ** (b - 1))
    for u in range(1, n + 1):
      p = f'resnet/block{b}/unit{u:02d}/'
      stride = 2 if (u == 1 and b > 1) else 1
      for sub, (i, o) in zip('abc', ((cin, cmid), (cmid, cmid), (cmid, cout))):
        shapes[f'{p}{sub}/group_norm/gamma'] = (i,)
        shapes[f'{p}{sub}/group_norm/beta'] = (i,)
        k = 3 if sub == 'b' else 1
        shapes[f'{p}{sub}/standardized_conv2d/kernel'] = (k, k, i, o)
      if stride != 1 or cin != cout:
        shapes[f'{p}a/proj/standardized_conv2d/kernel'] = (1, 1, cin, cout)
      cin = cout
  shapes['resnet/group_norm/gamma'] = shapes['resnet/group_norm/beta'] = (cin,)
  shapes['resnet/head/conv2d/kernel'] = (1, 1, cin, num_classes)
  shapes['resnet/head/conv2d/bias'] = (num_classes,)
  return shapes


def bit_forward(images, w, units, ws_eps=1e-10):
  """BiT's logits for NHWC images in [-1, 1], float64."""
  w = {k: v.astype(np.float64) for k, v in w.items()}
  conv = lambda x, key, stride=1, pad=0: _bit_conv(
      x, _standardize_hwio(w[key], ws_eps), stride, pad)
  gn = lambda x, key: _group_norm_nhwc(x, w[key + '/gamma'], w[key + '/beta'])
  relu = lambda x: np.maximum(x, 0)
  x = conv(images.astype(np.float64), 'resnet/root_block/standardized_conv2d/kernel',
           2, 3)
  x = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])  # ConstantPad2d(1, 0)
  oh, ow = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  x = np.max([x[:, i:i + 2 * (oh - 1) + 1:2, j:j + 2 * (ow - 1) + 1:2]
              for i in range(3) for j in range(3)], axis=0)
  for b, n in enumerate(units, 1):
    for u in range(1, n + 1):
      p = f'resnet/block{b}/unit{u:02d}/'
      stride = 2 if (u == 1 and b > 1) else 1
      out = relu(gn(x, p + 'a/group_norm'))
      shortcut = x
      if p + 'a/proj/standardized_conv2d/kernel' in w:
        shortcut = conv(out, p + 'a/proj/standardized_conv2d/kernel', stride)
      out = conv(out, p + 'a/standardized_conv2d/kernel')
      out = conv(relu(gn(out, p + 'b/group_norm')),
                 p + 'b/standardized_conv2d/kernel', stride, 1)
      out = conv(relu(gn(out, p + 'c/group_norm')),
                 p + 'c/standardized_conv2d/kernel')
      x = out + shortcut
  x = relu(gn(x, 'resnet/group_norm')).mean(axis=(1, 2))
  return x @ w['resnet/head/conv2d/kernel'][0, 0] + w['resnet/head/conv2d/bias']


# --- timm: NCHW, OIHW, 'stages.i.blocks.j...' --------------------------------


def _torch_conv(x, w, stride=1, padding=None):
  """torch.nn.functional.conv2d: NCHW x, OIHW w, symmetric zero padding
  ((stride - 1) + (k - 1)) // 2 as timm's get_padding, no bias."""
  k = w.shape[2]
  pad = ((stride - 1) + (k - 1)) // 2 if padding is None else padding
  x = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
  oh = (x.shape[2] - k) // stride + 1
  ow = (x.shape[3] - k) // stride + 1
  y = np.zeros((x.shape[0], w.shape[0], oh, ow))
  for i in range(k):
    for j in range(k):
      patch = x[:, :, i:i + stride * (oh - 1) + 1:stride,
                j:j + stride * (ow - 1) + 1:stride]
      y += np.einsum('nchw,oc->nohw', patch, w[:, :, i, j])
  return y


def _torch_max_pool(x, pad, value):
  """MaxPool2d(3, 2) after padding by `pad` with `value` (-inf: PyTorch's
  own padding=1; 0: timm's 'fixed' ConstantPad2d(1, 0))."""
  x = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=value)
  oh, ow = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
  return np.max([x[:, :, i:i + 2 * (oh - 1) + 1:2, j:j + 2 * (ow - 1) + 1:2]
                 for i in range(3) for j in range(3)], axis=0)


def _torch_norm(x, w, prefix, kind):
  """BatchNorm2d in eval mode (eps 1e-5) or GroupNorm(32, eps 1e-5), NCHW."""
  g, b = w[prefix + '.weight'][None, :, None, None], w[prefix + '.bias'][None, :, None, None]
  if kind == 'batch_norm':
    mean = w[prefix + '.running_mean'][None, :, None, None]
    var = w[prefix + '.running_var'][None, :, None, None]
    return (x - mean) / np.sqrt(var + 1e-5) * g + b
  n, c, h, wd = x.shape
  grouped = x.reshape(n, 32, c // 32, h, wd)
  mean = grouped.mean(axis=(2, 3, 4), keepdims=True)
  var = grouped.var(axis=(2, 3, 4), keepdims=True)
  return ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * g + b


def timm_shapes(units, num_classes, kind):
  """{timm key: shape} of timm's ResNetV2 (`layers`, BN or GN), OIHW."""
  shapes = {'stem.conv.weight': (64, 3, 7, 7)}

  def norm(prefix, c):
    shapes[prefix + '.weight'] = shapes[prefix + '.bias'] = (c,)
    if kind == 'batch_norm':
      shapes[prefix + '.running_mean'] = shapes[prefix + '.running_var'] = (c,)
      shapes[prefix + '.num_batches_tracked'] = ()

  cin = 64
  for s, n in enumerate(units):
    cout = 256 * 2 ** s
    mid = cout // 4
    for j in range(n):
      p = f'stages.{s}.blocks.{j}'
      if j == 0:
        shapes[p + '.downsample.conv.weight'] = (cout, cin, 1, 1)
      norm(p + '.norm1', cin)
      shapes[p + '.conv1.weight'] = (mid, cin, 1, 1)
      norm(p + '.norm2', mid)
      shapes[p + '.conv2.weight'] = (mid, mid, 3, 3)
      norm(p + '.norm3', mid)
      shapes[p + '.conv3.weight'] = (cout, mid, 1, 1)
      cin = cout
  norm('norm', cin)
  shapes['head.fc.weight'] = (num_classes, cin, 1, 1)
  shapes['head.fc.bias'] = (num_classes,)
  return shapes


def timm_forward(images, w, units, kind, ws_eps=None, pool_pad_value=-np.inf):
  """timm's logits for NHWC images in [-1, 1], float64.

  kind: 'batch_norm' (resnetv2_50: plain convs, BN) or 'group_norm'
  (resnetv2_50x1_bit: StdConv2d with eps `ws_eps`, GroupNorm, the 'fixed'
  stem whose pool pads with zeros).
  """
  w = {k: v.astype(np.float64) for k, v in w.items() if v.dtype != np.int64}

  def conv(x, key, stride=1):
    kernel = w[key]
    if ws_eps is not None:  # StdConv2d: per output filter, over I, H, W
      mean = kernel.mean(axis=(1, 2, 3), keepdims=True)
      var = kernel.var(axis=(1, 2, 3), keepdims=True)
      kernel = (kernel - mean) / np.sqrt(var + ws_eps)
    return _torch_conv(x, kernel, stride)

  act = lambda x, prefix: np.maximum(_torch_norm(x, w, prefix, kind), 0)
  x = np.transpose(images.astype(np.float64), (0, 3, 1, 2))
  x = conv(x, 'stem.conv.weight', 2)
  x = _torch_max_pool(x, 1, pool_pad_value)
  for s, n in enumerate(units):
    for j in range(n):
      p = f'stages.{s}.blocks.{j}'
      stride = 2 if (j == 0 and s > 0) else 1
      preact = act(x, p + '.norm1')
      shortcut = x
      if p + '.downsample.conv.weight' in w:
        shortcut = conv(preact, p + '.downsample.conv.weight', stride)
      out = conv(preact, p + '.conv1.weight')
      out = conv(act(out, p + '.norm2'), p + '.conv2.weight', stride)
      out = conv(act(out, p + '.norm3'), p + '.conv3.weight')
      x = out + shortcut
  x = act(x, 'norm').mean(axis=(2, 3))
  return x @ w['head.fc.weight'][:, :, 0, 0].T + w['head.fc.bias']


def random_weights(shapes, layout, seed=0, kernel_mean=0.0):
  """Plausible float32 values for `shapes` ('num_batches_tracked': int64).

  `layout` is 'hwio' (BiT) or 'oihw' (timm), to scale kernels by fan-in;
  `kernel_mean` gives every filter a mean, so that Weight Standardization
  matters (only for standardized networks: others would blow up).
  """
  rng = np.random.default_rng(seed)
  weights = {}
  for key, shape in shapes.items():
    if key.endswith('num_batches_tracked'):
      weights[key] = np.array(1000, np.int64)
      continue
    if key.endswith(('running_var', 'moving_variance')):
      value = rng.uniform(0.5, 1.5, shape)
    elif key.endswith(('gamma', 'norm1.weight', 'norm2.weight', 'norm3.weight',
                       'norm.weight')) and len(shape) == 1:
      value = rng.uniform(0.8, 1.2, shape)
    elif len(shape) == 4:
      fan_in = math.prod(shape[1:] if layout == 'oihw' else shape[:-1])
      value = rng.normal(kernel_mean, math.sqrt(1.0 / fan_in), shape)
    else:
      value = rng.normal(0, 0.1, shape)
    weights[key] = value.astype(np.float32)
  return weights
