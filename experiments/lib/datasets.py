"""Where examples come from: TFDS builders, a folder, digits, or noise.

`load_source(name, ...)` returns a `Source`: what the data is (classes, size,
how to augment it) and a function giving one worker's shard of a split as a
`tf.data.Dataset` of (image, label), where `image` is either encoded bytes
(decoded, and skipped if corrupt, by the input pipeline) or a uint8 array.
"""

import dataclasses
import os
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')


class DataError(ValueError):
  """The requested data is missing or unusable; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Source:
  """A data set and how to read and augment it.

  Attributes:
    name: As given to --dataset.
    num_classes: Number of labels.
    image_size: Default training/eval image size.
    num_train: Examples in the training split.
    num_eval: Examples in the evaluation split.
    encoded: True if images arrive as encoded bytes.
    augment: 'inception' (random-resized crop + flip) or 'pad_crop'.
    pad: Padding for 'pad_crop'.
    flip: Random left-right flips for 'pad_crop'.
    read: read(split, num_shards, shard_index) -> a Dataset of (image, label)
      for split 'train' or 'eval', in a fixed order (the input pipeline
      shuffles).
  """
  name: str
  num_classes: int
  image_size: int
  num_train: int
  num_eval: int
  encoded: bool
  augment: str
  read: Callable[..., tf.data.Dataset]
  pad: int = 4
  flip: bool = True


_TFDS = {
    # name: (train split, eval split, augment, image size)
    'imagenet2012': ('train', 'validation', 'inception', 224),
    'cifar10': ('train', 'test', 'pad_crop', 32),
    'cifar100': ('train', 'test', 'pad_crop', 32),
}


def _missing_tfds_message(name, builder, manual_dir):
  if name == 'imagenet2012':
    how = (
        'ImageNet cannot be downloaded automatically. Download '
        'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
        f'https://image-net.org into {manual_dir} (or pass --manual_dir) and '
        'rerun: the TFDS imagenet2012 builder then prepares it there (once; '
        'hours for the full set).')
  else:
    how = (f'Prepare it on a machine with internet access with `tfds build '
           f'{name} --data_dir={builder.data_dir_root}` and copy that '
           'directory here.')
  return (f'Dataset {name!r} is not prepared: TFDS looks for it in '
          f'{builder.data_dir} (set by --data_dir; default '
          f'~/tensorflow_datasets). {how} For a speed test without data use '
          '--dataset=synthetic.')


def _tfds_source(name, data_dir, manual_dir):
  train_split, eval_split, augment, image_size = _TFDS[name]
  builder = tfds.builder(name, data_dir=data_dir)
  manual_dir = manual_dir or os.path.join(builder.data_dir_root, 'downloads',
                                          'manual')
  if not builder.is_prepared():
    if name == 'imagenet2012' and tf.io.gfile.exists(
        os.path.join(manual_dir, 'ILSVRC2012_img_train.tar')):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual_dir, try_download_gcs=False))
    else:
      raise DataError(_missing_tfds_message(name, builder, manual_dir))

  def read(split, num_shards, shard_index):
    # TFDS shuffled the examples when it wrote the files; a fixed file order
    # keeps the stream reproducible.
    dataset = builder.as_dataset(
        split=train_split if split == 'train' else eval_split,
        as_supervised=True, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()})
    return dataset.shard(num_shards, shard_index)

  splits = builder.info.splits
  return Source(name, builder.info.features['label'].num_classes, image_size,
                splits[train_split].num_examples, splits[eval_split].num_examples,
                encoded=True, augment=augment, read=read)


def _folder_files(root):
  classes = sorted(d for d in tf.io.gfile.listdir(root)
                   if tf.io.gfile.isdir(os.path.join(root, d)))
  files, labels = [], []
  for label, name in enumerate(classes):
    for file in sorted(tf.io.gfile.listdir(os.path.join(root, name))):
      if file.lower().endswith(IMAGE_EXTENSIONS):
        files.append(os.path.join(root, name, file))
        labels.append(label)
  return classes, files, labels


def _folder_source(root, image_size):
  """A folder of class sub-folders, or one with train/ and validation/ in it."""
  if not tf.io.gfile.isdir(root):
    raise DataError(f'--dataset={root!r} is neither a known data set '
                    f'({", ".join(KNOWN)}) nor a directory.')
  split_dirs = {'train': os.path.join(root, 'train')}
  for name in ('validation', 'val', 'test'):
    if tf.io.gfile.isdir(os.path.join(root, name)):
      split_dirs['eval'] = os.path.join(root, name)
      break
  if not (tf.io.gfile.isdir(split_dirs['train']) and 'eval' in split_dirs):
    split_dirs = {'train': root, 'eval': None}
  classes, files, labels = _folder_files(split_dirs['train'])
  if not files:
    raise DataError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) in class '
                    f'sub-folders of {split_dirs["train"]!r}.')
  if split_dirs['eval'] is None:
    # No held-out folder: hold out every 10th image of each class.
    held_out = np.arange(len(files)) % 10 == 9
    splits = {'train': ([f for f, h in zip(files, held_out) if not h],
                        [l for l, h in zip(labels, held_out) if not h]),
              'eval': ([f for f, h in zip(files, held_out) if h],
                       [l for l, h in zip(labels, held_out) if h])}
  else:
    eval_classes, eval_files, eval_labels = _folder_files(split_dirs['eval'])
    if eval_classes != classes:
      raise DataError(f'The class folders of {split_dirs["eval"]!r} differ '
                      f'from those of {split_dirs["train"]!r}.')
    splits = {'train': (files, labels), 'eval': (eval_files, eval_labels)}

  def read(split, num_shards, shard_index):
    split_files, split_labels = splits[split]
    dataset = tf.data.Dataset.from_tensor_slices(
        (split_files, np.array(split_labels, np.int64)))
    dataset = dataset.shard(num_shards, shard_index)
    return dataset.map(lambda f, l: (tf.io.read_file(f), l))

  return Source(root, len(classes), image_size, len(splits['train'][0]),
                len(splits['eval'][0]), encoded=True, augment='inception',
                read=read)


def _digits_source():
  """scikit-learn's 8x8 handwritten digits: 1797 images, 10 classes, no download.

  The 16 grey levels become uint8 RGB; a fixed, stratified 20% (360 images)
  is held out for evaluation.
  """
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
                encoded=False, augment='pad_crop', pad=1, flip=False, read=read)


def _synthetic_source(num_classes, image_size):
  """Random images, for measuring speed without data."""

  def read(split, num_shards, shard_index):
    del num_shards, split
    seed = [0, shard_index]
    image = tf.random.stateless_uniform([image_size, image_size, 3], seed,
                                        maxval=256, dtype=tf.int32)
    example = (tf.cast(image, tf.uint8), tf.constant(1, tf.int64))
    return tf.data.Dataset.from_tensors(example).repeat(1024)

  return Source('synthetic', num_classes, image_size, 1024, 1024,
                encoded=False, augment='pad_crop', pad=0, flip=False, read=read)


KNOWN = ('imagenet2012', 'cifar10', 'cifar100', 'digits', 'synthetic',
         'a folder of class sub-folders')


def load_source(name, data_dir=None, manual_dir=None, num_classes=None,
                image_size=None):
  """Returns the `Source` for a --dataset value.

  Args:
    name: 'imagenet2012', 'cifar10', 'cifar100', 'digits', 'synthetic', or a
      directory of class sub-folders (optionally under train/ and
      validation/).
    data_dir: The TFDS data directory (None for TFDS's default).
    manual_dir: Where the ImageNet tars are (default <data_dir>/downloads/manual).
    num_classes: Classes of synthetic data (default 1000).
    image_size: Image size of synthetic or folder data (default 224).

  Returns:
    A `Source`.

  Raises:
    DataError: If the data is missing or the name unknown, saying what to do.
  """
  if name in _TFDS:
    return _tfds_source(name, data_dir, manual_dir)
  if name == 'digits':
    return _digits_source()
  if name == 'synthetic':
    return _synthetic_source(num_classes or 1000, image_size or 224)
  return _folder_source(name, image_size or 224)
