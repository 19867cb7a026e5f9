"""How each family of ResNet v2 names our weights in its files.

Our weights have slim's paths under the network's scope, e.g.
'block1/unit_1/bottleneck_v2/conv2/BatchNorm/gamma'. tf-slim's checkpoints
use the same paths with slim's leaf names ('weights' for 'kernel', 'biases'
for 'bias'); the other families name each weight their own way, which
`_NAMES` spells out for the parts of a network: the stem's `conv1`,
`postnorm`, the `logits`, and in unit U of block B its `preact`, its
`shortcut`, each convolution convN and the normalizer after it.

- Keras applications counts stages from its stem (block B is stage B + 1)
  and names layers `conv3_block2_1_conv`, `conv3_block2_1_bn`.
- BiT writes units as unit01, ... under 'resnet/' and names each GroupNorm
  after the convolution that FOLLOWS it: `a/group_norm` is the unit's
  pre-activation, `b/group_norm` the one after our `conv1`. (We name a
  normalizer, as slim does, after the convolution it follows.)
- timm counts stages and blocks from 0 (`stages.0.blocks.0.conv1.weight`),
  with PyTorch's leaves: 'weight' and 'bias', and 'running_mean' and
  'running_var' for BatchNorm's moving statistics.

Layouts: slim, Keras and BiT store kernels as ours (HWIO); Keras's classifier
is a Dense [C, K] kernel where our logits are a 1x1 convolution's [1, 1, C,
K]; timm stores PyTorch's OIHW.
"""

import re

import numpy as np

FAMILIES = ('tf-slim', 'keras', 'bit', 'timm')

# How an array in a file becomes ours, by the name of its layout.
_TO_OURS = {
    None: lambda a: a,
    'oihw': lambda a: np.transpose(a, (2, 3, 1, 0)),
    'dense': lambda a: a.reshape((1, 1) + a.shape),
}
_SHAPE_TO_OURS = {
    None: lambda s: tuple(s),
    'oihw': lambda s: (s[2], s[3], s[1], s[0]) if len(s) == 4 else tuple(s),
    'dense': lambda s: (1, 1) + tuple(s),
}

# Keys that files hold besides weights: training state, counters.
# (Only keys under the network's prefix count: slim's scope, BiT's 'resnet/'.)
IGNORED = {
    'tf-slim': re.compile(r'/(Momentum|ExponentialMovingAverage|Adam|Adam_1|'
                          r'RMSProp|RMSProp_1)$'),
    'keras': re.compile(r'$^'),
    'bit': re.compile(r'$^'),
    'timm': re.compile(r'\.num_batches_tracked$'),
}


def to_ours(layout, array):
  """A file's array in our layout (see the module docstring)."""
  return _TO_OURS[layout](array)


def shape_to_ours(layout, shape):
  """A file's array shape in our layout."""
  return _SHAPE_TO_OURS[layout](shape)


def prefix(family, checkpoint_scope):
  """What every key of `family`'s networks starts with."""
  return {'tf-slim': f'{checkpoint_scope}/', 'bit': 'resnet/'}.get(family, '')

_UNIT = re.compile(r'^block(\d+)/unit_(\d+)/[^/]+/(.*)$')
_SLIM_LEAVES = {'kernel': 'weights', 'bias': 'biases'}
_TORCH_LEAVES = {'kernel': 'weight', 'bias': 'bias', 'gamma': 'weight',
                 'beta': 'bias', 'moving_mean': 'running_mean',
                 'moving_variance': 'running_var'}

# {family: {part: the key's template}}. The fields: {leaf}; in units {b} and
# {u} (counted from 1, as ours), {b0} and {u0} (from 0), {u2} (two digits),
# {c} (the stage: b + 1); in a convolution N and its normalizer {n} (N),
# {n1} (N + 1), {abc} and {abc1} (the Nth and N+1th letter).
_NAMES = {
    'keras': {
        'conv1': 'conv1_conv/{leaf}', 'postnorm': 'post_bn/{leaf}',
        'logits': 'predictions/{leaf}',
        'preact': 'conv{c}_block{u}_preact_bn/{leaf}',
        'shortcut': 'conv{c}_block{u}_0_conv/{leaf}',
        'conv': 'conv{c}_block{u}_{n}_conv/{leaf}',
        'norm': 'conv{c}_block{u}_{n}_bn/{leaf}'},
    'bit': {
        'conv1': 'root_block/standardized_conv2d/{leaf}',
        'postnorm': 'group_norm/{leaf}', 'logits': 'head/conv2d/{leaf}',
        'preact': 'block{b}/unit{u2}/a/group_norm/{leaf}',
        'shortcut': 'block{b}/unit{u2}/a/proj/standardized_conv2d/{leaf}',
        'conv': 'block{b}/unit{u2}/{abc}/standardized_conv2d/{leaf}',
        'norm': 'block{b}/unit{u2}/{abc1}/group_norm/{leaf}'},
    'timm': {
        'conv1': 'stem.conv.{leaf}', 'postnorm': 'norm.{leaf}',
        'logits': 'head.fc.{leaf}',
        'preact': 'stages.{b0}.blocks.{u0}.norm1.{leaf}',
        'shortcut': 'stages.{b0}.blocks.{u0}.downsample.conv.{leaf}',
        'conv': 'stages.{b0}.blocks.{u0}.conv{n}.{leaf}',
        'norm': 'stages.{b0}.blocks.{u0}.norm{n1}.{leaf}'},
}


def _part(path):
  """(part of the network, template fields) of one of our weight paths."""
  leaf = path.split('/')[-1]
  top = path.split('/')[0]
  if top in ('conv1', 'postnorm', 'logits'):
    return top, {'leaf': leaf}
  block, unit, rest = _UNIT.match(path).groups()
  block, unit = int(block), int(unit)
  fields = dict(leaf=leaf, b=block, u=unit, b0=block - 1, u0=unit - 1,
                u2=f'{unit:02d}', c=block + 1)
  layer = rest.split('/')[0]
  if layer in ('preact', 'shortcut'):
    return layer, fields
  n = int(layer[len('conv'):])
  fields.update(n=n, n1=n + 1, abc='abc'[n - 1], abc1='abc'[n:n + 1])
  return ('norm' if rest.count('/') > 1 else 'conv'), fields


def _layout(family, path):
  """How the family stores this weight's array (see `to_ours`)."""
  if family == 'timm' and path.endswith('/kernel'):
    return 'oihw'
  if family == 'keras' and path == 'logits/kernel':
    return 'dense'
  return None


# A key that only a family's files have.
_SIGNS = {'tf-slim': re.compile(r'/unit_\d+/bottleneck_v2/'),
          'keras': re.compile(r'^conv\d_block\d+_'),
          'bit': re.compile(r'^resnet/block\d+/unit\d\d/'),
          'timm': re.compile(r'^stages\.\d+\.blocks\.')}


def family_of(keys):
  """The family whose files have keys like these, or None."""
  for family, sign in _SIGNS.items():
    if any(sign.search(key) for key in keys):
      return family
  return None


def key_of(family, path):
  """The key and layout under which `family` stores one of our weights.

  Args:
    family: One of FAMILIES.
    path: Our weight's path under the network's scope, e.g.
      'block1/unit_1/bottleneck_v2/conv1/kernel'.

  Returns:
    (key, layout): the file's key after the family's `prefix`, and None,
    'oihw' or 'dense' for how its array is laid out (see `to_ours`).

  Raises:
    ValueError: For a weight the family has no name for (a layer of ours
      that its networks do not have).
  """
  if family == 'tf-slim':
    head, _, leaf = path.rpartition('/')
    return f'{head}/{_SLIM_LEAVES.get(leaf, leaf)}', None
  try:
    part, fields = _part(path)
    if family == 'timm':
      fields['leaf'] = _TORCH_LEAVES[fields['leaf']]
    return _NAMES[family][part].format(**fields), _layout(family, path)
  except (AttributeError, KeyError, ValueError, IndexError) as e:
    raise ValueError(f'{family} has no weight like {path!r}: its networks '
                     f'do not have that layer ({e}).') from None
