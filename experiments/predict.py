"""Classifies images with a run, an export or a pretrained network.

    python -m experiments.predict --model=/tmp/flowers my_rose.jpg
    python -m experiments.predict --model=resnet_v2_50 --pretrained photos/ \\
        --top_k=3 --output=answers.jsonl --gradcam=/tmp/maps

--model is a run directory (its export, or its newest checkpoint when it has
none), an export directory, or a pretrained name with --pretrained or
--init_checkpoint=FILE. Each image is preprocessed and named as the model's
own evaluation does it: the answers of a run or an export are those of its
SavedModel's `serving_default` signature on the same bytes; ImageNet's
names for ImageNet networks, folder names for runs trained on folders.

Folders are walked recursively for image files (.jpg, .jpeg, .png, .gif,
.bmp). A compact table goes to the standard output; --output writes one
JSON object per image (.jsonl: image, classes, labels, class_ids, scores) or
a row per image (.csv). Files that do not decode are named and skipped; the
exit status is 0 when at least one image was classified.

--gradcam=DIR writes, for each image, DIR/<stem>.png (a Grad-CAM heat map
over the image) and DIR/<stem>.npy (the map at the image's resolution,
float32 in [0, 1]), for the top class or --gradcam_class, at the end point
--gradcam_layer (default: the last block's output).
"""

import os
import sys

from absl import app
from absl import flags

from experiments.lib import cli
from experiments.lib import errors

_MODEL = flags.DEFINE_string(
    'model', None, 'A run directory, an export directory, or a pretrained '
    'name (with --pretrained or --init_checkpoint).', required=True)
_INIT_CHECKPOINT = flags.DEFINE_string(
    'init_checkpoint', None, "For a pretrained name: its family's weight file.")
_PRETRAINED = flags.DEFINE_bool(
    'pretrained', False, 'For a pretrained name: its published weights, '
    'fetched once into the cache.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Classes shown per image.',
                              lower_bound=1)
_OUTPUT = flags.DEFINE_string(
    'output', None, 'A new .jsonl or .csv file for the answers.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Images per call.',
                                   lower_bound=1)
_GRADCAM = flags.DEFINE_string(
    'gradcam', None, 'A directory for Grad-CAM maps (<stem>.png, <stem>.npy).')
_GRADCAM_CLASS = flags.DEFINE_string(
    'gradcam_class', None, 'The class the maps explain, by label, name or '
    'index (default: each image\'s top class).')
_GRADCAM_LAYER = flags.DEFINE_string(
    'gradcam_layer', None, "The end point the maps explain (default: the "
    "last block's output, e.g. resnet_v2_50/block4).")


def _check_flags():
  """Refuses, before any work, flags that would fail or overwrite a file."""
  if _GRADCAM.value is None:
    given = [f'--{flag.name}' for flag in (_GRADCAM_CLASS, _GRADCAM_LAYER)
             if flag.value is not None]
    if given:
      raise errors.FlagError(f'{" and ".join(given)} choose what --gradcam=DIR '
                             'draws; give --gradcam too.')
  elif os.path.isdir(_GRADCAM.value) and os.listdir(_GRADCAM.value):
    raise errors.FlagError(
        f'--gradcam={_GRADCAM.value} holds files, which maps could write over: '
        'give a new or empty directory.')
  path = _OUTPUT.value
  if path is None:
    return
  if not path.endswith(('.jsonl', '.csv')):
    raise errors.FlagError(f'--output={path}: give a .jsonl file (a JSON '
                           'object per image) or a .csv file.')
  if os.path.exists(path):
    raise errors.FlagError(f'--output={path} exists; predict does not write '
                           'over a file: remove it or name another.')


def predict(paths):
  """Classifies the images at `paths` as the flags say; returns how many."""
  # Imported here, so that a bad flag is reported before TensorFlow loads.
  from experiments.lib import predictions  # pylint: disable=g-import-not-at-top
  from experiments.lib import predictor  # pylint: disable=g-import-not-at-top
  _check_flags()
  images = predictions.find_images(paths)
  classifier = predictor.open_classifier(
      _MODEL.value, _INIT_CHECKPOINT.value, _PRETRAINED.value,
      need_network=_GRADCAM.value is not None)
  if _GRADCAM.value:
    predictions.check_layer(classifier, _GRADCAM_LAYER.value)
  gradcam_class = (None if _GRADCAM_CLASS.value is None else
                   predictions.class_index(classifier, _GRADCAM_CLASS.value))
  answers = predictions.classify(classifier, images, _TOP_K.value,
                                 _BATCH_SIZE.value)
  predictions.show(answers, sys.stdout)
  if _OUTPUT.value:
    predictions.write(answers, _OUTPUT.value)
  if _GRADCAM.value:
    predictions.explain(classifier, answers, _GRADCAM.value, gradcam_class,
                        _GRADCAM_LAYER.value)
  return len(answers)


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('Give the images or folders to classify.')
  cli.user_errors(predict, argv[1:])


def run_main():
  """The console script resnet-v2-predict."""
  cli.run_tool(sys.modules[__name__], main)


if __name__ == '__main__':
  run_main()
