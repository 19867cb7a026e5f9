"""Image preprocessing for training, evaluation and serving.

All functions work on one image. Randomness is stateless, driven by a `seed`
tensor of shape [2] that the input pipeline derives from the run's seed and
the example's position in the stream, so that a resumed or repeated run sees
exactly the same crops and flips.

Pixels are scaled to [-1, 1] (Inception-style), the convention of the
published tf-slim ResNet v2 checkpoints.
"""

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


def _random_crop_window(shape, seed):
  """Inception's crop: 8%-100% of the area, aspect ratio 3/4 to 4/3."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
      seed=seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
      area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return begin, size


def imagenet_train(image_bytes, image_size, seed):
  """Random-resized crop (decoding only the crop of a JPEG) and a flip.

  Args:
    image_bytes: Encoded image, a scalar tf.string.
    image_size: Output height and width.
    seed: A [2] int tensor for the stateless random ops.

  Returns:
    A float32 [image_size, image_size, 3] image in [-1, 1].
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))

  def jpeg():
    begin, size = _random_crop_window(tf.io.extract_jpeg_shape(image_bytes),
                                      crop_seed)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

  def other():
    image = decode(image_bytes)
    begin, size = _random_crop_window(tf.shape(image), crop_seed)
    return tf.slice(image, begin, size)

  image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
  image = tf.image.resize(image, [image_size, image_size])
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalize(image)


def central_crop(image, image_size):
  """Resize + central crop: the `image_size` centre of the 256-equivalent.

  Crops the central EVAL_CROP_FRACTION of the shorter side (a square), then
  resizes it to image_size; the same as resizing the shorter side to
  image_size / EVAL_CROP_FRACTION and cropping image_size, with one resize.

  Args:
    image: A uint8 or float [height, width, 3] image.
    image_size: Output height and width.

  Returns:
    A float32 [image_size, image_size, 3] image, pixel range unchanged.
  """
  shape = tf.shape(image)
  side = tf.cast(
      EVAL_CROP_FRACTION * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32),
      tf.int32)
  side = tf.maximum(side, 1)
  top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
  image = tf.slice(image, [top, left, 0], [side, side, -1])
  return tf.image.resize(image, [image_size, image_size])


def imagenet_eval(image_bytes, image_size):
  """Decodes, resizes and centrally crops an image for evaluation/serving."""
  return normalize(central_crop(decode(image_bytes), image_size))


def small_train(image, image_size, seed, pad, flip):
  """CIFAR-style augmentation: zero-pad, random crop back, optional flip.

  Args:
    image: A uint8 [image_size, image_size, 3] image.
    image_size: Its height and width.
    seed: A [2] int tensor for the stateless random ops.
    pad: Pixels of zero padding on each side (4 for CIFAR).
    flip: Whether to flip left-right at random (not for digits).

  Returns:
    A float32 [image_size, image_size, 3] image in [-1, 1].
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  image = normalize(image)
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(image, [image_size, image_size, 3],
                                         crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return image


def small_eval(image, image_size):
  """Resizes (if needed) and scales a small image for evaluation/serving."""
  return normalize(tf.image.resize(image, [image_size, image_size]))


def train_fn(augment, image_size, encoded, pad=4, flip=True):
  """The training preprocessing of a data source's style.

  Args:
    augment: 'inception' (random-resized crop + flip of encoded images) or
      'pad_crop' (CIFAR-style).
    image_size: Output height and width.
    encoded: True if images arrive as encoded bytes, False for uint8 arrays.
    pad: Padding of 'pad_crop'.
    flip: Random left-right flips of 'pad_crop'.

  Returns:
    fn(image, seed) -> float32 [image_size, image_size, 3] in [-1, 1].
  """
  if augment == 'inception':
    return lambda image, seed: imagenet_train(image, image_size, seed)

  def fn(image, seed):
    image = decode(image) if encoded else image
    return small_train(image, image_size, seed, pad, flip)

  return fn


def eval_fn(augment, image_size, encoded=True, style='default'):
  """The evaluation (and serving) preprocessing.

  Args:
    augment: The source's style, as for `train_fn`.
    image_size: Output height and width.
    encoded: True if images arrive as encoded bytes, False for uint8 arrays.
    style: --eval_preprocessing: 'default' (the source's own) or
      'slim_inception' (`slim_inception_eval`, for any source).

  Returns:
    fn(image) -> float32 [image_size, image_size, 3] in [-1, 1].
  """
  if style == 'slim_inception':
    return lambda image: slim_inception_eval(
        decode(image) if encoded else image, image_size)
  if augment == 'inception':
    return lambda image: imagenet_eval(image, image_size)

  def fn(image):
    image = decode(image) if encoded else image
    return small_eval(image, image_size)

  return fn


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
