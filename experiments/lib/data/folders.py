"""--dataset=<a directory>: a folder of class sub-folders of image files.

The classes are the sorted sub-folder names. The folder holds them itself,
or in train/ and (optionally) validation/, val/ or test/; without a
held-out folder every 10th image is held out. Images are read as encoded
files, and only regular files of at most MAX_IMAGE_BYTES are read.
"""

import os
import stat

from absl import logging

import numpy as np
import tensorflow as tf

from experiments.lib.data.source import IMAGE_EXTENSIONS
from experiments.lib.data.source import SHOWN
from experiments.lib.data.source import Source
from experiments.lib.errors import DataError
from experiments.lib.errors import shortlist

# The --dataset values of this kind, for messages.
KNOWN = ('a folder of class sub-folders',)
# Larger files are not images a network trains on (the biggest ImageNet JPEG
# is under 16 MiB); refusing them keeps a stray huge file from exhausting
# memory.
MAX_IMAGE_BYTES = 64 << 20


def recognises(name):
  """True if --dataset=`name` is a directory (on any TF filesystem)."""
  return tf.io.gfile.isdir(name)


def is_readable_image(path):
  """A regular file of at most MAX_IMAGE_BYTES: no FIFO, device or link to one."""
  if '://' in path:  # Object stores hold only regular files.
    return tf.io.gfile.stat(path).length <= MAX_IMAGE_BYTES
  try:
    info = os.stat(path)
  except OSError:
    return False
  return stat.S_ISREG(info.st_mode) and info.st_size <= MAX_IMAGE_BYTES


def folder_files(root):
  """(classes, files, labels) of a folder of class sub-folders.

  Only regular files with an image extension, up to MAX_IMAGE_BYTES, are
  read; others with an image extension are named in a warning.
  """
  classes = sorted(d for d in tf.io.gfile.listdir(root)
                   if tf.io.gfile.isdir(os.path.join(root, d)))
  files, labels, refused = [], [], []
  for label, name in enumerate(classes):
    for file in sorted(tf.io.gfile.listdir(os.path.join(root, name))):
      path = os.path.join(root, name, file)
      if not file.lower().endswith(IMAGE_EXTENSIONS):
        continue
      if is_readable_image(path):
        files.append(path)
        labels.append(label)
      else:
        refused.append(path)
  if refused:
    logging.warning('Not reading %d files that are not regular files of at '
                    'most %d MiB (FIFOs, devices, broken links, huge files): '
                    '%s', len(refused), MAX_IMAGE_BYTES >> 20,
                    shortlist(refused, SHOWN))
  return classes, files, labels


def load(root, options):
  """A folder of class sub-folders, or one with train/ (and validation/) in it.

  Args:
    root: The directory.
    options: The `Options`: image_size is read.

  Returns:
    A `Source` of encoded images that names each example's file.

  Raises:
    DataError: If there are no images, or the held-out folder's classes
      differ from the training folder's.
  """
  train_dir, eval_dir = root, None
  if tf.io.gfile.isdir(os.path.join(root, 'train')):
    train_dir = os.path.join(root, 'train')
    eval_dir = next((os.path.join(root, name) for name in ('validation', 'val', 'test')
                     if tf.io.gfile.isdir(os.path.join(root, name))), None)
  classes, files, labels = folder_files(train_dir)
  if not files:
    raise DataError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) in class '
                    f'sub-folders of {train_dir!r}.')
  if eval_dir is None:
    # No held-out folder: hold out every 10th image.
    held_out = np.arange(len(files)) % 10 == 9
    splits = {'train': ([f for f, h in zip(files, held_out) if not h],
                        [l for l, h in zip(labels, held_out) if not h]),
              'eval': ([f for f, h in zip(files, held_out) if h],
                       [l for l, h in zip(labels, held_out) if h])}
  else:
    eval_classes, eval_files, eval_labels = folder_files(eval_dir)
    if eval_classes != classes:
      raise DataError(
          f'The class folders of {eval_dir!r} differ from those of '
          f'{train_dir!r}: only in training: '
          f'{sorted(set(classes) - set(eval_classes)) or "none"}; only in '
          f'evaluation: {sorted(set(eval_classes) - set(classes)) or "none"}. '
          'Labels are the sorted folder names, so both must have the same.')
    splits = {'train': (files, labels), 'eval': (eval_files, eval_labels)}

  def read(split, num_shards, shard_index):
    split_files, split_labels = splits[split]
    dataset = tf.data.Dataset.from_tensor_slices(
        (split_files, np.array(split_labels, np.int64)))
    dataset = dataset.shard(num_shards, shard_index)
    return dataset.map(lambda f, l: (tf.io.read_file(f), l))

  return Source(root, len(classes), options.image_size,
                len(splits['train'][0]), len(splits['eval'][0]), encoded=True,
                augment='inception', read=read, labels=classes,
                files={k: v[0] for k, v in splits.items()},
                train_labels=splits['train'][1])
