"""The benchmark's `tflite` section: the SavedModel, float TFLite and int8 TFLite.

Two models, each exported by the run itself with --export_tflite=int8:
- the embedded default's network trained on digits (the digits recipe,
  `--train_epochs` as given below), for what int8 costs in accuracy: top-1
  on the 360 held-out digits, and top-1 agreement with the SavedModel;
- ResNet-50 v2 at --image_size, trained for one step on synthetic data, for
  speed at a realistic size (its agreement is over synthetic images, its
  accuracy meaningless).

Latency is the median of single-image calls; throughput is images/s at a
batch of 32. The TFLite interpreter uses every core.
"""

import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from experiments.lib import data
from experiments.lib import preprocessing
from experiments.lib import tflite
from experiments.lib import train
from experiments.lib.config import Config

_DIGITS = dict(dataset='digits', blocks='16x2/2, 32x2', stem='cifar',
               train_epochs=60, batch_size=64, base_lr=0.1,
               lr_reference_batch=64, warmup_epochs=1, weight_decay=5e-4,
               steps_per_loop=23, log_every=460, checkpoint_every=460, seed=0,
               precision='float32', mode='train_and_eval')
_RESNET50 = dict(dataset='synthetic', depth=50, batch_size=2, train_steps=1,
                 steps_per_loop=1, precision='float32', mode='train', seed=0)


def _export(model_dir, settings):
  """Trains and exports with --export_tflite=int8; returns the export."""
  train.run(Config(model_dir=model_dir, export_tflite='int8', **settings))
  return os.path.join(model_dir, 'export')


def _held_out(settings, count):
  """(pixels in [0, 255] as serve_images takes them, labels)."""
  config = Config(**settings)
  source = data.load_source(config.dataset, image_size=config.image_size)
  preprocess = preprocessing.eval_fn(
      source.augment, config.image_size or source.image_size, source.encoded)
  pairs = source.read('eval', 1, 0).take(count).map(
      lambda image, label: (preprocess(image), label))
  images, labels = zip(*pairs.as_numpy_iterator())
  return (np.stack(images) + 1.0) * 127.5, np.array(labels)


def _runners(export_dir):
  """{name: (fn(images) -> probabilities, megabytes)} of the three forms."""
  served = tf.saved_model.load(export_dir).signatures['serve_images']
  saved_bytes = sum(os.path.getsize(os.path.join(root, f)) for root, _, names
                    in os.walk(export_dir) for f in names
                    if not f.endswith('.tflite'))
  runners = {'SavedModel': (lambda images: served(
      images=tf.constant(images))['probabilities'].numpy(), saved_bytes / 2**20)}
  models = {'TFLite float32': tflite.convert(export_dir, 'float32'),
            'TFLite int8': open(os.path.join(export_dir, tflite.FILES['int8']),
                                'rb').read()}
  for name, model in models.items():
    interpreter = tf.lite.Interpreter(model_content=model,
                                      num_threads=os.cpu_count())
    runner = interpreter.get_signature_runner('serve_images')
    runners[name] = (lambda images, runner=runner:
                     runner(images=images)['probabilities'], len(model) / 2**20)
  return runners


def _speeds(run, images, repeats):
  """(median seconds of one image, images/s at a batch of 32)."""
  batch = np.resize(images, (32,) + images.shape[1:])
  run(images[:1])
  run(batch)
  singles = []
  for i in range(repeats * 10):
    start = time.perf_counter()
    run(images[i % len(images):][:1])
    singles.append(time.perf_counter() - start)
  batches = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(batch)
    batches.append(32 / (time.perf_counter() - start))
  return statistics.median(singles), statistics.median(batches)


def _rows(name, export_dir, images, labels, repeats):
  rows, reference = [], None
  for form, (run, megabytes) in _runners(export_dir).items():
    answers = np.concatenate([run(images[i:i + 1]) for i in range(len(images))])
    reference = answers if reference is None else reference
    latency, throughput = _speeds(run, images, repeats)
    rows.append({
        'model': name, 'form': form,
        'top1': None if labels is None else float(np.mean(
            answers.argmax(1) == labels)),
        'agreement': float(np.mean(answers.argmax(1) == reference.argmax(1))),
        'latency_ms': latency * 1000, 'images_per_second': throughput,
        'megabytes': megabytes})
    top1 = '   --  ' if labels is None else f'{rows[-1]["top1"]:7.1%}'
    print(f'  {name:22} {form:15} top-1 {top1}  agreement '
          f'{rows[-1]["agreement"]:6.1%}  batch 1 {latency * 1000:7.2f} ms  '
          f'batch 32 {throughput:7.1f} images/s  {rows[-1]["megabytes"]:6.1f} MB',
          flush=True)
  return rows


def section_tflite(results, repeats, image_size=224):
  """Measures and prints the section; stores its rows in results['tflite'].

  Args:
    results: The benchmark's results dict.
    repeats: Timed repetitions (of 10 single images, and of one batch).
    image_size: ResNet-50's image size.
  """
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    for name, settings, count in (
        ('digits (trained)', _DIGITS, 360),
        (f'resnet_v2_50 @{image_size}', dict(_RESNET50, image_size=image_size),
         64)):
      export_dir = _export(os.path.join(scratch, name.split()[0]), settings)
      images, labels = _held_out(settings, count)
      rows += _rows(name, export_dir, images,
                    labels if settings is _DIGITS else None, repeats)
  results['tflite'] = rows
