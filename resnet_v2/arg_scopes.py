"""The default ResNet arg scope, and how its weight decay maps to Keras.

tf-slim's `l2_regularizer(weight_decay)` adds `weight_decay * sum(w**2) / 2`
(it is built on `tf.nn.l2_loss`), while Keras's `L2(l2)` adds
`l2 * sum(w**2)`. `resnet_arg_scope(weight_decay=wd)` therefore attaches
`keras.regularizers.L2(wd / 2)` to every convolution kernel, so that
`sum(model.losses)` equals slim's regularization loss for the same weights.
Biases and BatchNorm parameters are not decayed, as in slim.
"""

import keras
from tf_slim.ops.arg_scope import arg_scope

from resnet_v2 import layers


def resnet_arg_scope(weight_decay=0.0001,
                     batch_norm_decay=0.997,
                     batch_norm_epsilon=1e-5,
                     batch_norm_scale=True,
                     activation_fn=keras.ops.relu,
                     use_batch_norm=True,
                     sync_batch_norm=False,
                     conv_biases=True):
  """Defines the default ResNet arg scope.

  The BatchNorm values suit the reference ResNets of He et al.; when training
  from scratch they may need tuning. `pool1` uses 'SAME' padding (as
  fb.resnet.torch) to ease feature alignment for dense prediction; override
  it with `arg_scope([max_pool2d], padding='VALID')`.

  Args:
    weight_decay: The slim-style L2 weight decay on convolution kernels (see
      the module docstring for the Keras equivalence); 0 or None for none.
    batch_norm_decay: The moving-average decay of BatchNorm statistics.
    batch_norm_epsilon: Added to the variance in BatchNorm.
    batch_norm_scale: If True, BatchNorm learns a `gamma` multiplier.
    activation_fn: The activation after each normalized convolution.
    use_batch_norm: If False, convolutions get no BatchNorm (but a bias).
    sync_batch_norm: If True, BatchNorm computes training statistics over
      the global batch of all replicas of a `tf.distribute` strategy, not
      per replica (an addition to slim's arguments).
    conv_biases: If True (slim's and Keras applications' layout), the
      convolutions without a normalizer after them (the stem's `conv1`, the
      shortcut projections and each unit's last convolution) have a bias; if
      False (BiT's and timm's layout), no convolution but the logits has one
      (an addition to slim's arguments).

  Returns:
    An arg scope to use with `arg_scope(...)`.
  """
  batch_norm_params = {
      'decay': batch_norm_decay,
      'epsilon': batch_norm_epsilon,
      'scale': batch_norm_scale,
      'synchronized': sync_batch_norm,
  }
  regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
  with arg_scope(
      [layers.conv2d],
      weights_regularizer=regularizer,
      # VarianceScaling(2.0, 'fan_in', truncated normal), as slim's
      # variance_scaling_initializer(); a name, not an instance, so that
      # every layer draws its own values.
      weights_initializer='he_normal',
      biases_initializer='zeros' if conv_biases else None,
      activation_fn=activation_fn,
      normalizer_fn=layers.batch_norm if use_batch_norm else None,
      normalizer_params=batch_norm_params):
    with arg_scope([layers.batch_norm], **batch_norm_params):
      with arg_scope([layers.max_pool2d], padding='SAME') as arg_sc:
        return arg_sc


def bit_arg_scope(weight_decay=0.0001,
                  groups=32,
                  group_norm_epsilon=1e-5,
                  standardization_epsilon=1e-10,
                  activation_fn=keras.ops.relu,
                  conv_biases=True):
  """Big Transfer's arg scope: GroupNorm and Weight Standardization.

  Kolesnikov et al. 2020 ("Big Transfer (BiT)", timm's `resnetv2_50x1_bit`)
  replace every BatchNorm of the pre-activation ResNet with GroupNorm and
  standardize the weights of every convolution but the logits, so training
  does not depend on the per-replica batch:

  - Weight Standardization: each output filter's weights are standardized
    over its fan-in, w_hat = (w - mean) / sqrt(var + standardization_epsilon)
    (`layers.StandardizedConv2D`).
  - GroupNorm: each example's channels are split into `groups` groups and
    normalized over each group and all positions, then scaled and shifted
    per channel (`layers.group_norm`).

  Every place a unit normalizes takes GroupNorm: `preact`, after `conv1` and
  `conv2` inside the unit, and `postnorm`.

  Args:
    weight_decay: As in `resnet_arg_scope` (conv kernels only).
    groups: GroupNorm's groups; every depth of the network must be a
      multiple of it.
    group_norm_epsilon: Added to the group variance.
    standardization_epsilon: Added to each filter's variance.
    activation_fn: The activation after each normalization.
    conv_biases: As in `resnet_arg_scope`; BiT's own networks have none
      (False), slim's layout has them (True).

  Returns:
    An arg scope to use with `arg_scope(...)` or `build_model(arg_sc=...)`.
  """
  # resnet_arg_scope's convolutions (weight decay, initializer, pooling),
  # with GroupNorm where it puts BatchNorm.
  with arg_scope(resnet_arg_scope(weight_decay=weight_decay,
                                  activation_fn=activation_fn,
                                  conv_biases=conv_biases)):
    with arg_scope([layers.conv2d], normalizer_fn=layers.group_norm,
                   normalizer_params=None,
                   weight_standardization=standardization_epsilon):
      with arg_scope([layers.group_norm], groups=groups,
                     epsilon=group_norm_epsilon):
        with arg_scope([layers.norm_activation],
                       normalizer_fn=layers.group_norm,
                       activation_fn=activation_fn) as arg_sc:
          return arg_sc
