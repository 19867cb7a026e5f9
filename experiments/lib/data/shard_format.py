"""The TFRecord shards of tf-slim's and the TPU's ImageNet, and their manifest.

tf-slim's `datasets/build_imagenet_data.py` and the TPU's
`tools/datasets/imagenet_to_gcs.py` write a split as shards named
'train-00000-of-01024', ..., 'validation-00127-of-00128', each a TFRecord
file of serialized `tf.train.Example`s with the keys below. Many ImageNet
copies exist only in this form, so `experiments.make_tfrecords` writes it
and the shard reader reads it, both through this module: what one writes,
the other parses.

Labels: slim numbers ImageNet's 1000 sorted synsets 1..1000, keeping 0 for
'background'; shards converted from a folder of classes number them as the
folder reader does, from 0. The manifest's `label_offset` says which.

The manifest (MANIFEST, JSON) is written last, once every shard is
complete, so a directory with one holds a whole conversion:
  format: FORMAT, format_version: FORMAT_VERSION,
  label_offset: 0 or 1 (the label of the first class),
  classes: [{label, synset, text}, ...] in label order,
  splits: {split: {examples, shards: [names], shard_examples: [examples
    of each shard], skipped: [paths]}},
  fingerprint: a digest of what was converted (see the converter).
Published shards have no manifest; a reader then counts their records.
"""

import json
import re

import tensorflow as tf

FORMAT = 'tf-slim imagenet tfrecord'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
SPLITS = ('train', 'validation')

# Feature keys, as slim's writer spells them.
ENCODED = 'image/encoded'
IMAGE_FORMAT = 'image/format'
FILENAME = 'image/filename'
HEIGHT = 'image/height'
WIDTH = 'image/width'
CHANNELS = 'image/channels'
COLORSPACE = 'image/colorspace'
LABEL = 'image/class/label'
SYNSET = 'image/class/synset'
TEXT = 'image/class/text'
BOX_KEYS = ('image/object/bbox/xmin', 'image/object/bbox/ymin',
            'image/object/bbox/xmax', 'image/object/bbox/ymax')
BOX_LABEL = 'image/object/bbox/label'

# What `parse` reads. The TPU's shards have no text and no boxes, so those
# default to empty; slim's own reader defaults a missing format to 'jpeg'.
FEATURES = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value='JPEG'),
    FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=''),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    CHANNELS: tf.io.FixedLenFeature([], tf.int64, default_value=3),
    COLORSPACE: tf.io.FixedLenFeature([], tf.string, default_value='RGB'),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    SYNSET: tf.io.FixedLenFeature([], tf.string, default_value=''),
    TEXT: tf.io.FixedLenFeature([], tf.string, default_value=''),
    **{key: tf.io.VarLenFeature(tf.float32) for key in BOX_KEYS},
    BOX_LABEL: tf.io.VarLenFeature(tf.int64),
}

# The colorspace slim's key names, by the channels a decoder finds.
COLORSPACES = {1: 'Grayscale', 2: 'GrayscaleAlpha', 3: 'RGB', 4: 'RGBA'}

SHARD_NAME = re.compile(
    r'(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})')
MAX_SHARDS = 99999  # Five digits.


def shard_name(split, index, num_shards):
  """'train-00002-of-01024': shard `index` (from 0) of `num_shards`."""
  return f'{split}-{index:05d}-of-{num_shards:05d}'


def shard_names(split, num_shards):
  """The names of all `num_shards` shards of `split`, in order."""
  return [shard_name(split, i, num_shards) for i in range(num_shards)]


def _bytes(value):
  value = value.encode() if isinstance(value, str) else value
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def encode(image, image_format, height, width, channels, label, synset, text,
           filename, boxes=()):
  """One image as a serialized `tf.train.Example` in slim's format.

  Args:
    image: The encoded image file's bytes, stored as they are.
    image_format: What they are: 'JPEG', 'PNG', 'GIF', 'BMP', ...
    height, width, channels: The decoded image's shape.
    label: The class id (int).
    synset: The class's id string (ImageNet's synset, or the folder name).
    text: The class's human-readable name.
    filename: The file's base name.
    boxes: [xmin, ymin, xmax, ymax] boxes in coordinates relative to the
      image (0..1), all of the image's class (slim repeats the label once
      per box).

  Returns:
    The serialized Example (bytes).
  """
  columns = list(zip(*boxes)) if len(boxes) else [(), (), (), ()]
  feature = {
      ENCODED: _bytes(image),
      IMAGE_FORMAT: _bytes(image_format),
      FILENAME: _bytes(filename),
      HEIGHT: _ints([height]),
      WIDTH: _ints([width]),
      CHANNELS: _ints([channels]),
      COLORSPACE: _bytes(COLORSPACES.get(channels, 'RGB')),
      LABEL: _ints([label]),
      SYNSET: _bytes(synset),
      TEXT: _bytes(text),
      BOX_LABEL: _ints([label] * len(boxes)),
  }
  for key, column in zip(BOX_KEYS, columns):
    feature[key] = _floats(column)
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString()


def parse(serialized):
  """A serialized Example as a dict of tensors, keyed as slim keys them.

  Args:
    serialized: A scalar string tensor (one record of a shard).

  Returns:
    {key: tensor} for every key of FEATURES: scalars, except the box
    coordinates (float32 [num_boxes]) and box labels (int64 [num_boxes]),
    made dense here so that a `tf.data` map can batch them after padding.
  """
  parsed = tf.io.parse_single_example(serialized, FEATURES)
  for key in (*BOX_KEYS, BOX_LABEL):
    parsed[key] = tf.sparse.to_dense(parsed[key])
  return parsed


def manifest_text(label_offset, classes, splits, fingerprint):
  """The manifest's JSON text.

  Args:
    label_offset: The label of the first class (1 for slim's ImageNet).
    classes: [(synset, text)] in label order.
    splits: {split: {'examples': n, 'shards': [names],
      'shard_examples': [n of each shard], 'skipped': [paths]}}.
    fingerprint: The converter's digest of its input and settings.
  """
  return json.dumps({
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'label_offset': label_offset,
      'classes': [{'label': label_offset + i, 'synset': synset, 'text': text}
                  for i, (synset, text) in enumerate(classes)],
      'splits': splits,
      'fingerprint': fingerprint,
  }, indent=1) + '\n'


def read_manifest(text):
  """The manifest's dict, or None if `text` is not one of this format.

  A manifest of another format version is refused (None) rather than read
  with the wrong meaning.
  """
  try:
    manifest = json.loads(text)
  except ValueError:
    return None
  if (not isinstance(manifest, dict) or manifest.get('format') != FORMAT or
      manifest.get('format_version') != FORMAT_VERSION):
    return None
  return manifest
