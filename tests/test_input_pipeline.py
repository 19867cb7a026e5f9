"""The input stream is reproducible from any position and survives bad files."""

import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf

from experiments.lib import datasets
from experiments.lib import input_pipeline


def _context(pipelines=1, index=0):
  return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                    input_pipeline_id=index,
                                    num_replicas_in_sync=pipelines)


def _batches(dataset_fn, count, context=None):
  batches = list(dataset_fn(context or _context()).take(count).as_numpy_iterator())
  assert len(batches) == count
  return batches


def test_resuming_replays_the_same_stream():
  source = datasets.load_source('digits')  # 1437 training images
  batch, steps = 100, 40  # a little less than 3 epochs
  full = _batches(input_pipeline.train_dataset_fn(source, 8, batch, 7, 0, steps), steps)
  for start in (1, 14, 15, 29):  # 14 * 100 < 1437 < 15 * 100: an epoch boundary
    resumed = _batches(input_pipeline.train_dataset_fn(source, 8, batch, 7, start, steps),
                       steps - start)
    for expected, got in zip(full[start:], resumed):
      for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_epochs_are_reshuffled_and_complete():
  source = datasets.load_source('digits')
  batches = _batches(input_pipeline.train_dataset_fn(source, 8, 479, 3, 0, 6), 6)
  labels = np.concatenate([b[1] for b in batches])
  first, second = labels[:1437], labels[1437:2874]
  assert not np.array_equal(first, second)  # a new order each epoch
  assert np.array_equal(np.bincount(first), np.bincount(second))  # every image once
  other_seed = _batches(input_pipeline.train_dataset_fn(source, 8, 479, 4, 0, 1), 1)
  assert not np.array_equal(batches[0][1], other_seed[0][1])


def test_pipelines_read_disjoint_shards():
  source = datasets.load_source('digits')
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
  source = datasets.load_source(str(tmp_path), image_size=16)
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
