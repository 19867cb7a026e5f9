"""SavedModel export: signatures for float pixels and for encoded images.

The SavedModel has two signatures, both returning `probabilities`
[batch, num_classes] and, for the `top_k` classes, their `scores`, their
`class_ids` (int32), their `classes` (string labels, as TF Serving's Classify
API expects: ImageNet synset ids, folder names, ...) and `class_names`
(human-readable). The labels and names are kept as the assets labels.txt and
label_names.txt:

- `serving_default` (alias `serve_encoded`): `image_bytes`, a [batch] string
  tensor of JPEG or PNG files; decoding, resizing, cropping and scaling are
  done inside, exactly as for evaluation.
- `serve_images`: `images`, float32 [batch, size, size, 3] pixel values in
  [0, 255], already resized and cropped to the model's size. Its input shape
  is static, so this signature converts to TFLite with builtin ops only,
  and to ONNX. (Converters refuse bfloat16 and float16 ops, so a run trained
  in mixed precision is exported in float32 unless --export_precision says
  otherwise: `network.for_export`.)

Bad input fails with a message naming the problem: a wrong shape, an empty
batch, non-finite pixels, or bytes that are not a JPEG or PNG (the last two
with the indices of the bad images).

    model = tf.saved_model.load(path)
    out = model.signatures['serving_default'](image_bytes=tf.constant([jpeg]))
"""

import json
import os
import tempfile
import time

import tensorflow as tf

from experiments.lib import errors
from experiments.lib import files
from experiments.lib import preprocessing
from experiments.lib.errors import ExportError

_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


class Servable(tf.Module):
  """The model with its serving functions, ready for `tf.saved_model.save`."""

  def __init__(self, model, image_size, encoded_preprocess, label_files,
               labels, label_names, top_k=5):
    """Wraps a model.

    Args:
      model: A Keras model from normalized images to logits.
      image_size: The model's input height and width.
      encoded_preprocess: fn(image_bytes) -> float32 [size, size, 3] in
        [-1, 1], the evaluation preprocessing.
      label_files: (labels, names): text files with one line per class, kept
        as assets for tools that read them (TF Serving's convention).
      labels, label_names: The same lines as lists, looked up inside the
        graph as constants (not as tables over the assets, which TFLite
        cannot initialise).
      top_k: How many classes to return per image.
    """
    super().__init__()
    # The model is reached through this closure, not tracked as an
    # attribute: the SavedModel tracks the TensorFlow variables the
    # signatures read (below), which converters can freeze into constants;
    # tracked through Keras's variable wrappers instead, TFLite keeps them as
    # variables it never initialises (NaN outputs).
    self._logits = lambda images: model(images, training=False)
    self.image_size = image_size
    self.top_k = min(top_k, model.output.shape[-1])
    self._encoded_preprocess = encoded_preprocess
    self.label_files = [tf.saved_model.Asset(path) for path in label_files]
    self._labels = tf.constant(labels)
    self._names = tf.constant(label_names)
    # A static shape, so that converters (TFLite) see the model's input.
    self.serve_images = tf.function(
        self._serve_images,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3],
                                       tf.float32, name='images')])
    self.serve_encoded = tf.function(
        self._serve_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
    self.weights = list({id(v): v for fn in (self.serve_images,
                                             self.serve_encoded)
                         for v in fn.get_concrete_function().variables
                         }.values())

  def _outputs(self, images):
    probabilities = tf.nn.softmax(tf.cast(self._logits(images), tf.float32))
    scores, class_ids = tf.math.top_k(probabilities, self.top_k)
    return {'probabilities': probabilities, 'scores': scores,
            'class_ids': class_ids,
            'classes': tf.gather(self._labels, class_ids),
            'class_names': tf.gather(self._names, class_ids)}

  def _serve_images(self, images):
    # A loaded signature does not check shapes against its spec (TF Serving
    # neither), so they are checked here too. As text, because graph
    # optimisations assume the spec's rank and fold rank checks away.
    size = self.image_size
    shape = tf.shape(images)
    right = tf.equal(tf.strings.reduce_join(tf.strings.as_string(shape[1:]),
                                            separator=','), f'{size},{size},3')
    with tf.control_dependencies([tf.debugging.Assert(right, [
        f'serve_images expects float32 pixels [batch, {size}, {size}, 3] in '
        '[0, 255] (resize and crop first, or use serving_default with '
        'encoded images); got shape', shape])]):
      images = tf.identity(images)
    _assert_not_empty(images, 'serve_images')
    finite = tf.reduce_all(tf.math.is_finite(images), axis=[1, 2, 3])
    with tf.control_dependencies([_assert_each(
        finite, 'serve_images got NaN or infinite pixels in these images '
        '(by index):')]):
      images = tf.identity(images)
    return self._outputs(preprocessing.normalize(images))

  def _serve_encoded(self, image_bytes):
    _assert_not_empty(image_bytes, 'serving_default')
    known = tf.logical_or(
        tf.strings.substr(image_bytes, 0, len(_JPEG_MAGIC)) == _JPEG_MAGIC,
        tf.strings.substr(image_bytes, 0, len(_PNG_MAGIC)) == _PNG_MAGIC)
    check = _assert_each(known, 'serving_default expects JPEG or PNG file '
                         'bytes; these inputs (by index) are neither:')
    with tf.control_dependencies([check]):  # Check before decoding.
      image_bytes = tf.identity(image_bytes)
    images = tf.map_fn(
        self._encoded_preprocess, image_bytes,
        fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, 3],
                                          tf.float32))
    return self._outputs(images)


def _assert_each(ok, message):
  """Asserts ok[i] for every image i; the error names the indices that fail."""
  return tf.debugging.Assert(
      tf.reduce_all(ok), [message, tf.where(tf.logical_not(ok))[:, 0]])


def _assert_not_empty(batch, signature):
  tf.debugging.assert_positive(
      tf.shape(batch)[0], message=f'{signature} got an empty batch: send at '
      'least one image.')


# Written into every export: what marks a directory as one this project may
# replace.
MARKER = 'resnet_v2_export.json'


def _resolved(path):
  """A path to compare: its real path if local, itself (normalized) if not."""
  return os.path.realpath(path) if files.is_local(path) else path.rstrip('/')


def check_export_dir(export_dir, model_dir=None):
  """Refuses an --export_dir whose replacement could lose a user's files.

  An export replaces its directory whole, so the directory must be one this
  project wrote (it holds MARKER), an empty one, or none; and never the run
  directory or one that contains it.

  Args:
    export_dir: Where the SavedModel is to go.
    model_dir: The run directory, if any.

  Raises:
    ExportError: Naming the directory and what to do instead.
  """
  target = _resolved(export_dir)
  if model_dir is not None:
    run = _resolved(model_dir)
    if target == run or run.startswith(target.rstrip('/') + '/'):
      raise ExportError(
          f'--export_dir={export_dir!r} is --model_dir or contains it: an '
          'export replaces its directory whole, which would delete the run\'s '
          'checkpoints. Leave --export_dir unset (it defaults to '
          '<model_dir>/export) or name a new directory.')
  if files.is_local(export_dir):
    if not os.path.lexists(export_dir):
      return
    ours = (os.path.isdir(export_dir) and not os.path.islink(export_dir) and (
        not os.listdir(export_dir)
        or os.path.isfile(os.path.join(export_dir, MARKER))))
  else:
    if not files.exists(export_dir):
      return
    ours = files.isdir(export_dir) and (
        not files.listdir(export_dir)
        or files.exists(os.path.join(export_dir, MARKER)))
  if not ours:
    raise ExportError(
        f'--export_dir={export_dir!r} exists and is not a SavedModel exported '
        f'by resnet-v2 (it has no {MARKER}). An export replaces its directory '
        'whole, so it is left alone: move it away or name a new directory.')


def export_saved_model(model, export_dir, image_size, preprocess, top_k=5,
                       model_dir=None, labels=None, label_names=None,
                       description=None, also=None):
  """Writes the SavedModel atomically: a failed export never leaves a half one.

  The SavedModel is written next to `export_dir` and renamed into place;
  an earlier export there is moved aside and only then deleted. Only a
  directory that `check_export_dir` accepts is ever replaced. Everything goes
  through `files`, so a gs:// directory works as a local one.

  Args:
    model: A Keras model from normalized images to logits.
    export_dir: The final directory.
    image_size: The model's input size.
    preprocess: fn(image_bytes) -> float32 [size, size, 3], the evaluation
      preprocessing that the `serving_default` signature applies.
    top_k: Classes returned per image.
    model_dir: The run directory, which is never replaced.
    labels: The string label of each class (default '0', '1', ...), served
      as `classes` and kept as the asset labels.txt.
    label_names: Human-readable class names (default: the labels), served as
      `class_names` and kept as the asset label_names.txt.
    description: Facts about the export for MARKER (e.g. its preprocessing).
    also: fn(SavedModel directory) -> facts for MARKER, writing more files
      into the export before it is put in place (the TFLite models), so that
      they too appear whole or not at all.

  Returns:
    export_dir.

  Raises:
    ExportError: If `export_dir` is not an export of ours (see
      `check_export_dir`).
    errors.WriteError: If it cannot be written.
  """
  check_export_dir(export_dir, model_dir)
  num_classes = model.output.shape[-1]
  labels = list(labels or [str(i) for i in range(num_classes)])
  label_names = list(label_names or labels)
  if not len(labels) == len(label_names) == num_classes:
    raise ValueError(f'{len(labels)} labels and {len(label_names)} names for '
                     f'a model of {num_classes} classes.')
  staging = files.sibling(export_dir, 'tmp')
  try:
    with tempfile.TemporaryDirectory(prefix='resnet_v2-labels-') as label_dir:
      label_files = [os.path.join(label_dir, 'labels.txt'),
                     os.path.join(label_dir, 'label_names.txt')]
      lines = [[line.replace('\n', ' ') for line in lines]
               for lines in (labels, label_names)]
      for path, file_lines in zip(label_files, lines):
        with open(path, 'w', encoding='utf-8') as f:
          f.write(''.join(line + '\n' for line in file_lines))
      servable = Servable(model, image_size, preprocess, label_files, *lines,
                          top_k=top_k)
      try:
        tf.saved_model.save(
            servable, staging,
            signatures={'serving_default': servable.serve_encoded,
                        'serve_encoded': servable.serve_encoded,
                        'serve_images': servable.serve_images})
      except (tf.errors.OpError, OSError) as e:
        raise errors.WriteError(f'Could not write the SavedModel in {staging} '
                                f'({files.reason(e)}).') from None
    facts = dict(description or {}, **(also(staging) if also else {}))
    files.write_atomically(os.path.join(staging, MARKER), json.dumps({
        'exported_by': 'resnet-v2', 'model': model.name,
        'image_size': image_size, 'num_classes': num_classes,
        **facts, 'time': time.strftime('%Y-%m-%dT%H:%M:%S')}))
  except BaseException:
    files.remove_tree(staging)
    raise
  old = None
  if files.exists(export_dir):
    old = files.sibling(export_dir, 'old')
    files.move_tree(export_dir, old)
  files.move_tree(staging, export_dir)
  if old:
    files.remove_tree(old)
  return export_dir
