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
      return super().call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = self.gamma if self.scale else tf.ones([channels])
    offset = self.beta if self.center else tf.zeros([channels])
    if training and self.trainable:
      outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
          inputs, scale, offset, mean=self.moving_mean,
          variance=self.moving_variance, epsilon=self.epsilon,
          is_training=True, exponential_avg_factor=1.0 - self.momentum)
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
  outputs = scopes.call_layer(layer, inputs)
  if activation_fn is not None:
    outputs = activation_fn(outputs)
  return scopes.collect_named_outputs(
      outputs_collections, scopes.scope_name(scope), outputs)


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
  layer = keras.layers.Conv2D(
      num_outputs, _pair(kernel_size, 'kernel_size'), strides=strides,
      padding=padding.lower(), dilation_rate=rates,
      use_bias=use_bias,
      kernel_initializer=weights_initializer,
      kernel_regularizer=weights_regularizer,
      bias_initializer=biases_initializer if use_bias else 'zeros',
      bias_regularizer=biases_regularizer if use_bias else None,
      trainable=trainable, dtype=dtype, name=scope)
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
