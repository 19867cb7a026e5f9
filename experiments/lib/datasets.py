"""Where examples come from: TFDS builders, a folder, digits, or noise.

`load_source(name, ...)` returns a `Source`: what the data is (classes, size,
how to augment it) and a function giving one worker's shard of a split as a
`tf.data.Dataset` of (image, label), where `image` is either encoded bytes
(decoded, and skipped if corrupt, by the input pipeline) or a uint8 array.
"""

import dataclasses
import math
import os
import stat
from typing import Callable, Mapping, Optional, Sequence

from absl import logging

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from experiments.lib.errors import DataError
from experiments.lib.errors import shortlist

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')


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
    flip: Random left-right flips in training (not for digits).
    read: read(split, num_shards, shard_index) -> a Dataset of (image, label)
      for split 'train' or 'eval', in a fixed order (the input pipeline
      shuffles).
    labels: The string label of each class: ImageNet's synset ids, CIFAR's
      class names, the class folders' names, '0'..'9' for digits.
    label_names: Human-readable names, where they differ from `labels`
      (ImageNet's).
    files: For data read from files, {split: the file of each example, in
      the order `read(split, 1, 0)` gives them}, to name bad files.
    train_labels: The label of each training example in that order, where
      it is known without reading the examples (None: read them).
  """
  name: str
  num_classes: int
  image_size: int
  num_train: int
  num_eval: int
  encoded: bool
  augment: str
  read: Callable[..., tf.data.Dataset]
  labels: Sequence[str]
  label_names: Optional[Sequence[str]] = None
  pad: int = 4
  flip: bool = True
  files: Optional[Mapping[str, Sequence[str]]] = None
  train_labels: Optional[Sequence[int]] = None


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


def _imagenet_label_names():
  """The 1000 human-readable ImageNet class names, in TFDS's label order.

  From tensorflow-datasets, which ships them (for SI-Score) beside the
  synset ids of imagenet2012; index i names synset i of imagenet2012.
  """
  from tensorflow_datasets.datasets.siscore import labels  # pylint: disable=g-import-not-at-top
  return list(labels.IMAGENET_LABELS_LIST)


def _tfds_source(name, data_dir, manual_dir, need_data):
  train_split, eval_split, augment, image_size = _TFDS[name]
  builder = tfds.builder(name, data_dir=data_dir)
  label = builder.info.features['label']
  described = dict(
      name=name, num_classes=label.num_classes, image_size=image_size,
      encoded=True, augment=augment, labels=list(label.names),
      label_names=_imagenet_label_names() if name == 'imagenet2012' else None)
  manual_dir = manual_dir or os.path.join(builder.data_dir_root, 'downloads',
                                          'manual')
  if not builder.is_prepared() and not need_data:
    return Source(num_train=0, num_eval=0, read=_no_data(name), **described)
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
  return Source(num_train=splits[train_split].num_examples,
                num_eval=splits[eval_split].num_examples, read=read, **described)


def _no_data(name):
  def read(split, num_shards, shard_index):
    raise DataError(f'{name} is not prepared, so its {split} split cannot be '
                    f'read ({num_shards} shards, shard {shard_index}).')
  return read


# Larger files are not images a network trains on (the biggest ImageNet JPEG
# is under 16 MiB); refusing them keeps a stray huge file from exhausting
# memory.
MAX_IMAGE_BYTES = 64 << 20
_SHOWN = 5


def _is_readable_image(path):
  """A regular file of at most MAX_IMAGE_BYTES: no FIFO, device or link to one."""
  if '://' in path:  # Object stores hold only regular files.
    return tf.io.gfile.stat(path).length <= MAX_IMAGE_BYTES
  try:
    info = os.stat(path)
  except OSError:
    return False
  return stat.S_ISREG(info.st_mode) and info.st_size <= MAX_IMAGE_BYTES


def _folder_files(root):
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
      if _is_readable_image(path):
        files.append(path)
        labels.append(label)
      else:
        refused.append(path)
  if refused:
    logging.warning('Not reading %d files that are not regular files of at '
                    'most %d MiB (FIFOs, devices, broken links, huge files): '
                    '%s', len(refused), MAX_IMAGE_BYTES >> 20,
                    shortlist(refused, _SHOWN))
  return classes, files, labels


def _folder_source(root, image_size):
  """A folder of class sub-folders, or one with train/ (and validation/) in it."""
  if not tf.io.gfile.isdir(root):
    raise DataError(f'--dataset={root!r} is neither a known data set '
                    f'({", ".join(KNOWN)}) nor a directory.')
  train_dir, eval_dir = root, None
  if tf.io.gfile.isdir(os.path.join(root, 'train')):
    train_dir = os.path.join(root, 'train')
    eval_dir = next((os.path.join(root, name) for name in ('validation', 'val', 'test')
                     if tf.io.gfile.isdir(os.path.join(root, name))), None)
  classes, files, labels = _folder_files(train_dir)
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
    eval_classes, eval_files, eval_labels = _folder_files(eval_dir)
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

  return Source(root, len(classes), image_size, len(splits['train'][0]),
                len(splits['eval'][0]), encoded=True, augment='inception',
                read=read, labels=classes,
                files={k: v[0] for k, v in splits.items()},
                train_labels=splits['train'][1])


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
                encoded=False, augment='pad_crop', pad=1, flip=False, read=read,
                labels=[str(d) for d in range(10)],
                train_labels=splits['train'][1])


# Examples per split of --dataset=synthetic.
SYNTHETIC_EXAMPLES = 1024


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


def _synthetic_source(num_classes, image_size):
  """Learnable synthetic images (see `synthetic_image`), for speed and smoke tests."""

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


def labels_with_offset(source, labels_offset):
  """(labels, names) of the model's classes: the source's, after the offset.

  With tf-slim's --labels_offset=1, class 0 is 'background'.
  """
  padding = (['background'] if labels_offset == 1
             else [f'offset_{i}' for i in range(labels_offset)])
  labels = padding + list(source.labels)
  return labels, padding + list(source.label_names or source.labels)


# How many examples of a split are decoded before the first step.
CHECKED_EXAMPLES = 64
_SPLITS_READ = {'train': ('train',), 'train_and_eval': ('train', 'eval'),
                'eval': ('eval',), 'export': (),
                'linear_eval': ('train', 'eval')}


def check_source(source, mode):
  """Checks, before the first step, that the splits `mode` reads are usable.

  Each split must hold examples, and of its first CHECKED_EXAMPLES at least
  one must decode (a source none of whose images decodes would otherwise
  end the run with an OutOfRangeError, possibly after training); those that
  do not decode are named in a warning.

  Args:
    source: A `Source`.
    mode: The run's --mode.

  Raises:
    DataError: Naming the split, the data set and what to do.
  """
  for split in _SPLITS_READ[mode]:
    name = 'training' if split == 'train' else 'evaluation'
    if not (source.num_train if split == 'train' else source.num_eval):
      raise DataError(
          f'The {name} split of {source.name!r} is empty. A folder without '
          'a validation/ folder holds out every 10th image, so it needs at '
          'least 10; add train/ and validation/ folders, or use --mode=train '
          'or --mode=eval as the data allows.')
    if source.encoded:
      _check_decodes(source, split, name)


def _check_decodes(source, split, name):
  bad, count = [], 0
  for index, (image, _) in enumerate(
      source.read(split, 1, 0).take(CHECKED_EXAMPLES)):
    count += 1
    try:
      tf.io.decode_image(image, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
      bad.append(source.files[split][index] if source.files
                 else f'example {index}')
  if bad and len(bad) == count:
    raise DataError(
        f'None of the first {count} images of the {name} split of '
        f'{source.name!r} decodes, e.g. {shortlist(bad, _SHOWN)}. Check that '
        f'these are JPEG, PNG, GIF or BMP files '
        f'({", ".join(IMAGE_EXTENSIONS)}).')
  if bad:
    logging.warning('%d of the first %d images of the %s split do not decode '
                    'and will be skipped: %s', len(bad), count, name,
                    shortlist(bad, _SHOWN))


def few_shot(source, examples_per_class, seed):
  """The source with only `examples_per_class` training examples per class.

  The examples of each class are drawn without replacement with `seed`,
  before the split is sharded, so every worker sees the same subset (as
  BiT's `--examples_per_class`). They are read once and kept in memory
  (as encoded files or arrays), so that the many epochs of a few-shot run do
  not read the whole split each time. The evaluation split is unchanged.

  Raises:
    DataError: If a class has fewer training examples than asked for.
  """
  examples = source.read('train', 1, 0)
  labels = np.asarray(source.train_labels if source.train_labels is not None
                      else [int(label) for _, label in
                            examples.map(lambda _, label: label)])
  rng = np.random.default_rng(seed)
  chosen = []
  for label in range(source.num_classes):
    indices = np.flatnonzero(labels == label)
    if len(indices) < examples_per_class:
      raise DataError(
          f'--examples_per_class={examples_per_class}, but class '
          f'{source.labels[label]!r} of {source.name!r} has only '
          f'{len(indices)} training examples.')
    chosen.append(rng.permutation(indices)[:examples_per_class])
  chosen = np.sort(np.concatenate(chosen))
  keep = tf.constant(np.isin(np.arange(len(labels)), chosen))
  images, kept_labels = zip(*examples.enumerate().filter(
      lambda index, _: keep[index]).map(lambda _, example: example)
                            .as_numpy_iterator())
  subset = (np.array(images, dtype=object if source.encoded else None),
            np.array(kept_labels))
  read_all = source.read

  def read(split, num_shards, shard_index):
    if split != 'train':
      return read_all(split, num_shards, shard_index)
    return tf.data.Dataset.from_tensor_slices(subset).shard(num_shards,
                                                            shard_index)

  files = source.files and dict(
      source.files, train=[source.files['train'][i] for i in chosen])
  return dataclasses.replace(source, num_train=len(chosen), read=read,
                             files=files, train_labels=labels[chosen])


def typical_area(source):
  """The median height x width of the first training images, in pixels.

  BiT-HyperRule picks its resolution from it. Images that do not decode are
  left out (the pre-flight check names them).
  """
  if not source.encoded:
    return source.image_size ** 2
  areas = []
  for image, _ in source.read('train', 1, 0).take(CHECKED_EXAMPLES):
    try:
      shape = (tf.io.extract_jpeg_shape(image) if tf.io.is_jpeg(image) else
               tf.shape(tf.io.decode_image(image, expand_animations=False)))
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
      continue
    areas.append(int(shape[0]) * int(shape[1]))
  return int(np.median(areas)) if areas else source.image_size ** 2


KNOWN = ('imagenet2012', 'cifar10', 'cifar100', 'digits', 'synthetic',
         'a folder of class sub-folders')


def load_source(name, data_dir=None, manual_dir=None, num_classes=None,
                image_size=None, need_data=True):
  """Returns the `Source` for a --dataset value.

  Args:
    name: 'imagenet2012', 'cifar10', 'cifar100', 'digits', 'synthetic', or a
      directory of class sub-folders (optionally under train/ and
      validation/).
    data_dir: The TFDS data directory (None for TFDS's default).
    manual_dir: Where the ImageNet tars are (default <data_dir>/downloads/manual).
    num_classes: Classes of synthetic data (default 1000).
    image_size: Image size of synthetic or folder data (default 224).
    need_data: False if only the data set's description is needed (an
      export): a TFDS data set that is not prepared is then described from
      TFDS's metadata, with empty splits, instead of prepared or refused.

  Returns:
    A `Source`.

  Raises:
    DataError: If the data is missing or the name unknown, saying what to do.
  """
  if name in _TFDS:
    return _tfds_source(name, data_dir, manual_dir, need_data)
  if name == 'digits':
    return _digits_source()
  if name == 'synthetic':
    return _synthetic_source(num_classes or 1000, image_size or 224)
  return _folder_source(name, image_size or 224)
