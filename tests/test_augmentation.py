"""Keras's RandAugment, MixUp and CutMix, drawn from stateless seeds."""

import numpy as np
import tensorflow as tf

from experiments.lib import augmentation
from experiments.lib import data
from experiments.lib import input_pipeline


def _images(n=8, size=16):
  return tf.constant(np.random.default_rng(0).uniform(-1, 1, (n, size, size, 3)), tf.float32)


def test_mixing_is_a_function_of_the_seed():
  mix = augmentation.batch_mixer(mixup_alpha=0.4, cutmix_alpha=1.0, num_classes=5)
  images, labels = _images(), tf.constant([0, 1, 2, 3, 4, 0, 1, 2])
  runs = [mix(images, labels, tf.constant([7, i], tf.int64)) for i in (0, 0, 1, 2, 3)]
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  np.testing.assert_array_equal(runs[0][1], runs[1][1])
  assert not all(np.array_equal(runs[0][0], r[0]) for r in runs[2:])
  for mixed, soft in runs:
    np.testing.assert_allclose(tf.reduce_sum(soft, -1), 1.0, rtol=1e-6)
    assert soft.shape == (8, 5) and mixed.shape == images.shape
  # In a tf.function (as in tf.data) the same seed gives the same batch.
  traced = tf.function(mix)(images, labels, tf.constant([7, 0], tf.int64))
  np.testing.assert_array_equal(traced[1], runs[0][1])


def test_mixup_mixes_images_as_it_mixes_labels():
  mix = augmentation.batch_mixer(mixup_alpha=0.4, cutmix_alpha=0, num_classes=8)
  images, labels = _images(), tf.range(8)
  mixed, soft = mix(images, labels, tf.constant([1, 2], tf.int64))
  # Each image is w * itself + (1 - w) * its partner, w = its own label's weight.
  soft = soft.numpy()
  mixed_any = False
  for i in range(8):
    own, others = soft[i, i], np.where(np.arange(8) == i, -1.0, soft[i])
    if own < 1 - 1e-6:
      mixed_any = True
      np.testing.assert_allclose(
          mixed[i], own * images[i] + (1 - own) * images[int(others.argmax())], atol=1e-5)
  assert mixed_any

def test_randaugment_is_a_function_of_the_seed():
  augment = augmentation.example_augmenter(num_ops=2, factor=0.8)
  image = _images(1)[0]
  outputs = [augment(image, tf.constant([3, i], tf.int64)).numpy() for i in (0, 0, 1, 2, 3)]
  np.testing.assert_array_equal(outputs[0], outputs[1])
  assert not all(np.array_equal(outputs[0], o) for o in outputs[2:])
  assert all(o.min() >= -1 and o.max() <= 1 and o.shape == (16, 16, 3) for o in outputs)
  assert augmentation.example_augmenter(0, 0.5) is None
  assert augmentation.batch_mixer(0, 0, 10) is None


def test_augmented_stream_resumes_at_any_step():
  source = data.load_source('digits')
  extras = dict(augment=augmentation.example_augmenter(2, 0.5),
                mix=augmentation.batch_mixer(0.2, 1.0, 10))
  context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                       num_replicas_in_sync=1)
  full = list(input_pipeline.train_dataset_fn(source, 8, 32, 5, 0, 6, **extras)(
      context).take(6).as_numpy_iterator())
  plain = list(input_pipeline.train_dataset_fn(source, 8, 32, 5, 0, 6)(
      context).take(6).as_numpy_iterator())
  resumed = list(input_pipeline.train_dataset_fn(source, 8, 32, 5, 4, 6, **extras)(
      context).take(2).as_numpy_iterator())
  assert full[0][1].shape == (32, 10)  # soft labels
  assert not np.array_equal(full[0][0], plain[0][0])  # the images were changed
  np.testing.assert_allclose(full[0][1].sum(-1), 1.0, rtol=1e-6)
  assert plain[0][1].shape == (32,)
  for expected, got in zip(full[4:], resumed):
    for a, b in zip(expected, got):
      np.testing.assert_array_equal(a, b)


def test_the_keras_internals_the_seeds_rely_on():
  """seeds.use_seed relies on two things of Keras 3; if a Keras release
  changes them, this fails, naming which, instead of augmentation silently
  drawing from Keras's own per-process state."""
  from experiments.lib import seeds  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  for layer, data in [(keras.layers.RandAugment(value_range=(-1, 1), num_ops=2), _images(1)[0]),
                      (keras.layers.MixUp(alpha=0.2), _images()),
                      (keras.layers.CutMix(factor=1.0), _images())]:
    name = type(layer).__name__
    assert layer._get_seed_generator(keras.backend.backend()) is layer.generator, (
        f'Keras {keras.__version__}: {name} no longer draws from its `generator` attribute')
    seeds.use_seed(layer, tf.constant([1, 2], tf.int64))
    generator = layer.generator
    layer.get_random_transformation(data, training=True)
    assert generator._draws > 0, (
        f"Keras {keras.__version__}: {name}'s random draws no longer call "
        "its generator's next()")
