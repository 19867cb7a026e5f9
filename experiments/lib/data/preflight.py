"""What a run learns from a source before its first step.

It reads the first CHECKED_EXAMPLES images of a split, whatever the kind of
source: `check_source` refuses splits that are empty or none of whose images
decodes (a run would otherwise end with an OutOfRangeError, possibly after
training), and `typical_area` measures the images for BiT-HyperRule.
"""

from absl import logging

import numpy as np
import tensorflow as tf

from experiments.lib.data.source import IMAGE_EXTENSIONS
from experiments.lib.data.source import SHOWN
from experiments.lib.errors import DataError
from experiments.lib.errors import shortlist

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
          'least 10; a folder of shards needs train-*-of-* shards to train '
          'and validation-*-of-* shards to evaluate. Add the data, or use '
          '--mode=train or --mode=eval as the data allows.')
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
        f'{source.name!r} decodes, e.g. {shortlist(bad, SHOWN)}. Check that '
        f'these are JPEG, PNG, GIF or BMP files '
        f'({", ".join(IMAGE_EXTENSIONS)}).')
  if bad:
    logging.warning('%d of the first %d images of the %s split do not decode '
                    'and will be skipped: %s', len(bad), count, name,
                    shortlist(bad, SHOWN))


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
