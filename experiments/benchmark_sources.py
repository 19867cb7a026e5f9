"""The benchmark's input section, continued: shards against a folder, and the converter.

The same images, ImageNet-typical 500x375 JPEGs, are read as a folder of
class sub-folders and as the TFRecord shards `experiments.make_tfrecords`
makes of it, each through the run's own input pipeline
(`input_pipeline.train_dataset_fn` / `eval_dataset_fn`, so reading, decoding,
the crop and batching), alone: no model. Each is measured with tf.data on
every core and on one (a private thread pool of one thread), since the
images/s of one core says how many cores a host needs to feed its
accelerators. The converter's images/s is its own, writing those shards.

The files sit on a local disk and in the page cache after the first pass,
so this measures the cost of the formats, not of a network filesystem,
where many small files cost far more.
"""

import os
import statistics
import tempfile
import time

import tensorflow as tf

from experiments.lib import data
from experiments.lib import input_pipeline
from experiments.lib import shard_plan
from experiments.lib import shard_writer

# Images converted and read: 8 classes of 64.
_CLASSES, _PER_CLASS = 8, 64
_BATCH = 32


def _write_folder(root, jpegs):
  """root/train/<class>/<i>.jpg and root/validation/<class>/<i>.jpg."""
  for split in ('train', 'validation'):
    for index, jpeg in enumerate(jpegs):
      folder = os.path.join(root, split, f'class_{index % _CLASSES}')
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, f'{index}.jpg'), 'wb') as f:
        f.write(jpeg)


def _convert(root, output):
  """Converts the folder; returns the converter's images/s."""
  classes, splits = shard_plan.folder_splits(root)
  plan = shard_plan.cut(root, 0, classes, splits,
                        {'train': 4, 'validation': 4})
  start = time.perf_counter()
  shard_writer.write(plan, output)
  images = sum(plan.num_examples(split) for split in plan.shards)
  return images / (time.perf_counter() - start)


def _options(threads):
  options = tf.data.Options()
  if threads:
    options.threading.private_threadpool_size = threads
  return options


def _speed(make_dataset, threads, repeats):
  """Median images/s of `repeats` passes of 8 batches, after a warm-up."""
  iterator = iter(make_dataset().with_options(_options(threads)).repeat())
  for _ in range(3):
    next(iterator)
  speeds = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(8):
      next(iterator)
    speeds.append(8 * _BATCH / (time.perf_counter() - start))
  return statistics.median(speeds)


def _datasets(source, image_size, repeats):
  """{'training': fn() -> Dataset, 'evaluation': ...} of one pipeline."""
  context = tf.distribute.InputContext()
  # As many steps as `_speed` takes.
  train = input_pipeline.train_dataset_fn(
      source, image_size, _BATCH, seed=0, start_step=0,
      end_step=8 * repeats + 8, shuffle_buffer=1024)
  evaluation = input_pipeline.eval_dataset_fn(source, image_size, _BATCH)
  return {'training': lambda: train(context),
          'evaluation': lambda: evaluation(context)}


def section_sources(results, jpegs, image_size, repeats):
  """Measures and prints the section; stores its rows in results['sources'].

  Args:
    results: The benchmark's results dict.
    jpegs: JPEG files (bytes), dealt out over the classes.
    image_size: The crop's size.
    repeats: Timed repetitions of each figure.
  """
  jpegs = [jpegs[i % len(jpegs)] for i in range(_CLASSES * _PER_CLASS)]
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    folder, output = os.path.join(scratch, 'images'), os.path.join(scratch,
                                                                  'shards')
    _write_folder(folder, jpegs)
    converter = _convert(folder, output)
    print(f'  {"converter (make_tfrecords, every core)":52} '
          f'{converter:8.1f} images/s', flush=True)
    for name, directory in (('folder', folder), ('shards', output)):
      source = data.load_source(directory, image_size=image_size)
      for kind, make in _datasets(source, image_size, repeats).items():
        row = {'source': name, 'preprocessing': kind,
               'images_per_second': _speed(make, None, repeats),
               'one_core': _speed(make, 1, repeats)}
        rows.append(row)
        print(f'  {name + " (" + kind + ")":52} '
              f'{row["images_per_second"]:8.1f} images/s, one core '
              f'{row["one_core"]:7.1f}', flush=True)
  results['sources'] = {'converter_images_per_second': converter,
                        'cores': os.cpu_count(), 'rows': rows,
                        'images': len(jpegs)}
