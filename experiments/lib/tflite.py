"""TFLite models of an export: float32, and full-integer (int8) for CPU serving.

Both convert the SavedModel's `serve_images` signature (float32 pixels in
[0, 255], already resized and cropped; probabilities, scores and class names
out) with TFLite's builtin ops only. The int8 model quantizes weights and
activations: every convolution and the logits compute in int8, with the
input quantized and the outputs dequantized inside, so it is called as the
float one is. Its activation ranges are calibrated on a few hundred of the
run's own training images, passed through the evaluation preprocessing (a
representative dataset, as TFLite asks), so that the ranges are those the
model meets when it serves.
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

# Training images the int8 model is calibrated on.
CALIBRATION_IMAGES = 256
# The file each --export_tflite writes into the export.
FILES = {'float32': 'model.tflite', 'int8': 'model_int8.tflite'}


def calibration_images(source, preprocess, count=CALIBRATION_IMAGES, seed=0):
  """`count` training images as `serve_images` takes them, for calibration.

  Drawn at random (a fixed seed) from the first 10,000 of the split, since
  a split in class order would give the first classes only; images that do
  not decode are left out.

  Args:
    source: The run's `data.Source`.
    preprocess: The run's evaluation preprocessing, fn(image) -> float32
      [S, S, 3] in [-1, 1].
    count: How many.
    seed: The draw's seed.

  Returns:
    A float32 array [count, S, S, 3] of pixels in [0, 255].
  """
  images = source.read('train', 1, 0).shuffle(
      min(source.num_train, 10_000), seed=seed).map(
          lambda image, label: preprocess(image)).ignore_errors().take(count)
  return (np.stack(list(images.as_numpy_iterator())) + 1.0) * 127.5


def convert(saved_model_dir, kind, calibration=None):
  """The TFLite model (bytes) of an export's `serve_images`.

  Args:
    saved_model_dir: The SavedModel.
    kind: 'float32' or 'int8'.
    calibration: For 'int8': images from `calibration_images`.

  Returns:
    The serialized TFLite model.
  """
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_dir, signature_keys=['serve_images'])
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if kind == 'int8':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: (
        {'images': image[np.newaxis]} for image in calibration)
  return converter.convert()


def write(export_dir, kind, calibration=None):
  """Writes the TFLite model of the export in `export_dir` beside it.

  Returns:
    {'tflite': its file name}, for the export's marker.
  """
  model = convert(export_dir, kind, calibration)
  with tf.io.gfile.GFile(os.path.join(export_dir, FILES[kind]), 'wb') as f:
    f.write(model)
  logging.info('Wrote the %s TFLite model (%.1f MB)%s.', kind,
               len(model) / 2**20, '' if calibration is None else
               f', calibrated on {len(calibration)} training images')
  return {'tflite': FILES[kind]}
