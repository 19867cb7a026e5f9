"""Grad-CAM: maps that find what decides the class, in every layout."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import resnet_v2
from experiments.lib import gradcam
from experiments.lib import preprocessing

SIZE, PATCH = 32, 6
# The patch's colour is the class.
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)


def _patches(count, seed):
  """Noise images with one solid PATCHxPATCH square at a random place; its
  colour is the label. Returns (images in [-1, 1], labels, top-left corners)."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)
  labels = rng.integers(0, len(COLOURS), count)
  corners = rng.integers(0, SIZE - PATCH + 1, (count, 2))
  for image, label, (top, left) in zip(images, labels, corners):
    image[top:top + PATCH, left:left + PATCH] = COLOURS[label]
  return images / 127.5 - 1.0, labels, corners


def _trained(arg_sc):
  keras.utils.set_random_seed(0)
  model = resnet_v2.build_model(
      resnet_v2.parse_blocks('32x1/2, 64x1'), len(COLOURS), stem='cifar',
      input_shape=(SIZE, SIZE, 3), arg_sc=arg_sc)
  model.compile(keras.optimizers.Adam(3e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  images, labels, _ = _patches(2000, 0)
  model.fit(images, labels, batch_size=64, epochs=4, verbose=0)
  return model


@pytest.mark.parametrize('normalization', ['batch_norm', 'group_norm'])
def test_the_map_peaks_on_the_patch_that_decides_the_class(normalization):
  # BatchNorm's moving averages settle within a short training at decay 0.9.
  arg_sc = (resnet_v2.bit_arg_scope(groups=8) if normalization == 'group_norm'
            else resnet_v2.resnet_arg_scope(batch_norm_decay=0.9))
  model = _trained(arg_sc)
  images, labels, corners = _patches(200, 1)
  accuracy = np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels)
  assert accuracy > 0.9, accuracy
  cams, explained = gradcam.maps(model, images)
  assert cams.shape == (200, SIZE, SIZE) and cams.min() >= 0 and cams.max() <= 1
  np.testing.assert_array_equal(explained, np.argmax(model.predict(images, verbose=0), -1))
  peaks = np.array([np.unravel_index(np.argmax(cam), cam.shape) for cam in cams])
  # On the patch, or within 2 pixels of it (the block's cells are 2x2 pixels).
  near = np.all((peaks >= corners - 2) & (peaks < corners + PATCH + 2), axis=1)
  assert np.mean(near) > 0.8, np.mean(near)
  # The map of another class does not find the patch.
  other = (explained + 1) % len(COLOURS)
  wrong, _ = gradcam.maps(model, images, class_ids=other)
  wrong_peaks = np.array([np.unravel_index(np.argmax(cam), cam.shape) for cam in wrong])
  wrong_near = np.all((wrong_peaks >= corners - 2) & (wrong_peaks < corners + PATCH + 2), axis=1)
  assert np.mean(wrong_near) < np.mean(near) - 0.3


@pytest.mark.parametrize('name', ['resnet_v2_50', 'keras_resnet50v2', 'bit_r50x1',
                                  'timm_resnetv2_50'])
def test_every_familys_layout_is_explained_at_its_last_block(name):
  model = resnet_v2.create_model(name, input_shape=(64, 64, 3), num_classes=5)
  assert gradcam.end_point(model) == f'{model.name}/block4'
  images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  cams, classes = gradcam.maps(model, images, class_ids=[1, 3])
  assert cams.shape == (2, 64, 64) and list(classes) == [1, 3]
  assert np.all((cams >= 0) & (cams <= 1)) and np.isfinite(cams).all()
  with pytest.raises(ValueError, match=f'Its blocks are {model.name}/block1'):
    gradcam.maps(model, images, layer='block9')


@pytest.mark.parametrize('style', ['default', 'central_crop', 'slim_inception', 'resize'])
def test_the_window_is_what_each_evaluation_style_crops(style):
  height, width = 53, 80
  image = np.random.default_rng(0).uniform(0, 255, (height, width, 3)).astype(np.float32)
  fraction = 0.8 if style == 'central_crop' else None
  top, left, window_height, window_width = preprocessing.eval_window(
      height, width, style, fraction)
  window = image[top:top + window_height, left:left + window_width]
  if style == 'slim_inception':
    cropped = tf.image.central_crop(image, preprocessing.SLIM_CENTRAL_FRACTION)
  elif style == 'resize':
    cropped = image
  else:  # Cropped to its own size, so that the resize changes nothing.
    cropped = preprocessing.central_crop(
        image, window_height, fraction or preprocessing.EVAL_CROP_FRACTION)
  np.testing.assert_allclose(np.asarray(cropped), window, atol=1e-3)


def test_write_puts_the_map_in_the_window_and_draws_it(tmp_path):
  image = np.full((40, 60, 3), 100, np.uint8)
  cam = np.zeros((8, 8), np.float32)
  cam[2:4, 5:7] = 1.0
  placed = gradcam.write(str(tmp_path / 'out' / 'cat'), image, cam, (5, 10, 30, 30))
  saved = np.load(tmp_path / 'out' / 'cat.npy')
  np.testing.assert_array_equal(saved, placed)
  assert saved.shape == (40, 60) and saved.dtype == np.float32
  assert saved[:5].max() == 0 and saved[:, :10].max() == 0 and saved[35:].max() == 0
  peak = np.unravel_index(np.argmax(saved), saved.shape)
  assert 5 + 7 <= peak[0] <= 5 + 15 and 10 + 18 <= peak[1] <= 10 + 27
  drawn = tf.io.decode_png(tf.io.read_file(str(tmp_path / 'out' / 'cat.png'))).numpy()
  assert drawn.shape == (40, 60, 3)
  assert drawn[peak][0] > drawn[peak][2]  # Red where the map is high,
  assert drawn[0, 0][2] > drawn[0, 0][0]  # blue where it is zero.
