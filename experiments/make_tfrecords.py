"""Converts a folder of images to TFRecord shards in tf-slim's ImageNet format.

    python -m experiments.make_tfrecords --images=/data/flowers \\
        --output=/data/flowers_tfrecords
    python -m experiments.make_tfrecords --layout=ilsvrc2012 \\
        --images=/data/ILSVRC2012 --output=gs://bucket/imagenet \\
        --validation_labels=imagenet_2012_validation_synset_labels.txt \\
        --bounding_boxes=imagenet_2012_bounding_boxes.csv

The shards are those of slim's build_imagenet_data.py and the TPU's
imagenet_to_gcs.py: 'train-00000-of-01024', ..., each image a
`tf.train.Example` with its file's bytes as they are (`image/format` says
which format), its label, synset and text, shape and boxes. A
manifest.json, written last, lists the classes, the shards and the counts.

--layout=folders (the default) reads class folders as --dataset reads them
(with or without train/ and validation/; without, every 10th image is the
validation split) and numbers the classes as --dataset does, so a run can
switch between the folder and its shards. --layout=ilsvrc2012 reads
ILSVRC2012's train/<synset>/ and validation/ (synset folders, or flat with
--validation_labels) and numbers the 1000 synsets 1..1000 as slim does.

Killed, it resumes: rerun the same command, and the complete shards are
kept and the others written.
"""

import signal
import sys

from absl import app
from absl import flags
from absl import logging

from experiments.lib import cli
from experiments.lib import errors

_IMAGES = flags.DEFINE_string(
    'images', None, 'The folder of images to convert (see --layout).',
    required=True)
_OUTPUT = flags.DEFINE_string(
    'output', None, 'The folder to write the shards into (any tf.io.gfile '
    'path, e.g. gs://...): new, empty, or holding an interrupted '
    'conversion of the same images with the same flags.', required=True)
_LAYOUT = flags.DEFINE_enum(
    'layout', 'folders', ['folders', 'ilsvrc2012'],
    "folders: class folders, numbered from 0 as --dataset numbers them; "
    "ilsvrc2012: ImageNet's train/<synset>/ and validation/, numbered "
    "1..1000 as tf-slim numbers them.")
_TRAIN_SHARDS = flags.DEFINE_integer(
    'train_shards', None, 'Shards of the train split (default: about 150 '
    'MB each; slim used 1024 for ImageNet).', lower_bound=1)
_VALIDATION_SHARDS = flags.DEFINE_integer(
    'validation_shards', None, 'Shards of the validation split (default: '
    'about 150 MB each; slim used 128 for ImageNet).', lower_bound=1)
_ON_BAD_IMAGE = flags.DEFINE_enum(
    'on_bad_image', 'skip', ['skip', 'stop'],
    'For a file that does not decode: skip it (it is named in the log and '
    'the manifest), or stop the run.')
_VALIDATION_LABELS = flags.DEFINE_string(
    'validation_labels', None, "--layout=ilsvrc2012 with a flat validation "
    "folder: slim's imagenet_2012_validation_synset_labels.txt (line i is "
    'the synset of ILSVRC2012_val_<i>.JPEG).')
_BOUNDING_BOXES = flags.DEFINE_string(
    'bounding_boxes', None, "slim's bounding-box CSV (the output of "
    "process_bounding_boxes.py: 'file.JPEG,xmin,ymin,xmax,ymax', relative).")
_IMAGENET_METADATA = flags.DEFINE_string(
    'imagenet_metadata', None, "--layout=ilsvrc2012: slim's "
    'imagenet_metadata.txt for the class texts (default: the names TFDS '
    'ships).')
_NUM_THREADS = flags.DEFINE_integer(
    'num_threads', None, 'Shards written at once (default: one per core).',
    lower_bound=1)


def convert():
  """Plans and writes the conversion the flags ask for; returns the manifest."""
  # Imported here, so that a bad flag is reported before TensorFlow loads.
  # pylint: disable=g-import-not-at-top
  from experiments.lib import shard_plan
  from experiments.lib import shard_writer
  if _LAYOUT.value == 'folders':
    given = [f'--{flag.name}' for flag in (_VALIDATION_LABELS,
                                           _IMAGENET_METADATA) if flag.value]
    if given:
      raise errors.FlagError(
          f'{" and ".join(given)} belong to --layout=ilsvrc2012; with '
          '--layout=folders the classes are the folders.')
    classes, splits = shard_plan.folder_splits(_IMAGES.value,
                                               _BOUNDING_BOXES.value)
    label_offset = 0
  else:
    classes, splits = shard_plan.ilsvrc2012_splits(
        _IMAGES.value, _VALIDATION_LABELS.value, _IMAGENET_METADATA.value,
        _BOUNDING_BOXES.value)
    label_offset = 1
  plan = shard_plan.cut(
      _IMAGES.value, label_offset, classes, splits,
      {'train': _TRAIN_SHARDS.value, 'validation': _VALIDATION_SHARDS.value})
  for split, shards in plan.shards.items():
    logging.info('%s: %d images of %d classes in %d shards.', split,
                 plan.num_examples(split), len(classes), len(shards))
  return shard_writer.write(plan, _OUTPUT.value, _ON_BAD_IMAGE.value,
                            _NUM_THREADS.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    manifest = cli.user_errors(convert)
  except KeyboardInterrupt:
    logging.error('Interrupted. The complete shards are kept: rerun the same '
                  'command to write the others.')
    sys.exit(128 + signal.SIGINT)
  for split, info in manifest['splits'].items():
    logging.info('Done: %s: %d images in %d shards%s.', split,
                 info['examples'], len(info['shards']),
                 f', {len(info["skipped"])} skipped' if info['skipped'] else '')


def run_main():
  """The console script resnet-v2-make-tfrecords."""
  cli.run_tool(sys.modules[__name__], main)


if __name__ == '__main__':
  run_main()
