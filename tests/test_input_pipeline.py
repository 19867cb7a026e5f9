"""The input stream is reproducible from any position, survives bad files, and
flips only where the data and --random_flip allow."""

import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf

from experiments.lib import data
from experiments.lib import input_pipeline
from experiments.lib import network
from experiments.lib import preprocessing
from experiments.lib import train
from experiments.lib.config import Config


def _context(pipelines=1, index=0):
  return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                    input_pipeline_id=index,
                                    num_replicas_in_sync=pipelines)


def _batches(dataset_fn, count, context=None):
  batches = list(dataset_fn(context or _context()).take(count).as_numpy_iterator())
  assert len(batches) == count
  return batches


def test_resuming_replays_the_same_stream():
  source = data.load_source('digits')  # 1437 training images
  batch, steps = 100, 40  # a little less than 3 epochs
  full = _batches(input_pipeline.train_dataset_fn(source, 8, batch, 7, 0, steps), steps)
  for start in (1, 14, 15, 29):  # 14 * 100 < 1437 < 15 * 100: an epoch boundary
    resumed = _batches(input_pipeline.train_dataset_fn(source, 8, batch, 7, start, steps),
                       steps - start)
    for expected, got in zip(full[start:], resumed):
      for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_epochs_are_reshuffled_and_complete():
  source = data.load_source('digits')
  batches = _batches(input_pipeline.train_dataset_fn(source, 8, 479, 3, 0, 6), 6)
  labels = np.concatenate([b[1] for b in batches])
  first, second = labels[:1437], labels[1437:2874]
  assert not np.array_equal(first, second)  # a new order each epoch
  assert np.array_equal(np.bincount(first), np.bincount(second))  # every image once
  other_seed = _batches(input_pipeline.train_dataset_fn(source, 8, 479, 4, 0, 1), 1)
  assert not np.array_equal(batches[0][1], other_seed[0][1])


def test_pipelines_read_disjoint_shards():
  source = data.load_source('digits')
  fn = input_pipeline.eval_dataset_fn(source, 8, 64)

  def real_images(context):
    """The real (weight 1) images a pipeline yields, as bytes."""
    return [image.tobytes() for batch in fn(context).as_numpy_iterator()
            for image, weight in zip(batch[0], batch[2]) if weight > 0]

  shards = [real_images(_context(2, i)) for i in (0, 1)]
  assert [len(s) for s in shards] == [180, 180]  # 360 eval images, split evenly
  # Together, the two shards are the whole split, each image exactly once.
  assert sorted(shards[0] + shards[1]) == sorted(real_images(_context()))
  assert input_pipeline.eval_steps(source, 64) == 6


def _write_folder(root, corrupt):
  rng = np.random.default_rng(0)
  for label in ('a', 'b'):
    os.makedirs(root / 'train' / label)
    os.makedirs(root / 'validation' / label)
    for i in range(5):
      buffer = io.BytesIO()
      Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buffer, 'JPEG')
      data = buffer.getvalue()
      if (label, i) in corrupt:
        data = data[:len(data) // 3]  # a truncated JPEG: header intact
      (root / 'train' / label / f'{i}.jpg').write_bytes(data)
      (root / 'validation' / label / f'{i}.jpg').write_bytes(
          b'garbage' if (label, i) == ('b', 4) else buffer.getvalue())


def test_corrupt_images_become_counted_stand_ins(tmp_path):
  _write_folder(tmp_path, corrupt={('a', 1), ('b', 3)})
  source = data.load_source(str(tmp_path), image_size=16)
  assert (source.num_classes, source.num_train, source.num_eval) == (2, 10, 10)
  batches = _batches(input_pipeline.train_dataset_fn(source, 16, 5, 0, 0, 4), 4)
  weights = np.concatenate([b[2] for b in batches])
  skipped = np.concatenate([b[3] for b in batches])
  assert len(weights) == 20  # two epochs, positions unchanged
  assert skipped.sum() == 4 and np.array_equal(weights == 0, skipped == 1)
  eval_batches = list(input_pipeline.eval_dataset_fn(source, 16, 4)(_context())
                      .as_numpy_iterator())
  assert len(eval_batches) == 3
  assert sum(b[2].sum() for b in eval_batches) == 9  # one garbage file


def test_flips_can_be_turned_off_in_every_training_preprocessing():
  """flip=False never mirrors; with flips on, the same seeds give the same
  crops, some of them mirrored."""
  pixels = np.zeros((8, 8, 3), np.uint8)
  pixels[:, :3] = 255  # a bright left side: its mirror differs
  png = tf.io.encode_png(pixels)
  styles = {  # name: (encoded input, train_fn arguments)
      'inception': (True, dict(augment='inception')),
      'pad_crop': (False, dict(augment='pad_crop', pad=0)),
      'resize_crop': (False, dict(augment='pad_crop', style='resize_crop',
                                  train_resize=8)),
  }
  for name, (encoded, arguments) in styles.items():
    image = png if encoded else tf.constant(pixels)
    off, on = (preprocessing.train_fn(image_size=8, encoded=encoded, flip=flip,
                                      **arguments) for flip in (False, True))
    mirrored = 0
    for seed in range(16):
      kept = off(image, tf.constant([seed, 1], tf.int64)).numpy()
      maybe = on(image, tf.constant([seed, 1], tf.int64)).numpy()
      if not np.array_equal(maybe, kept):
        np.testing.assert_array_equal(maybe, kept[:, ::-1], err_msg=name)
        mirrored += 1
    assert 0 < mirrored < 16, (name, mirrored)


def test_random_flip_auto_is_the_data_sets_own(tmp_path):
  _write_folder(tmp_path, corrupt=set())
  for dataset, flag, expected in (('digits', None, False), (str(tmp_path), None, True),
                                  (str(tmp_path), False, False), ('digits', True, True)):
    config = Config(dataset=dataset, depth=50, random_flip=flag)
    source = data.load_source(dataset, image_size=16)
    resolved = train.resolve(config, network.resolve(config), source)
    assert resolved.random_flip is expected, (dataset, flag)
