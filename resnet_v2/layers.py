"""tf-slim's layer functions, on Keras 3 layers.

Each function makes its Keras layer(s), calls them on the (symbolic) inputs
inside a slim-style scope, and returns the output tensor, so network code reads
like slim's. All are `add_arg_scope`d: defaults are set with `arg_scope`.

Defaults are slim's own (`conv2d` has a ReLU and Glorot-uniform weights;
`batch_norm` has decay 0.999, epsilon 0.001 and no gamma); the ResNet defaults
come from `resnet_arg_scope`. Weight paths follow slim's variable names with
Keras's spelling: `weights` -> `kernel`, `biases` -> `bias`, and BatchNorm's
`gamma`, `beta`, `moving_mean`, `moving_variance` unchanged.

`is_training` (BatchNorm) is None by default: the layer then follows the Keras
`training` argument of the model call (`model(x, training=True)`), which is
what a training loop wants. True or False fixes the mode in the graph, as slim
did.
"""

import keras
import tensorflow as tf
from tf_slim.ops.arg_scope import add_arg_scope

from resnet_v2 import recompute
from resnet_v2 import scopes


@keras.saving.register_keras_serializable(package='resnet_v2')
class BatchNorm(keras.layers.BatchNormalization):
  """Keras BatchNormalization with slim's fused kernel and fixed mode.

  `fused` (the default, as in slim): training and inference run TensorFlow's
  FusedBatchNormV3 kernel instead of Keras's composite ops, 2-3x faster for
  forward+backward on CPU (and the usual choice on GPU), with the moving
  averages updated inside the kernel. As in slim, the moving variance then
  averages the unbiased (Bessel-corrected) batch variance, and epsilon is at
  least 1.001e-5 (the kernel's minimum). Synchronized (cross-replica)
  statistics use Keras's implementation.

  `is_training`: a Keras functional model passes its own `training` argument
  to every layer, overriding what the layer was called with when the graph
  was built. With `is_training` set, this layer keeps that mode whatever the
  model is called with; with None it follows the model call.
  """

  def __init__(self, is_training=None, fused=True, **kwargs):
    super().__init__(**kwargs)
    self.is_training = is_training
    self.fused = fused

  def _fusable(self, inputs, training):
    return (self.fused and not self.synchronized and len(inputs.shape) == 4
            and self.axis in (3, -1) and isinstance(training, bool))

  def call(self, inputs, training=None, mask=None):
    if self.is_training is not None:
      training = self.is_training
    training = False if training is None else training
    if not self._fusable(inputs, training):
      if not (training and recompute.recomputing()):
        return super().call(inputs, training=training, mask=mask)
      # Keras's layer updates the moving statistics: undo it when a unit
      # runs again for its gradients.
      mean = tf.identity(self.moving_mean)
      variance = tf.identity(self.moving_variance)
      outputs = super().call(inputs, training=training, mask=mask)
      with tf.control_dependencies([outputs]):
        self.moving_mean.assign(mean)
        self.moving_variance.assign(variance)
      return outputs
    channels = inputs.shape[-1]
    scale = self.gamma if self.scale else tf.ones([channels])
    offset = self.beta if self.center else tf.zeros([channels])
    if training and self.trainable:
      outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
          inputs, scale, offset, mean=self.moving_mean,
          variance=self.moving_variance, epsilon=self.epsilon,
          is_training=True, exponential_avg_factor=1.0 - self.momentum)
      if not recompute.recomputing():  # The first run has updated them.
        self.moving_mean.assign(mean)
        self.moving_variance.assign(variance)
    else:
      outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
          inputs, scale, offset, mean=self.moving_mean,
          variance=self.moving_variance, epsilon=self.epsilon,
          is_training=False)
    return outputs

  def get_config(self):
    return {**super().get_config(), 'is_training': self.is_training,
            'fused': self.fused}


@keras.saving.register_keras_serializable(package='resnet_v2')
class StandardizedConv2D(keras.layers.Conv2D):
  """Conv2D with Weight Standardization (Qiao et al. 2019), as in BiT.

  Each output filter's weights are standardized over its fan-in (height,
  width and input channels) before the convolution:

      w_hat = (w - mean(w)) / sqrt(var(w) + epsilon)

  with the mean and (biased) variance of that filter's kh * kw * c_in
  values; epsilon is 1e-10 in Big Transfer's reference code (Kolesnikov et
  al. 2020). The stored `kernel` is the raw w, so checkpoints hold what the
  optimizer updates.
  """

  def __init__(self, *args, standardization_epsilon=1e-10, **kwargs):
    super().__init__(*args, **kwargs)
    self.standardization_epsilon = standardization_epsilon

  def convolution_op(self, inputs, kernel):
    dtype = kernel.dtype  # The compute dtype; the moments are in float32.
    kernel = tf.cast(kernel, tf.float32)
    mean, variance = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
    kernel = (kernel - mean) * tf.math.rsqrt(
        variance + self.standardization_epsilon)
    return super().convolution_op(inputs, tf.cast(kernel, dtype))

  def get_config(self):
    return {**super().get_config(),
            'standardization_epsilon': self.standardization_epsilon}


@keras.saving.register_keras_serializable(package='resnet_v2')
class DropPath(keras.layers.Layer):
  """Stochastic depth: drops whole examples of a residual during training.

  Each example's residual is kept with probability 1 - rate and then scaled
  by 1 / (1 - rate), so its expectation is unchanged; at inference the
  layer is the identity. The random draws come from a Keras SeedGenerator
  whose state is checkpointed with the model, so a resumed run draws what an
  uninterrupted one would.
  """

  def __init__(self, rate, seed=None, **kwargs):
    super().__init__(**kwargs)
    if not 0 <= rate < 1:
      raise ValueError(f'A drop-path rate must be in [0, 1), got {rate!r}.')
    self.rate = rate
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)
    # Keras keeps the generator's state out of `weights` (and so out of
    # TensorFlow checkpoints); this tf.Module puts it in the checkpoint,
    # still not among the weights.
    self.checkpointed_seed = tf.Module()
    self.checkpointed_seed.state = self.seed_generator.state

  def call(self, inputs, training=None):
    if not training or not self.rate:
      return inputs
    keep = 1.0 - self.rate
    shape = [keras.ops.shape(inputs)[0]] + [1] * (len(inputs.shape) - 1)
    draw = keras.random.uniform(shape, seed=self.seed_generator,
                                dtype=inputs.dtype)
    return inputs * keras.ops.floor(keep + draw) / keep

  def get_config(self):
    return {**super().get_config(), 'rate': self.rate, 'seed': self.seed}


def _pair(value, what):
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2:
    raise ValueError(f'{what} must be an int or a pair of ints, got {value!r}.')
  return value


@add_arg_scope
def batch_norm(inputs,
               decay=0.999,
               center=True,
               scale=False,
               epsilon=0.001,
               activation_fn=None,
               is_training=None,
               trainable=True,
               synchronized=False,
               fused=True,
               outputs_collections=None,
               scope=None):
  """Batch normalization over the last axis, as slim's `batch_norm`.

  Args:
    inputs: A tensor of rank >= 2, channels last.
    decay: Moving-average decay (Keras `momentum`).
    center: If True, add the learned offset `beta`.
    scale: If True, multiply by the learned `gamma`.
    epsilon: Added to the variance to avoid dividing by zero.
    activation_fn: Applied to the normalized output, or None.
    is_training: True to normalize with batch statistics and update the moving
      ones, False to use the moving statistics, None to follow the Keras
      `training` argument.
    trainable: Whether `gamma` and `beta` are trained.
    synchronized: If True, training statistics are computed over the global
      batch of all replicas of a `tf.distribute` strategy, not per replica.
    fused: Use TensorFlow's fused kernel (see `BatchNorm`).
    outputs_collections: End-point dict(s) to record the output in.
    scope: The scope name; defaults to 'BatchNorm'.

  Returns:
    The normalized (and activated) tensor.
  """
  scope = scope or 'BatchNorm'
  layer = BatchNorm(
      is_training=is_training, fused=fused, momentum=decay, epsilon=epsilon,
      center=center, scale=scale, trainable=trainable,
      synchronized=synchronized, name=scope)
  return _normalize(layer, inputs, activation_fn, outputs_collections, scope)


def _normalize(layer, inputs, activation_fn, outputs_collections, scope):
  """A normalization layer's output, activated and recorded as an end point."""
  outputs = scopes.call_layer(layer, inputs)
  if activation_fn is not None:
    outputs = activation_fn(outputs)
  return scopes.collect_named_outputs(
      outputs_collections, scopes.scope_name(scope), outputs)


@add_arg_scope
def group_norm(inputs,
               groups=32,
               epsilon=1e-5,
               center=True,
               scale=True,
               activation_fn=None,
               outputs_collections=None,
               scope=None):
  """Group normalization (Wu and He 2018) over the last axis.

  The channels are split into `groups` groups of consecutive channels; each
  example is normalized over each group's channels and all positions:

      y = gamma * (x - mean_g) / sqrt(var_g + epsilon) + beta

  with per-channel `gamma` and `beta`. It does not depend on the batch, so
  it is the same per replica, at any batch size and at inference.

  Args:
    inputs: A tensor of rank >= 2, channels last; the channels must be a
      multiple of `groups`.
    groups: The number of groups (32 in BiT).
    epsilon: Added to the variance.
    center: If True, add the learned offset `beta`.
    scale: If True, multiply by the learned `gamma`.
    activation_fn: Applied to the normalized output, or None.
    outputs_collections: End-point dict(s) to record the output in.
    scope: The scope name; defaults to 'GroupNorm'.

  Returns:
    The normalized (and activated) tensor.

  Raises:
    ValueError: If the channels are not a multiple of `groups`.
  """
  scope = scope or 'GroupNorm'
  channels = inputs.shape[-1]
  if channels % groups:
    raise ValueError(f'{scopes.scope_name(scope)}: {channels} channels do not '
                     f'split into {groups} groups; choose groups dividing '
                     'every depth of the network.')
  layer = keras.layers.GroupNormalization(
      groups=groups, epsilon=epsilon, center=center, scale=scale, name=scope)
  return _normalize(layer, inputs, activation_fn, outputs_collections, scope)


@add_arg_scope
def norm_activation(inputs, normalizer_fn=batch_norm,
                    activation_fn=keras.ops.relu, scope=None):
  """Normalization then activation outside a convolution: a unit's `preact`
  and the network's `postnorm`.

  The normalizer is BatchNorm (slim's) unless an `arg_scope` sets another,
  so one `arg_scope` switches every normalization of a network.

  Args:
    inputs: The tensor to normalize.
    normalizer_fn: `batch_norm`, `group_norm` or a function like them.
    activation_fn: Applied after the normalizer, or None.
    scope: The normalizer's scope name.

  Returns:
    The normalized, activated tensor.
  """
  return normalizer_fn(inputs, activation_fn=activation_fn, scope=scope)


@add_arg_scope
def conv2d(inputs,
           num_outputs,
           kernel_size,
           stride=1,
           padding='SAME',
           rate=1,
           activation_fn=keras.ops.relu,
           normalizer_fn=None,
           normalizer_params=None,
           weights_initializer='glorot_uniform',
           weights_regularizer=None,
           biases_initializer='zeros',
           biases_regularizer=None,
           trainable=True,
           dtype=None,
           weight_standardization=False,
           outputs_collections=None,
           scope=None):
  """2-D convolution, then normalizer, then activation, as slim's `conv2d`.

  As in slim, a layer with a `normalizer_fn` has no bias: the normalizer's
  offset takes its place. The normalizer is built in the conv's scope, so its
  weights are `<scope>/BatchNorm/gamma` and so on.

  Args:
    inputs: A 4-D tensor [batch, height, width, channels].
    num_outputs: The number of filters.
    kernel_size: An int or a pair of ints.
    stride: An int or a pair of ints.
    padding: 'SAME' or 'VALID'.
    rate: Atrous (dilation) rate; with rate > 1 the stride must be 1.
    activation_fn: Applied last, or None for a linear output.
    normalizer_fn: E.g. `batch_norm`, or None.
    normalizer_params: Keyword arguments for `normalizer_fn`.
    weights_initializer: A Keras initializer (or its name) for the kernel.
    weights_regularizer: A Keras regularizer for the kernel, or None.
    biases_initializer: Initializer for the bias; None for no bias.
    biases_regularizer: A Keras regularizer for the bias, or None.
    trainable: Whether the layer's weights are trained.
    dtype: A Keras dtype policy for this layer (e.g. 'float32' to keep logits
      in float32 under a mixed policy), or None for the global policy.
    weight_standardization: False, or True (epsilon 1e-10) or an epsilon to
      standardize each filter's weights (`StandardizedConv2D`, BiT's form).
    outputs_collections: End-point dict(s) to record the output in.
    scope: The scope name; defaults to 'Conv'.

  Returns:
    The output tensor.

  Raises:
    ValueError: If both stride and rate are greater than one, or padding is
      unknown.
  """
  scope = scope or 'Conv'
  strides, rates = _pair(stride, 'stride'), _pair(rate, 'rate')
  if max(strides) > 1 and max(rates) > 1:
    raise ValueError(f'{scopes.scope_name(scope)}: stride {stride} and atrous '
                     f'rate {rate} cannot both be greater than 1.')
  if padding.upper() not in ('SAME', 'VALID'):
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}.")
  use_bias = normalizer_fn is None and biases_initializer is not None
  standardized = {}
  if weight_standardization is not False:
    standardized['standardization_epsilon'] = (
        1e-10 if weight_standardization is True else weight_standardization)
  layer = (StandardizedConv2D if standardized else keras.layers.Conv2D)(
      num_outputs, _pair(kernel_size, 'kernel_size'), strides=strides,
      padding=padding.lower(), dilation_rate=rates,
      use_bias=use_bias,
      kernel_initializer=weights_initializer,
      kernel_regularizer=weights_regularizer,
      bias_initializer=biases_initializer if use_bias else 'zeros',
      bias_regularizer=biases_regularizer if use_bias else None,
      trainable=trainable, dtype=dtype, name=scope, **standardized)
  outputs = scopes.call_layer(layer, inputs)
  with scopes.variable_scope(scope) as path:
    if normalizer_fn is not None:
      outputs = normalizer_fn(outputs, **(normalizer_params or {}))
    if activation_fn is not None:
      outputs = activation_fn(outputs)
  return scopes.collect_named_outputs(outputs_collections, path, outputs)


@add_arg_scope
def max_pool2d(inputs, kernel_size, stride=2, padding='VALID',
               outputs_collections=None, scope=None):
  """2-D max pooling, as slim's `max_pool2d`.

  Args:
    inputs: A 4-D tensor [batch, height, width, channels].
    kernel_size: An int or a pair of ints.
    stride: An int or a pair of ints.
    padding: 'SAME' or 'VALID'.
    outputs_collections: End-point dict(s) to record the output in.
    scope: The scope name; defaults to 'MaxPool2D'.

  Returns:
    The pooled tensor.
  """
  scope = scope or 'MaxPool2D'
  layer = keras.layers.MaxPooling2D(
      _pair(kernel_size, 'kernel_size'), strides=_pair(stride, 'stride'),
      padding=padding.lower(), name=scope)
  outputs = scopes.call_layer(layer, inputs)
  return scopes.collect_named_outputs(
      outputs_collections, scopes.scope_name(scope), outputs)
