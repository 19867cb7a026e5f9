"""The pre-activation residual units of ResNet v2: bottleneck and basic.

He et al., "Identity Mappings in Deep Residual Networks" (arXiv:1603.05027),
Fig. 1(b): normalization and ReLU come before each convolution, and the
unit's output is a plain sum with nothing after it, so the identity path
runs from the network's first unit to its last.

The normalization is BatchNorm, slim's, unless an `arg_scope` sets another
(`layers.norm_activation` for `preact`, `layers.conv2d`'s `normalizer_fn`
inside the unit; see `arg_scopes.bit_arg_scope`). `drop_rate` adds
stochastic depth (Huang et al. 2016): during training the residual of each
example is dropped with that probability and the kept ones scaled by
1 / (1 - drop_rate); at inference the unit is unchanged.
"""

import keras
from tf_slim.ops.arg_scope import add_arg_scope

from resnet_v2 import layers
from resnet_v2 import resnet_utils
from resnet_v2 import scopes


@add_arg_scope
def bottleneck(inputs, depth, depth_bottleneck, stride, rate=1, drop_rate=0.0,
               project=False, outputs_collections=None, scope=None):
  """Bottleneck residual unit with BatchNorm before the convolutions.

  `preact` is BatchNorm+ReLU of the input. The shortcut is the input itself
  (subsampled by `stride`) when its depth is already `depth` and `project`
  is False; otherwise a 1x1 projection of `preact` with bias and no
  BatchNorm. The residual is 1x1 `conv1` -> 3x3 `conv2` (stride and atrous
  rate here, each with BatchNorm+ReLU) -> 1x1 `conv3` with bias and nothing
  after it. When two blocks of these units follow each other, slim's layout
  puts the stride in the first block's last unit.

  Args:
    inputs: A 4-D tensor [batch, height, width, channels].
    depth: The depth of the unit's output.
    depth_bottleneck: The depth of the bottleneck convolutions.
    stride: The unit's stride.
    rate: The atrous rate of `conv2`.
    drop_rate: The stochastic-depth probability of dropping the residual.
    project: If True, project the shortcut even when the depth is unchanged
      (the `projection` option of `resnet_v2_block`).
    outputs_collections: End-point dict(s) for the unit's output.
    scope: The scope name; defaults to 'bottleneck_v2'.

  Returns:
    The unit's output, shortcut + residual.
  """
  with scopes.variable_scope(scope or 'bottleneck_v2') as path:
    preact, shortcut = _preact_and_shortcut(inputs, depth, stride, project)
    residual = layers.conv2d(preact, depth_bottleneck, [1, 1], stride=1,
                             scope='conv1')
    residual = resnet_utils.conv2d_same(residual, depth_bottleneck, 3, stride,
                                        rate=rate, scope='conv2')
    residual = layers.conv2d(residual, depth, [1, 1], stride=1,
                             normalizer_fn=None, activation_fn=None,
                             scope='conv3')
    output = _add(shortcut, residual, drop_rate)
  return scopes.collect_named_outputs(outputs_collections, path, output)


@add_arg_scope
def basic(inputs, depth, stride, rate=1, drop_rate=0.0, project=False,
          outputs_collections=None, scope=None):
  """Basic residual unit (two 3x3 convolutions) with pre-activation.

  The two-layer unit of He et al.'s ResNet-18/34, in the pre-activation form
  of Fig. 1(b). `preact` and the shortcut are as in `bottleneck`. The
  residual is 3x3 `conv1` (stride here, with normalization+ReLU) -> 3x3
  `conv2` with bias and nothing after it; both take the atrous rate.

  Args:
    inputs: A 4-D tensor [batch, height, width, channels].
    depth: The depth of both convolutions and of the unit's output.
    stride: The unit's stride.
    rate: The atrous rate of both convolutions.
    drop_rate: The stochastic-depth probability of dropping the residual.
    project: If True, project the shortcut even when the depth is unchanged.
    outputs_collections: End-point dict(s) for the unit's output.
    scope: The scope name; defaults to 'basic_v2'.

  Returns:
    The unit's output, shortcut + residual.
  """
  with scopes.variable_scope(scope or 'basic_v2') as path:
    preact, shortcut = _preact_and_shortcut(inputs, depth, stride, project)
    residual = resnet_utils.conv2d_same(preact, depth, 3, stride, rate=rate,
                                        scope='conv1')
    residual = layers.conv2d(residual, depth, [3, 3], stride=1, rate=rate,
                             normalizer_fn=None, activation_fn=None,
                             scope='conv2')
    output = _add(shortcut, residual, drop_rate)
  return scopes.collect_named_outputs(outputs_collections, path, output)


def _preact_and_shortcut(inputs, depth, stride, project):
  """A unit's `preact` and its shortcut: the (subsampled) input itself when
  the depth is unchanged and `project` is False, else a 1x1 projection of
  `preact` with bias (unless the arg scope leaves biases out)."""
  preact = layers.norm_activation(inputs, scope='preact')
  if depth == inputs.shape[-1] and not project:
    shortcut = resnet_utils.subsample(inputs, stride, 'shortcut')
  else:
    shortcut = layers.conv2d(preact, depth, [1, 1], stride=stride,
                             normalizer_fn=None, activation_fn=None,
                             scope='shortcut')
  return preact, shortcut


def _add(shortcut, residual, drop_rate):
  """shortcut + residual, the residual through stochastic depth if any."""
  if drop_rate:
    residual = scopes.call_layer(
        layers.DropPath(drop_rate, name='drop_path'), residual)
  return keras.ops.add(shortcut, residual)
