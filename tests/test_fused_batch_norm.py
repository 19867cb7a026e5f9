"""The fused BatchNorm (the speed-up) computes what Keras's plain one does."""

import numpy as np
import pytest
import tensorflow as tf

import resnet_v2

BLOCKS = '8x2/2, 16x1'


def _pair(policy='float32'):
  """The same network with fused and with plain BatchNorm, same weights."""
  models = []
  for fused in (True, False):
    with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
      with resnet_v2.arg_scope([resnet_v2.batch_norm], fused=fused) as arg_sc:
        pass
    models.append(resnet_v2.build_model(
        resnet_v2.parse_blocks(BLOCKS), 7, input_shape=(33, 30, 3),
        dtype_policy=policy, arg_sc=arg_sc))
  rng = np.random.default_rng(0)
  for fused_weight, plain_weight in zip(*(m.weights for m in models)):
    value = rng.uniform(0.5, 1.5, fused_weight.shape) if 'variance' in fused_weight.path \
        else rng.normal(0, 0.3, fused_weight.shape)
    fused_weight.assign(value)
    plain_weight.assign(value)
  return models


def _run(model, images, training):
  with tf.GradientTape() as tape:
    logits = model(images, training=training)
    loss = tf.reduce_sum(tf.square(logits))
  return logits, tape.gradient(loss, model.trainable_weights)


@pytest.mark.parametrize('training', [False, True])
def test_outputs_and_gradients_match_in_float32(training):
  fused, plain = _pair()
  assert type(fused.get_layer('resnet_v2.postnorm')).__name__ == 'BatchNorm'
  images = np.random.default_rng(1).normal(size=(4, 33, 30, 3)).astype(np.float32)
  (fused_logits, fused_grads), (plain_logits, plain_grads) = (
      _run(fused, images, training), _run(plain, images, training))
  scale = np.abs(plain_logits).max()
  np.testing.assert_allclose(fused_logits, plain_logits, atol=2e-5 * scale)
  # Gradients that vanish mathematically (a bias followed by BatchNorm, in
  # training mode) are float noise on both sides: hence a floor relative to
  # the largest gradient.
  floor = 1e-6 * max(np.abs(g).max() for g in plain_grads)
  for a, b, w in zip(fused_grads, plain_grads, plain.trainable_weights):
    np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max() + floor, err_msg=w.path)


def test_moving_statistics_follow_slim():
  """Same moving mean; the moving variance averages the Bessel-corrected batch
  variance (as slim's fused kernel did) where Keras averages the biased one."""
  fused, plain = _pair()
  images = np.random.default_rng(2).normal(size=(4, 33, 30, 3)).astype(np.float32)
  before = {w.path: w.numpy() for w in plain.weights}
  fused(images, training=True)
  plain(images, training=True)
  name = 'resnet_v2/block1/unit_1/bottleneck_v2/conv2/BatchNorm'
  weights = {m: {w.path: w.numpy() for w in model.weights}
             for m, model in (('fused', fused), ('plain', plain))}
  np.testing.assert_allclose(weights['fused'][f'{name}/moving_mean'],
                             weights['plain'][f'{name}/moving_mean'], rtol=1e-5, atol=1e-7)
  n = 4 * 9 * 8  # examples x positions normalized by conv2 (stride 2: 9x8)
  decay = 0.997
  old = before[f'{name}/moving_variance']
  plain_batch_var = (weights['plain'][f'{name}/moving_variance'] - decay * old) / (1 - decay)
  fused_batch_var = (weights['fused'][f'{name}/moving_variance'] - decay * old) / (1 - decay)
  np.testing.assert_allclose(fused_batch_var, plain_batch_var * n / (n - 1), rtol=1e-3)


def test_bfloat16_outputs_match():
  fused, plain = _pair('mixed_bfloat16')
  images = np.random.default_rng(3).normal(size=(4, 33, 30, 3)).astype(np.float32)
  for training in (False, True):
    a, b = fused(images, training=training), plain(images, training=training)
    assert a.dtype == b.dtype == tf.float32
    np.testing.assert_allclose(a, b, atol=0.05 * np.abs(b).max())  # bfloat16: 8 bits
