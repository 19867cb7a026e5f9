"""Layer-level semantics: slim's padding, arg_scope, weight decay, BN modes."""

import numpy as np
import keras
import pytest
import tensorflow as tf

import resnet_v2


def _model(fn, shape):
  inputs = keras.Input(shape)
  return keras.Model(inputs, fn(inputs))


@pytest.mark.parametrize('size', [7, 8])
def test_conv2d_same_equals_stride_one_conv_then_subsample(size):
  """slim's testConv2DSameEven/Odd: no dependence on input parity."""
  same = _model(lambda x: resnet_v2.conv2d_same(
      x, 1, 3, stride=2, scope='conv', ), (size, size, 1))
  dense = _model(lambda x: resnet_v2.subsample(resnet_v2.conv2d(
      x, 1, 3, stride=1, activation_fn=None, scope='conv'), 2), (size, size, 1))
  kernel = np.arange(9, dtype=np.float32).reshape(3, 3, 1, 1)
  for model in (same, dense):
    model.get_layer('conv').set_weights([kernel, np.zeros(1, np.float32)])
  same_fn = _model(lambda x: resnet_v2.conv2d_same(x, 1, 3, stride=2, scope='conv'),
                   (size, size, 1))
  same_fn.get_layer('conv').set_weights([kernel, np.zeros(1, np.float32)])
  image = np.arange(size * size, dtype=np.float32).reshape(1, size, size, 1)
  expected = np.maximum(dense(image), 0)  # conv2d's default ReLU
  np.testing.assert_allclose(same_fn(image), expected, rtol=1e-6)
  # A 'SAME' strided conv differs exactly when the size is even.
  tf_same = tf.nn.conv2d(image, kernel, 2, 'SAME')
  assert np.allclose(np.maximum(tf_same, 0), expected) == (size % 2 == 1)


def test_arg_scope_overrides_a_subtree():
  inputs = keras.Input((16, 16, 3))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope(batch_norm_decay=0.9)):
    with resnet_v2.arg_scope([resnet_v2.batch_norm], epsilon=0.01):
      net, _ = resnet_v2.resnet_v2(inputs, [resnet_v2.resnet_v2_block('block1', 2, 1, 1)])
  model = keras.Model(inputs, net)
  layer = lambda name: model.get_layer(f'resnet_v2.block1.unit_1.bottleneck_v2.{name}')
  preact = layer('preact')
  assert (preact.momentum, preact.epsilon, preact.scale) == (0.9, 0.01, True)
  # As in slim, a conv passes its normalizer_params explicitly, and explicit
  # arguments win over arg_scope defaults: override them on conv2d instead.
  conv_bn = layer('conv1.BatchNorm')
  assert (conv_bn.momentum, conv_bn.epsilon) == (0.9, 1e-5)
  assert not layer('conv1').use_bias


def test_weight_decay_equals_slim_l2_regularizer():
  model = resnet_v2.build_model([resnet_v2.resnet_v2_block('block1', 2, 2, 1)], 3,
                                input_shape=(16, 16, 3),
                                arg_sc=resnet_v2.resnet_arg_scope(weight_decay=4e-4))
  kernels = [w for w in model.weights if w.path.endswith('/kernel')]
  assert len(model.losses) == len(kernels) == 1 + 2 * 3 + 1 + 1
  slim_penalty = sum(4e-4 * tf.nn.l2_loss(w) for w in kernels)  # slim's formula
  np.testing.assert_allclose(sum(model.losses), slim_penalty, rtol=1e-5)


def test_initial_weights_differ_between_layers():
  model = resnet_v2.build_model([resnet_v2.resnet_v2_block('block1', 4, 2, 1)], None,
                                input_shape=(8, 8, 16))
  a = model.get_layer('resnet_v2.block1.unit_1.bottleneck_v2.conv2').kernel.numpy()
  b = model.get_layer('resnet_v2.block1.unit_2.bottleneck_v2.conv2').kernel.numpy()
  assert not np.allclose(a, b)


def _bn_model(is_training):
  inputs = keras.Input((4, 4, 2))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    net = resnet_v2.batch_norm(inputs, is_training=is_training, scope='bn')
  return keras.Model(inputs, net)


def test_is_training_none_follows_keras_training_argument():
  x = np.random.default_rng(0).normal(3.0, 2.0, (8, 4, 4, 2)).astype(np.float32)
  model = _bn_model(None)
  np.testing.assert_allclose(model(x, training=False), x / np.sqrt(1 + 1e-5), rtol=1e-5)
  normalized = model(x, training=True).numpy()
  assert abs(normalized.mean()) < 1e-4 and abs(normalized.std() - 1) < 1e-2
  moving_mean = model.get_layer('bn').moving_mean.numpy()
  np.testing.assert_allclose(moving_mean, 0.003 * x.mean(axis=(0, 1, 2)), rtol=1e-4)


def test_is_training_fixed_ignores_keras_training_argument():
  x = np.random.default_rng(0).normal(3.0, 2.0, (8, 4, 4, 2)).astype(np.float32)
  frozen = _bn_model(False)
  np.testing.assert_allclose(frozen(x, training=True), x / np.sqrt(1 + 1e-5), rtol=1e-5)
  training = _bn_model(True)
  assert abs(training(x, training=False).numpy().mean()) < 1e-4


def test_conv2d_rejects_stride_with_rate():
  with pytest.raises(ValueError, match='stride 2 and atrous rate 2 cannot both'):
    resnet_v2.conv2d(keras.Input((8, 8, 1)), 1, 3, stride=2, rate=2, scope='c')
