"""--dataset=synthetic: learnable noise images, made as they are read.

For speed and smoke tests without data: the images cost about as little as
random data, yet each class can be told from its images, so a network
learns them (see `synthetic_image`).
"""

import math

import numpy as np
import tensorflow as tf

from experiments.lib.data.source import Source

# The --dataset values of this kind, for messages.
KNOWN = ('synthetic',)
# Examples per split of --dataset=synthetic.
SYNTHETIC_EXAMPLES = 1024


def recognises(name):
  """True if --dataset=`name` asks for synthetic data."""
  return name == 'synthetic'


def synthetic_image(label, index, image_size):
  """A noisy image whose class can be told from it: a colour and stripes.

  Class c has its own mean colour and stripes of its own orientation and
  frequency; each example adds its own noise and stripe phase. So a network
  learns the classes, and train and eval accuracy rise together, while the
  input pipeline stays as cheap as random data.

  Args:
    label: The class, an int64 scalar tensor.
    index: The example's index, an int64 scalar tensor (its noise seed).
    image_size: Height and width.

  Returns:
    A uint8 [image_size, image_size, 3] image.
  """
  c = tf.cast(label, tf.float32)
  colour = tf.random.stateless_uniform([3], tf.stack([label, 1]), -0.6, 0.6)
  # Orientations spread by the golden ratio, so neighbouring classes differ.
  angle = math.pi * tf.math.floormod(c * (math.sqrt(5) - 1) / 2, 1.0)
  frequency = 1.0 + tf.math.floormod(c, 3.0)
  grid = tf.range(image_size, dtype=tf.float32) / image_size * 2 * math.pi
  along = (tf.cos(angle) * grid[None, :] + tf.sin(angle) * grid[:, None])
  phase = tf.random.stateless_uniform([], tf.stack([index, 2]), 0, 2 * math.pi)
  stripes = 0.4 * tf.sin(frequency * along + phase)[..., None]
  noise = tf.random.stateless_normal([image_size, image_size, 3],
                                     tf.stack([index, 3]), stddev=0.25)
  pixels = 127.5 * (1.0 + tf.clip_by_value(colour + stripes + noise, -1, 1))
  return tf.cast(tf.round(pixels), tf.uint8)


def load(name, options):
  """Learnable synthetic images (see `synthetic_image`), for speed and smoke tests.

  Args:
    name: 'synthetic'.
    options: The `Options`: num_classes and image_size are read.

  Returns:
    A `Source` of SYNTHETIC_EXAMPLES uint8 images per split.
  """
  del name  # Unused: there is one kind of synthetic data.
  num_classes, image_size = options.num_classes, options.image_size

  def read(split, num_shards, shard_index):
    # Train and eval examples draw distinct noise; labels cycle over classes.
    first = 0 if split == 'train' else SYNTHETIC_EXAMPLES
    indices = tf.data.Dataset.range(first, first + SYNTHETIC_EXAMPLES)
    return indices.shard(num_shards, shard_index).map(
        lambda i: (synthetic_image(i % num_classes, i, image_size),
                   i % num_classes))

  return Source('synthetic', num_classes, image_size, SYNTHETIC_EXAMPLES,
                SYNTHETIC_EXAMPLES, encoded=False, augment='pad_crop', pad=0,
                flip=False, read=read,
                labels=[str(c) for c in range(num_classes)],
                train_labels=np.arange(SYNTHETIC_EXAMPLES) % num_classes)
