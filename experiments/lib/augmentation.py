"""RandAugment, MixUp and CutMix from Keras, drawn from stateless seeds.

Keras's augmentation layers draw their randomness from a `SeedGenerator`, a
variable that in a tf.data pipeline starts afresh with every process, so a
resumed run would augment differently from an uninterrupted one. Here each
draw comes from a `StatelessSeed` made of the run's seed and the position in
the input stream (an example's index for RandAugment, a batch's for the
mixing), so augmentation is a pure function of that position, as the rest of
the stream is (see input_pipeline), and `--deterministic` resumes stay
bit-identical. (Keras's own `seed=` arguments take only Python ints, and
RandAugment ignores them.)
"""

import keras
import tensorflow as tf


class StatelessSeed(keras.random.SeedGenerator):
  """A seed generator without state: the i-th seed is a function of (seed, i).

  Keras's random functions call `next()` on a generator for each draw; this
  one derives the draws from a seed tensor, counting them while the graph is
  traced.
  """

  def __init__(self, seed):  # pylint: disable=super-init-not-called
    # No variable: nothing of SeedGenerator's own state is made.
    self._seed = tf.cast(seed, tf.int64)
    self._draws = 0

  def next(self, ordered=True):
    del ordered
    self._draws += 1
    return tf.stack([self._seed[0], self._seed[1] * 1009 + self._draws])


def _use_seed(layer, seed):
  # The layers read `generator` when they draw; set outside Keras's
  # attribute tracking, which would keep every traced one.
  object.__setattr__(layer, 'generator', StatelessSeed(seed))


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
    _use_seed(layer, seed)
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
    _use_seed(layer, seed)
    transformation = layer.get_random_transformation(images, training=True)
    return (tf.cast(layer.transform_images(images, transformation), tf.float32),
            tf.cast(layer.transform_labels(labels, transformation), tf.float32))

  def mix(images, labels, seed):
    labels = tf.one_hot(labels, num_classes)
    if len(mixers) == 1:
      return mix_with(mixers[0], images, labels, seed)
    coin = tf.random.stateless_uniform([], tf.stack([seed[0], -seed[1] - 1]))
    return tf.cond(coin < 0.5,
                   lambda: mix_with(mixers[0], images, labels, seed),
                   lambda: mix_with(mixers[1], images, labels, seed))

  return mix
