"""Image preprocessing for training, evaluation and serving.

All functions work on one image. Randomness is stateless, driven by a `seed`
tensor of shape [2] that the input pipeline derives from the run's seed and
the example's position in the stream, so that a resumed or repeated run sees
exactly the same crops and flips.

Pixels are scaled to [-1, 1] (Inception-style): the input of the published
tf-slim checkpoints and of every family `resnet_v2.create_model` loads
(Keras applications' 'tf' mode, BiT's (x - 127.5) / 127.5, timm's mean and
std of 0.5).
"""

import numpy as np
import tensorflow as tf

# Eval crops `image_size` out of the centre of an image resized to
# image_size / EVAL_CROP_FRACTION (224 out of 256).
EVAL_CROP_FRACTION = 224 / 256


def normalize(image):
  """Scales uint8-range pixels to [-1, 1] float32."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def decode(image_bytes):
  """Decodes JPEG, PNG, GIF or BMP bytes to a uint8 [height, width, 3] image."""
  return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def _random_crop_window(shape, seed, boxes=None):
  """Inception's crop: 8%-100% of the area, aspect ratio 3/4 to 4/3.

  With object boxes, the crop covers at least a tenth of one of them, as
  tf-slim's `preprocess_for_train` samples it; without (None, or none in the
  record), the box is the whole image. The area range and attempts are the
  TPU ResNet's (slim's are 5%-100% and 100 attempts); either way a crop
  that fits none of 10 attempts is the whole image.
  """
  if boxes is None:
    boxes = tf.constant([[0.0, 0.0, 1.0, 1.0]])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.reshape(boxes, [1, -1, 4]),
      seed=seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
      area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return begin, size


def imagenet_train(image_bytes, image_size, seed, flip=True, boxes=None):
  """Random-resized crop (decoding only the crop of a JPEG) and a flip.

  Args:
    image_bytes: Encoded image, a scalar tf.string.
    image_size: Output height and width.
    seed: A [2] int tensor for the stateless random ops.
    flip: Whether to flip left-right at random (off for images whose mirror
      is another class: text, digits).
    boxes: The image's object boxes, float32 [num_boxes, 4] as (ymin, xmin,
      ymax, xmax) relative to the image, which the crop must overlap (see
      `_random_crop_window`); None or none for the whole image.

  Returns:
    A float32 [image_size, image_size, 3] image in [-1, 1].
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))

  def jpeg():
    begin, size = _random_crop_window(tf.io.extract_jpeg_shape(image_bytes),
                                      crop_seed, boxes)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

  def other():
    image = decode(image_bytes)
    begin, size = _random_crop_window(tf.shape(image), crop_seed, boxes)
    return tf.slice(image, begin, size)

  image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
  image = tf.image.resize(image, [image_size, image_size])
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalize(image)


def resize(image, image_size, method='bilinear'):
  """Resizes to image_size x image_size; bicubic results are clipped to the
  input's range, as image libraries do (bicubic overshoots at edges)."""
  resized = tf.image.resize(image, [image_size, image_size], method=method)
  if method == 'bicubic':
    resized = tf.clip_by_value(resized, 0.0, 255.0)
  return resized


def central_crop(image, image_size, fraction=EVAL_CROP_FRACTION,
                 method='bilinear'):
  """Resize + central crop: the `image_size` centre of the image.

  Crops the central `fraction` of the shorter side (a square), then resizes
  it to image_size; the same as resizing the shorter side to
  image_size / fraction and cropping image_size (224 of 256 for the default
  7/8; timm's `crop_pct`), with one resize.

  Args:
    image: A uint8 or float [height, width, 3] image in [0, 255].
    image_size: Output height and width.
    fraction: The kept fraction of the shorter side.
    method: 'bilinear' or 'bicubic'.

  Returns:
    A float32 [image_size, image_size, 3] image, pixel range unchanged.
  """
  shape = tf.shape(image)
  side = tf.cast(
      fraction * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
  side = tf.maximum(side, 1)
  top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
  image = tf.slice(image, [top, left, 0], [side, side, -1])
  return resize(image, image_size, method)


def eval_window(height, width, style, crop_fraction=None):
  """The part of a height x width image that an evaluation style keeps.

  What the network sees of an image, so that a map over its input (Grad-CAM)
  can be placed back on the image. The rules are those of the styles'
  functions, computed the same way.

  Args:
    height, width: The image's size.
    style: An --eval_preprocessing style ('default' for Inception-style
      data, 'central_crop', 'slim_inception' or 'resize').
    crop_fraction: The fraction of 'central_crop' (default 7/8).

  Returns:
    (top, left, window height, window width) in pixels.
  """
  if style == 'resize':
    return 0, 0, height, width
  if style == 'slim_inception':
    # tf.image.central_crop: the start is truncated, the size what is left.
    top = int((height - height * SLIM_CENTRAL_FRACTION) / 2)
    left = int((width - width * SLIM_CENTRAL_FRACTION) / 2)
    return top, left, height - 2 * top, width - 2 * left
  side = max(int(np.float32(crop_fraction or EVAL_CROP_FRACTION) *
                 np.float32(min(height, width))), 1)
  return (height - side) // 2, (width - side) // 2, side, side


def imagenet_eval(image_bytes, image_size):
  """Decodes, resizes and centrally crops an image for evaluation/serving."""
  return normalize(central_crop(decode(image_bytes), image_size))


def resize_crop_train(image, image_size, train_resize, seed, flip=True):
  """BiT-HyperRule's training preprocessing: the whole image resized to
  train_resize (aspect not kept), a random image_size crop and a flip.

  Args:
    image: A decoded uint8 [height, width, 3] image.
    image_size: The crop's height and width.
    train_resize: The size before cropping (at least image_size).
    seed: A [2] int tensor for the stateless random ops.
    flip: Whether to flip left-right at random (BiT always does).

  Returns:
    A float32 [image_size, image_size, 3] image in [-1, 1].
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  image = resize(image, train_resize)
  image = tf.image.stateless_random_crop(image, [image_size, image_size, 3],
                                         crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalize(image)


def small_train(image, image_size, seed, pad, flip):
  """CIFAR-style augmentation: zero-pad, random crop back, optional flip.

  Args:
    image: A uint8 [height, width, 3] image, resized first if it is not
      image_size x image_size.
    image_size: The output's height and width.
    seed: A [2] int tensor for the stateless random ops.
    pad: Pixels of zero padding on each side (4 for CIFAR).
    flip: Whether to flip left-right at random (not for digits).

  Returns:
    A float32 [image_size, image_size, 3] image in [-1, 1].
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  if image.shape[:2] != (image_size, image_size):  # E.g. 8x8 digits at 32.
    image = resize(image, image_size)
  image = normalize(image)
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(image, [image_size, image_size, 3],
                                         crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return image


def train_fn(augment, image_size, encoded, pad=4, flip=True, style='default',
             train_resize=None):
  """The training preprocessing of a data source's style, or HyperRule's.

  Args:
    augment: 'inception' (random-resized crop + flip of encoded images) or
      'pad_crop' (CIFAR-style).
    image_size: Output height and width.
    encoded: True if images arrive as encoded bytes, False for uint8 arrays.
    pad: Padding of 'pad_crop'.
    flip: Random left-right flips, in every style.
    style: --train_preprocessing: 'default' (the source's `augment`) or
      'resize_crop' (`resize_crop_train`, for any source).
    train_resize: The size of 'resize_crop' before its crop.

  Returns:
    fn(image, seed, boxes=None) -> float32 [image_size, image_size, 3] in
    [-1, 1]. Only the Inception crop reads the boxes.
  """
  if style == 'resize_crop':
    return lambda image, seed, boxes=None: resize_crop_train(
        decode(image) if encoded else image, image_size, train_resize, seed,
        flip)
  if augment == 'inception':
    return lambda image, seed, boxes=None: imagenet_train(
        image, image_size, seed, flip, boxes)

  def fn(image, seed, boxes=None):
    del boxes  # CIFAR-style crops are of the padded image.
    image = decode(image) if encoded else image
    return small_train(image, image_size, seed, pad, flip)

  return fn


def eval_fn(augment, image_size, encoded=True, style='default',
            crop_fraction=None, method=None):
  """The evaluation (and serving) preprocessing.

  Args:
    augment: The source's style, as for `train_fn`.
    image_size: Output height and width.
    encoded: True if images arrive as encoded bytes, False for uint8 arrays.
    style: --eval_preprocessing: 'default' (the source's own),
      'slim_inception' (`slim_inception_eval`), 'central_crop' (the central
      `crop_fraction` of the shorter side) or 'resize' (the whole image).
    crop_fraction: The kept fraction of 'central_crop' (default 7/8).
    method: The resize interpolation, 'bilinear' (default) or 'bicubic'.

  Returns:
    fn(image) -> float32 [image_size, image_size, 3] in [-1, 1].
  """
  method = method or 'bilinear'
  read = lambda image: decode(image) if encoded else image
  if style == 'slim_inception':
    return lambda image: slim_inception_eval(read(image), image_size)
  if style == 'central_crop' or (style == 'default' and augment == 'inception'):
    fraction = crop_fraction or EVAL_CROP_FRACTION
    return lambda image: normalize(central_crop(read(image), image_size,
                                                fraction, method))
  return lambda image: normalize(resize(read(image), image_size, method))


# tf-slim's eval crop: the central 87.5% of height and of width.
SLIM_CENTRAL_FRACTION = 0.875


def slim_inception_eval(image, image_size):
  """tf-slim's `inception_preprocessing.preprocess_for_eval`, exactly.

  The published tf-slim ResNet v2 checkpoints were evaluated with it:
  convert to float in [0, 1]; keep the central 87.5% of the height and of
  the width (`tf.image.central_crop`, so the aspect ratio is not kept);
  resize bilinearly to image_size x image_size with TF1's semantics
  (`align_corners=False` and no half-pixel centres: TF2's `tf.image.resize`
  samples half a pixel elsewhere and differs by up to 0.6 on the [-1, 1]
  scale); then scale to [-1, 1] as (x - 0.5) * 2.

  Args:
    image: A decoded uint8 (or float in [0, 1]) [height, width, 3] image.
    image_size: Output height and width.

  Returns:
    A float32 [image_size, image_size, 3] image in [-1, 1].
  """
  image = tf.image.convert_image_dtype(image, tf.float32)
  image = tf.image.central_crop(image, SLIM_CENTRAL_FRACTION)
  image = tf.raw_ops.ResizeBilinear(
      images=image[tf.newaxis], size=[image_size, image_size],
      align_corners=False, half_pixel_centers=False)[0]
  return (image - 0.5) * 2.0
