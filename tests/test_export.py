"""The SavedModel serves float pixels and encoded images, like the model."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import resnet_v2
from experiments.lib import export
from experiments.lib import preprocessing

SIZE = 16


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  model = resnet_v2.build_model(resnet_v2.parse_blocks('4x1/2, 8x1'), 5,
                                input_shape=(SIZE, SIZE, 3), stem='cifar')
  # Non-trivial BatchNorm statistics, so inference mode matters.
  for weight in model.weights:
    if 'moving' in weight.path:
      weight.assign(np.random.default_rng(0).uniform(0.5, 1.5, weight.shape))
  path = str(tmp_path_factory.mktemp('export') / 'model')
  export.export_saved_model(model, path, SIZE, 'pad_crop', top_k=3)
  return model, tf.saved_model.load(path), path


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def test_float_signature_matches_in_memory_model(exported):
  model, loaded, _ = exported
  pixels = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
  out = loaded.signatures['serve_images'](images=tf.constant(pixels))
  expected = tf.nn.softmax(model(preprocessing.normalize(pixels), training=False))
  np.testing.assert_allclose(out['probabilities'], expected, atol=1e-6)
  assert out['class_ids'].shape == (3, 3) and out['class_ids'].dtype == tf.int32
  np.testing.assert_array_equal(out['class_ids'][:, 0], np.argmax(expected, -1))
  assert out['classes'].dtype == tf.string  # labels: '0'..'4' by default
  np.testing.assert_array_equal(out['classes'].numpy().astype(str),
                                out['class_ids'].numpy().astype(str))
  np.testing.assert_allclose(out['scores'][:, 0], np.max(expected, -1), atol=1e-6)


def test_encoded_signature_decodes_like_evaluation(exported):
  model, loaded, _ = exported
  images = np.random.default_rng(2).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
  out = loaded.signatures['serving_default'](
      image_bytes=tf.constant([_png(image) for image in images]))
  expected = tf.nn.softmax(model(preprocessing.normalize(images.astype(np.float32)),
                                 training=False))
  np.testing.assert_allclose(out['probabilities'], expected, atol=1e-5)


def test_wrong_shape_is_a_clear_error(exported):
  _, loaded, _ = exported
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf'serve_images expects float32 pixels \[batch, {SIZE}, {SIZE}, 3\]'):
    loaded.signatures['serve_images'](images=tf.zeros([1, SIZE + 1, SIZE, 3]))


def test_undecodable_bytes_are_a_clear_error(exported):
  _, loaded, _ = exported
  good = _png(np.zeros((SIZE, SIZE, 3), np.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'expects JPEG or PNG file bytes(.|\n)*\[1 2\]'):
    loaded.signatures['serving_default'](
        image_bytes=tf.constant([good, b'not an image', b'GIF89a...']))


def test_export_replaces_atomically(exported, tmp_path):
  model, _, _ = exported
  path = str(tmp_path / 'model')
  export.export_saved_model(model, path, SIZE, 'pad_crop')
  export.export_saved_model(model, path, SIZE, 'pad_crop')  # over an old one
  assert sorted(p.name for p in tmp_path.iterdir()) == ['model']
  assert tf.saved_model.load(path).signatures['serving_default'] is not None


@pytest.mark.parametrize('images, message', [
    (np.zeros([SIZE, SIZE, 3], np.float32), r'expects float32 pixels \[batch, 16, 16, 3\]'),
    (np.zeros([0, SIZE, SIZE, 3], np.float32), 'serve_images got an empty batch'),
    (np.stack([np.zeros([SIZE, SIZE, 3]), np.full([SIZE, SIZE, 3], np.nan),
               np.zeros([SIZE, SIZE, 3]), np.full([SIZE, SIZE, 3], np.inf)]).astype(np.float32),
     r'NaN or infinite pixels in these images \(by index\):(.|\n)*\[1 3\]'),
])
def test_bad_pixels_are_clear_errors(exported, images, message):
  _, loaded, _ = exported
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    loaded.signatures['serve_images'](images=tf.constant(images))


def test_empty_batch_of_encoded_images_is_a_clear_error(exported):
  _, loaded, _ = exported
  with pytest.raises(tf.errors.InvalidArgumentError, match='serving_default got an empty batch'):
    loaded.signatures['serving_default'](image_bytes=tf.constant([], tf.string))
