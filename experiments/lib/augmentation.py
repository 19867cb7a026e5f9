"""RandAugment, MixUp and CutMix from Keras, drawn from stateless seeds.

Keras's augmentation layers draw their randomness from a `SeedGenerator`, a
variable that in a tf.data pipeline starts afresh with every process, so a
resumed run would augment differently from an uninterrupted one. Here each
draw comes from a seed of the run and the position in the input stream (an
example's for RandAugment, a batch's for the mixing; `seeds.use_seed`), so
augmentation is a pure function of that position, as the rest of the stream
is (see input_pipeline), and `--deterministic` resumes stay bit-identical.
"""

import keras
import tensorflow as tf

from experiments.lib import seeds


def example_augmenter(num_ops, factor):
  """Keras's RandAugment for one training image, seeded per example.

  Args:
    num_ops: Operations per image (0: none).
    factor: Their strength, in [0, 1].

  Returns:
    fn(image in [-1, 1], seed) -> image, or None if num_ops is 0.
  """
  if not num_ops:
    return None
  layer = keras.layers.RandAugment(value_range=(-1, 1), num_ops=num_ops,
                                   factor=factor)

  def augment(image, seed):
    seeds.use_seed(layer, seed)
    return tf.clip_by_value(layer(image, training=True), -1.0, 1.0)

  return augment


def batch_mixer(mixup_alpha, cutmix_alpha, num_classes):
  """Keras's MixUp and/or CutMix for a training batch, seeded per batch.

  With both, each batch takes one of them, each with probability 1/2.

  Args:
    mixup_alpha: MixUp's Beta(alpha, alpha) (0: off).
    cutmix_alpha: CutMix's Beta(alpha, alpha) (0: off).
    num_classes: Width of the mixed (soft) labels.

  Returns:
    fn(images, labels [batch] int, seed) -> (images, labels [batch,
    num_classes] float), or None if both are off.
  """
  mixers = []
  if mixup_alpha:
    mixers.append(keras.layers.MixUp(alpha=mixup_alpha))
  if cutmix_alpha:
    mixers.append(keras.layers.CutMix(factor=cutmix_alpha))
  if not mixers:
    return None

  def mix_with(layer, images, labels, seed):
    seeds.use_seed(layer, seed)
    transformation = layer.get_random_transformation(images, training=True)
    return (tf.cast(layer.transform_images(images, transformation), tf.float32),
            tf.cast(layer.transform_labels(labels, transformation), tf.float32))

  def mix(images, labels, seed):
    labels = tf.one_hot(labels, num_classes)
    if len(mixers) == 1:
      return mix_with(mixers[0], images, labels, seed)
    coin = tf.random.stateless_uniform([], seeds.seed(seeds.MIX_CHOICE, seed))
    return tf.cond(coin < 0.5,
                   lambda: mix_with(mixers[0], images, labels, seed),
                   lambda: mix_with(mixers[1], images, labels, seed))

  return mix
