"""--dataset=digits: scikit-learn's 8x8 handwritten digits, in memory.

Small enough to train on in seconds on a CPU and needing no download, so the
recipe `experiments/digits.py` and the tests use it.
"""

import numpy as np
import tensorflow as tf

from experiments.lib.data.source import Source

# The --dataset values of this kind, for messages.
KNOWN = ('digits',)


def recognises(name):
  """True if --dataset=`name` asks for the digits."""
  return name == 'digits'


def load(name, options):
  """scikit-learn's 8x8 handwritten digits: 1797 images, 10 classes, no download.

  The 16 grey levels become uint8 RGB; a fixed, stratified 20% (360 images)
  is held out for evaluation.
  """
  del name, options  # There is one digits set, of one size.
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = digits.target.astype(np.int64)
  held_out = np.zeros(len(labels), bool)
  for label in range(10):
    index = np.flatnonzero(labels == label)
    held_out[index[np.random.default_rng(label).permutation(len(index))[:36]]] = True
  splits = {'train': (images[~held_out], labels[~held_out]),
            'eval': (images[held_out], labels[held_out])}

  def read(split, num_shards, shard_index):
    return tf.data.Dataset.from_tensor_slices(splits[split]).shard(
        num_shards, shard_index)

  return Source('digits', 10, 8, int((~held_out).sum()), int(held_out.sum()),
                encoded=False, augment='pad_crop', pad=1, flip=False, read=read,
                labels=[str(d) for d in range(10)],
                train_labels=splits['train'][1])
