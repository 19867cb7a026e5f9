"""The pre-activation bottleneck unit of ResNet v2.

He et al., "Identity Mappings in Deep Residual Networks" (arXiv:1603.05027),
Fig. 1(b): BatchNorm and ReLU come before each convolution, and the unit's
output is a plain sum with nothing after it, so the identity path runs from
the network's first unit to its last.
"""

import keras
from tf_slim.ops.arg_scope import add_arg_scope

from resnet_v2 import layers
from resnet_v2 import resnet_utils
from resnet_v2 import scopes


@add_arg_scope
def bottleneck(inputs, depth, depth_bottleneck, stride, rate=1,
               outputs_collections=None, scope=None):
  """Bottleneck residual unit with BatchNorm before the convolutions.

  `preact` is BatchNorm+ReLU of the input. The shortcut is the input itself
  (subsampled by `stride`) when its depth is already `depth`; otherwise a 1x1
  projection of `preact` with bias and no BatchNorm. The residual is 1x1
  `conv1` -> 3x3 `conv2` (stride and atrous rate here, each with
  BatchNorm+ReLU) -> 1x1 `conv3` with bias and nothing after it. When two
  blocks of these units follow each other, the first block's last unit
  carries the stride.

  Args:
    inputs: A 4-D tensor [batch, height, width, channels].
    depth: The depth of the unit's output.
    depth_bottleneck: The depth of the bottleneck convolutions.
    stride: The unit's stride.
    rate: The atrous rate of `conv2`.
    outputs_collections: End-point dict(s) for the unit's output.
    scope: The scope name; defaults to 'bottleneck_v2'.

  Returns:
    The unit's output, shortcut + residual.
  """
  with scopes.variable_scope(scope or 'bottleneck_v2') as path:
    depth_in = inputs.shape[-1]
    preact = layers.batch_norm(inputs, activation_fn=keras.ops.relu,
                               scope='preact')
    if depth == depth_in:
      shortcut = resnet_utils.subsample(inputs, stride, 'shortcut')
    else:
      shortcut = layers.conv2d(preact, depth, [1, 1], stride=stride,
                               normalizer_fn=None, activation_fn=None,
                               scope='shortcut')
    residual = layers.conv2d(preact, depth_bottleneck, [1, 1], stride=1,
                             scope='conv1')
    residual = resnet_utils.conv2d_same(residual, depth_bottleneck, 3, stride,
                                        rate=rate, scope='conv2')
    residual = layers.conv2d(residual, depth, [1, 1], stride=1,
                             normalizer_fn=None, activation_fn=None,
                             scope='conv3')
    output = keras.ops.add(shortcut, residual)
  return scopes.collect_named_outputs(outputs_collections, path, output)
