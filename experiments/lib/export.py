"""SavedModel export: signatures for float pixels and for encoded images.

The SavedModel has two signatures, both returning `probabilities`
[batch, num_classes], and the `top_k` `classes` (int32) and their `scores`:

- `serving_default` (alias `serve_encoded`): `image_bytes`, a [batch] string
  tensor of JPEG or PNG files; decoding, resizing, cropping and scaling are
  done inside, exactly as for evaluation.
- `serve_images`: `images`, float32 [batch, size, size, 3] pixel values in
  [0, 255], already resized and cropped to the model's size.

Bad input fails with a message naming the problem: wrong shapes, or bytes
that are not a JPEG or PNG (with their indices).

    model = tf.saved_model.load(path)
    out = model.signatures['serving_default'](image_bytes=tf.constant([jpeg]))
"""

import os
import shutil

import tensorflow as tf

from experiments.lib import preprocessing

_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


class Servable(tf.Module):
  """The model with its serving functions, ready for `tf.saved_model.save`."""

  def __init__(self, model, image_size, encoded_preprocess, top_k=5):
    """Wraps a model.

    Args:
      model: A Keras model from normalized images to logits.
      image_size: The model's input height and width.
      encoded_preprocess: fn(image_bytes) -> float32 [size, size, 3] in
        [-1, 1], the evaluation preprocessing.
      top_k: How many classes to return per image.
    """
    super().__init__()
    self.model = model
    self.image_size = image_size
    self.top_k = min(top_k, model.output.shape[-1])
    self._encoded_preprocess = encoded_preprocess
    self.serve_images = tf.function(
        self._serve_images,
        input_signature=[tf.TensorSpec([None, None, None, None], tf.float32,
                                       name='images')])
    self.serve_encoded = tf.function(
        self._serve_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])

  def _outputs(self, images):
    probabilities = tf.nn.softmax(
        tf.cast(self.model(images, training=False), tf.float32))
    scores, classes = tf.math.top_k(probabilities, self.top_k)
    return {'probabilities': probabilities, 'classes': classes, 'scores': scores}

  def _serve_images(self, images):
    size = self.image_size
    tf.debugging.assert_equal(
        tf.shape(images)[1:], tf.constant([size, size, 3]),
        message=(f'serve_images expects float32 pixels [batch, {size}, {size}, '
                 '3] in [0, 255] (resize and crop first, or use '
                 'serving_default with encoded images); got shape'))
    return self._outputs(preprocessing.normalize(images))

  def _serve_encoded(self, image_bytes):
    known = tf.logical_or(
        tf.strings.substr(image_bytes, 0, len(_JPEG_MAGIC)) == _JPEG_MAGIC,
        tf.strings.substr(image_bytes, 0, len(_PNG_MAGIC)) == _PNG_MAGIC)
    check = tf.debugging.Assert(
        tf.reduce_all(known),
        ['serving_default expects JPEG or PNG file bytes; these inputs '
         '(by index) are neither:', tf.where(tf.logical_not(known))[:, 0]])
    with tf.control_dependencies([check]):  # Check before decoding.
      image_bytes = tf.identity(image_bytes)
    images = tf.map_fn(
        self._encoded_preprocess, image_bytes,
        fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, 3],
                                          tf.float32))
    return self._outputs(images)


def export_saved_model(model, export_dir, image_size, augment, top_k=5):
  """Writes the SavedModel atomically: a failed export never leaves a half one.

  Args:
    model: A Keras model from normalized images to logits.
    export_dir: The final directory; an existing export there is replaced.
    image_size: The model's input size.
    augment: The data source's augmentation style ('inception' or
      'pad_crop'), which fixes the serving preprocessing.
    top_k: Classes returned per image.

  Returns:
    export_dir.
  """
  servable = Servable(model, image_size,
                      preprocessing.eval_fn(augment, image_size), top_k)
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  staging = f'{export_dir}.tmp-{os.getpid()}'
  shutil.rmtree(staging, ignore_errors=True)
  tf.saved_model.save(
      servable, staging,
      signatures={'serving_default': servable.serve_encoded,
                  'serve_encoded': servable.serve_encoded,
                  'serve_images': servable.serve_images})
  old = f'{export_dir}.old-{os.getpid()}'
  if os.path.exists(export_dir):
    os.rename(export_dir, old)
  os.rename(staging, export_dir)
  shutil.rmtree(old, ignore_errors=True)
  return export_dir
