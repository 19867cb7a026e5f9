"""Grad-CAM (Selvaraju et al. 2017): where in an image a class's evidence is.

For a class c and a feature map A (an end point of the network), each
channel k is weighted by the spatial mean of d logit_c / d A_k; the map is
ReLU(sum_k weight_k * A_k), upsampled to the input and scaled by its
maximum. Our networks expose every unit's and block's output as a named end
point (`model.end_points`), so any of them can be explained, in every
family's layout and with BatchNorm or GroupNorm + Weight Standardization
alike; the default is the last block's output, before the final
normalization, as the paper takes the last convolutional layer.
"""

import os
import re

import keras
import numpy as np
import tensorflow as tf

# Blue, cyan, green, yellow, red: the colours of the heat map, low to high.
_COLOURS = np.array([[0, 0, 128], [0, 160, 255], [40, 200, 80],
                     [255, 220, 0], [220, 20, 20]], np.float32)


def block_end_points(model):
  """The end points that are a block's output ('<scope>/block4'), in order."""
  return [name for name in model.end_points
          if re.fullmatch(r'.+/block\d+', name)]


def end_point(model, layer=None):
  """The end point to explain: `layer`, or the last block's output.

  Raises:
    ValueError: If `layer` is not an end point of the model, listing the
      blocks' and naming how to list every one.
  """
  blocks = block_end_points(model)
  if layer is None:
    if not blocks:
      raise ValueError(f'{model.name} has no block end points to explain; '
                       'give --gradcam_layer (one of model.end_points).')
    return blocks[-1]
  if layer not in model.end_points:
    raise ValueError(
        f'--gradcam_layer={layer!r} is not an end point of {model.name}. Its '
        f'blocks are {", ".join(blocks)}; every unit is one too (e.g. '
        f'{blocks[-1] + "/unit_1/bottleneck_v2" if blocks else "..."}); '
        '`python -m experiments.describe` lists them all.')
  return layer


def maps(model, images, layer=None, class_ids=None):
  """Grad-CAM maps of a batch, for the top class or the classes given.

  Args:
    model: A Keras model of this project from images to logits, with
      `end_points`.
    images: float32 [N, S, S, 3], preprocessed as the model expects.
    layer: The end point to explain (see `end_point`).
    class_ids: The class of each image, or None for its top class.

  Returns:
    (maps, class_ids): float32 [N, S, S] in [0, 1] (a map with no positive
    evidence is all zero), and the int32 [N] classes explained.

  Raises:
    ValueError: For an unknown layer.
  """
  name = end_point(model, layer)
  explained = keras.Model(model.inputs, [model.end_points[name], model.output])
  images = tf.convert_to_tensor(images, tf.float32)
  with tf.GradientTape() as tape:
    features, logits = explained(images, training=False)
    logits = tf.cast(logits, tf.float32)
    if class_ids is None:
      class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
    class_ids = tf.cast(tf.reshape(class_ids, [-1]), tf.int32)
    score = tf.reduce_sum(tf.gather(logits, class_ids, batch_dims=1))
  gradients = tf.cast(tape.gradient(score, features), tf.float32)
  features = tf.cast(features, tf.float32)
  weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
  cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
  cams = tf.image.resize(cams[..., tf.newaxis], tf.shape(images)[1:3])[..., 0]
  peak = tf.reduce_max(cams, axis=[1, 2], keepdims=True)
  cams = tf.math.divide_no_nan(cams, peak)
  return cams.numpy().astype(np.float32), class_ids.numpy()


def on_image(cam, height, width, window):
  """The map at the image's own resolution: resized into `window`, the part
  of the image the network saw (`preprocessing.eval_window`), zero outside."""
  top, left, window_height, window_width = window
  placed = np.zeros((height, width), np.float32)
  resized = tf.image.resize(cam[..., np.newaxis],
                            [window_height, window_width])[..., 0].numpy()
  placed[top:top + window_height, left:left + window_width] = np.clip(
      resized, 0.0, 1.0)
  return placed


def heat_map(image, cam, alpha=0.5):
  """The map, coloured low blue to high red, blended over the uint8 image."""
  position = cam * (len(_COLOURS) - 1)
  low = np.floor(position).astype(int).clip(0, len(_COLOURS) - 2)
  fraction = (position - low)[..., np.newaxis]
  colour = _COLOURS[low] * (1 - fraction) + _COLOURS[low + 1] * fraction
  blended = (1 - alpha) * image.astype(np.float32) + alpha * colour
  return blended.round().clip(0, 255).astype(np.uint8)


def write(stem, image, cam, window):
  """Writes `<stem>.npy` (the map on the image, float32 [H, W] in [0, 1]) and
  `<stem>.png` (the heat map over the image).

  Args:
    stem: The path without its suffix.
    image: The decoded uint8 [H, W, 3] image.
    cam: A map over the network's input, [S, S], from `maps`.
    window: The part of the image that the input shows (top, left, height,
      width), from `preprocessing.eval_window`.

  Returns:
    The map on the image.
  """
  placed = on_image(cam, image.shape[0], image.shape[1], window)
  os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
  np.save(stem + '.npy', placed)
  tf.io.write_file(stem + '.png', tf.io.encode_png(heat_map(image, placed)))
  return placed
