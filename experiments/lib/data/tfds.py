"""--dataset=imagenet2012, cifar10 or cifar100: TFDS builders.

Read from a prepared TFDS data directory (--data_dir), as encoded images.
ImageNet cannot be downloaded, so its builder is prepared here from the
ILSVRC2012 tars in a manual directory; a data set that is not prepared is
refused with what to do, or, for an export, described from TFDS's metadata
alone. ImageNet's human-readable class names come from tensorflow-datasets.
"""

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from experiments.lib.data.source import Source
from experiments.lib.errors import DataError

_TFDS = {
    # name: (train split, eval split, augment, image size)
    'imagenet2012': ('train', 'validation', 'inception', 224),
    'cifar10': ('train', 'test', 'pad_crop', 32),
    'cifar100': ('train', 'test', 'pad_crop', 32),
}
# The --dataset values of this kind, for messages.
KNOWN = tuple(_TFDS)


def recognises(name):
  """True if --dataset=`name` is one of the TFDS builders read here."""
  return name in _TFDS


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


def imagenet_synsets():
  """ImageNet's 1000 synsets, sorted: TFDS's and tf-slim's label order.

  From the imagenet2012 builder's labels file, which tensorflow-datasets
  ships.
  """
  path = os.path.join(os.path.dirname(tfds.__file__), 'datasets',
                      'imagenet2012', 'labels.txt')
  with tf.io.gfile.GFile(path) as f:
    return f.read().split()


def imagenet_label_names():
  """The 1000 human-readable ImageNet class names, in TFDS's label order.

  From tensorflow-datasets, which ships them (for SI-Score) beside the
  synset ids of imagenet2012; index i names synset i of imagenet2012.
  """
  from tensorflow_datasets.datasets.siscore import labels  # pylint: disable=g-import-not-at-top
  return list(labels.IMAGENET_LABELS_LIST)


def load(name, options):
  """The `Source` of a TFDS builder, prepared first if it is ImageNet.

  Args:
    name: A name in KNOWN.
    options: The `Options`: data_dir, manual_dir and need_data are read.

  Returns:
    A `Source` of encoded images; with empty splits if the builder is not
    prepared and `options.need_data` is False.

  Raises:
    DataError: If the data is needed and not prepared, saying how to.
  """
  train_split, eval_split, augment, image_size = _TFDS[name]
  builder = tfds.builder(name, data_dir=options.data_dir)
  label = builder.info.features['label']
  described = dict(
      name=name, num_classes=label.num_classes, image_size=image_size,
      encoded=True, augment=augment, labels=list(label.names),
      label_names=imagenet_label_names() if name == 'imagenet2012' else None,
      imagenet=name == 'imagenet2012')
  manual_dir = options.manual_dir or os.path.join(builder.data_dir_root,
                                                  'downloads', 'manual')
  if not builder.is_prepared() and not options.need_data:
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
