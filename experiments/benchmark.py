"""Speed of our ResNet v2 against keras.applications, and against the machine.

    python -m experiments.benchmark                 # everything, ~35 min on 2 cores
    python -m experiments.benchmark --sections=pairs --repeats=3

In ONE process, with warm-up steps excluded and every measurement repeated
(configurations interleaved, so that load from elsewhere hits all of them
alike) and reported as the median. A pair's ratio is the median of the
per-repetition ratios (ours and Keras timed back to back), with their range:

  pairs    training and inference images/s of our resnet_v2_50 and Keras's
           ResNet50V2 (1000 classes, same batch, size, SGD optimizer and
           precision, no weight decay on either: Keras's model has none), for
           float32 and mixed_bfloat16, with and without XLA;
  depths   our throughput for depths 50-200 over batch sizes;
  input    the input pipeline (JPEG decode + random-resized crop + flip, as
           in training; BiT-HyperRule's 512/480 resize and crop, as in
           fine-tuning) against decoding alone, on this machine's cores;
           then a folder against its TFRecord shards, on all cores and one,
           and the converter's images/s (experiments/benchmark_sources.py);
  ceiling  measured float32 and bfloat16 matmul GFLOP/s, and our training
           throughput as a fraction of ceiling / (training FLOPs per image),
           with FLOPs counted from the model's convolutions;
  memory   peak memory (the peak RSS of a child process that builds the
           network and trains it) and step time, plain, with
           --recompute_grad and with --batch_split (the run's own step, in
           micro-batches), for the paper's memory-bound cases (not in the
           default sections: each case is a process of its own);
  tflite   the SavedModel, float32 TFLite and int8 TFLite of a trained
           digits network and of ResNet-50 v2 at 224: top-1, agreement with
           the SavedModel, batch-1 latency and batch-32 throughput (not in
           the default sections; experiments/benchmark_tflite.py).

    python -m experiments.benchmark --sections=memory,tflite

Prints tables and writes --output (JSON).
"""

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import resnet_v2
from experiments import benchmark_sources
from experiments import benchmark_tflite
from experiments.lib import cluster
from experiments.lib import preprocessing
from experiments.lib import steps
from experiments.lib.config import Config

_SECTIONS = flags.DEFINE_list('sections', ['pairs', 'depths', 'input', 'ceiling'],
                              'Which measurements to run.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Batch size of the pairs.')
_SIZE = flags.DEFINE_integer('image_size', 224, 'Image size.')
_REPEATS = flags.DEFINE_integer('repeats', 9, 'Timed repetitions per configuration.')
_STEPS = flags.DEFINE_integer('steps', 1, 'Steps per timed repetition.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps first (compilation).')
_DEPTHS = flags.DEFINE_list('depths', ['50', '101', '152', '200'], 'Depths to scan.')
_TRAIN_BATCHES = flags.DEFINE_list('train_batches', ['8', '32'], 'Training batch sizes to scan.')
_INFER_BATCHES = flags.DEFINE_list('infer_batches', ['1', '8', '32', '64'],
                                   'Inference batch sizes to scan.')
_PRECISIONS = flags.DEFINE_list('precisions', ['float32', 'mixed_bfloat16'],
                                'Precisions of the pairs.')
_XLA = flags.DEFINE_list('xla', ['false', 'true'], 'XLA settings of the pairs.')
_OUTPUT = flags.DEFINE_string('output', 'benchmark.json', 'Where to write the JSON.')
_MEMORY_CASES = flags.DEFINE_list(
    'memory_cases', ['200:224:16', '1001:32:32'],
    'DEPTH:SIZE:BATCH of the memory section (1001 and other 9n+2 depths at 32 '
    'are the CIFAR networks).')
_MEMORY_SPLIT = flags.DEFINE_integer(
    'memory_batch_split', 4, 'The micro-batches of the --batch_split row of '
    'each memory case (1: no such row).')
_MEMORY_LIMIT = flags.DEFINE_float(
    'memory_limit_gb', 20.0, 'A memory case is stopped (and reported) when its '
    'process passes this resident size.')
_CHILD = flags.DEFINE_string('memory_child', None,
                             'Internal: DEPTH:SIZE:BATCH:RECOMPUTE:SPLIT, one memory case.')

NUM_CLASSES = 1000


def build(kind, depth, precision):
  """Our resnet_v2_<depth> or Keras's ResNet50V2, returning logits."""
  with resnet_v2.using_dtype_policy(precision):
    if kind == 'keras':
      return keras.applications.ResNet50V2(
          weights=None, classes=NUM_CLASSES, classifier_activation=None,
          input_shape=(_SIZE.value, _SIZE.value, 3))
    return resnet_v2.build_model(
        depth, NUM_CLASSES, input_shape=(_SIZE.value, _SIZE.value, 3),
        arg_sc=resnet_v2.resnet_arg_scope(weight_decay=0.0))


def train_step_fn(model, xla):
  optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
  optimizer.build(model.trainable_variables)

  @tf.function(jit_compile=xla)
  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = tf.cast(model(images, training=True), tf.float32)
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
      loss += tf.add_n(model.losses) if model.losses else 0.0
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  return step


def infer_step_fn(model, xla):
  return tf.function(lambda images, labels: model(images, training=False),
                     jit_compile=xla)


def _batch(batch_size):
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(-1, 1, (batch_size, _SIZE.value, _SIZE.value, 3)),
                       tf.float32)
  labels = tf.constant(rng.integers(0, NUM_CLASSES, batch_size), tf.int32)
  return images, labels


def measure(configs):
  """Interleaved timing.

  Args:
    configs: {name: (step_fn, batch_size)}.

  Returns:
    {name: [images/s of each repetition]}. Repetition i of every config ran
    back to back, so ratios taken within a repetition share the machine's load.
  """
  batches = {name: _batch(size) for name, (_, size) in configs.items()}
  for name, (fn, _) in configs.items():
    for _ in range(_WARMUP.value):
      tf.nest.map_structure(lambda t: t.numpy(), fn(*batches[name]))
  speeds = {name: [] for name in configs}
  for _ in range(_REPEATS.value):
    for name, (fn, size) in configs.items():
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        result = fn(*batches[name])
      tf.nest.map_structure(lambda t: t.numpy(), result)
      speeds[name].append(size * _STEPS.value / (time.perf_counter() - start))
  return speeds


def compare(ours, keras_):
  """A pair's row from per-repetition speeds: medians and the ratio's spread."""
  ratios = [a / b for a, b in zip(ours, keras_)]
  return {'ours': statistics.median(ours), 'keras': statistics.median(keras_),
          'ratio': statistics.median(ratios), 'ratio_min': min(ratios),
          'ratio_max': max(ratios), 'ours_samples': ours, 'keras_samples': keras_}


def forward_flops(model):
  """Multiply-adds x 2 of the model's convolutions and dense layers, per image."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D):
      kh, kw, cin, cout = layer.kernel.shape
      _, h, w, _ = layer.output.shape
      total += 2 * kh * kw * cin * cout * h * w
    elif isinstance(layer, keras.layers.Dense):
      total += 2 * int(np.prod(layer.kernel.shape))
  return total


def section_pairs(results):
  rows = []
  for precision in _PRECISIONS.value:
    for xla in (x == 'true' for x in _XLA.value):
      models = {kind: build(kind, 50, precision) for kind in ('ours', 'keras')}
      configs = {}
      for kind, model in models.items():
        configs[(kind, 'train')] = (train_step_fn(model, xla), _BATCH.value)
        configs[(kind, 'infer')] = (infer_step_fn(model, xla), _BATCH.value)
      speeds = measure(configs)
      for mode in ('train', 'infer'):
        row = compare(speeds[('ours', mode)], speeds[('keras', mode)])
        rows.append({'precision': precision, 'xla': xla, 'mode': mode, **row})
        print(f'  {precision:15} xla={str(xla):5} {mode:5}  ours {row["ours"]:7.2f}  '
              f'keras {row["keras"]:7.2f}  x{row["ratio"]:.2f} '
              f'(x{row["ratio_min"]:.2f}-{row["ratio_max"]:.2f} over repetitions)',
              flush=True)
      del models, configs
      keras.utils.clear_session()
  results['pairs'] = rows


def section_depths(results, precision):
  rows = []
  for depth in map(int, _DEPTHS.value):
    model = build('ours', depth, precision)
    configs = {('train', b): (train_step_fn(model, False), b)
               for b in map(int, _TRAIN_BATCHES.value)}
    configs.update({('infer', b): (infer_step_fn(model, False), b)
                    for b in map(int, _INFER_BATCHES.value)})
    for (mode, batch), speeds in measure(configs).items():
      speed = statistics.median(speeds)
      rows.append({'depth': depth, 'mode': mode, 'batch': batch,
                   'images_per_second': speed})
      print(f'  resnet_v2_{depth:<4} {mode:5} batch {batch:3}  {speed:8.2f} images/s',
            flush=True)
    del model, configs
    keras.utils.clear_session()
  results['depths'] = {'precision': precision, 'rows': rows}


def _jpegs(count):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  out = []
  for _ in range(count):
    small = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((500, 375), Image.BILINEAR)  # ImageNet-typical
    buffer = io.BytesIO()
    image.save(buffer, format='JPEG', quality=90)
    out.append(buffer.getvalue())
  return out


def section_input(results):
  jpegs = tf.constant(_jpegs(64))
  size = _SIZE.value
  pipelines = {
      'decode only': lambda i, b: tf.io.decode_jpeg(b, channels=3),
      'decode + random-resized crop + flip (training)': lambda i, b:
          preprocessing.imagenet_train(b, size, tf.stack([tf.constant(0, tf.int64), i])),
      'decode + central crop (eval)': lambda i, b: preprocessing.imagenet_eval(b, size),
      # BiT-HyperRule's, at its resolution for images of this size.
      'decode + resize 512 + random crop 480 + flip (fine-tuning)':
          lambda i, b: preprocessing.resize_crop_train(
              preprocessing.decode(b), 480, 512,
              tf.stack([tf.constant(0, tf.int64), i])),
      'decode + resize 480 (fine-tuning eval)': lambda i, b:
          preprocessing.normalize(
              preprocessing.resize(preprocessing.decode(b), 480)),
  }
  rows = []
  for name, fn in pipelines.items():
    dataset = (tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
               .map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(32)
               .prefetch(tf.data.AUTOTUNE))
    iterator = iter(dataset)
    for _ in range(3):
      next(iterator)
    speeds = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      for _ in range(10):
        next(iterator)
      speeds.append(320 / (time.perf_counter() - start))
    rows.append({'pipeline': name, 'images_per_second': statistics.median(speeds)})
    print(f'  {name:58} {rows[-1]["images_per_second"]:8.1f} images/s',
          flush=True)
  results['input'] = rows
  print('The same images as a folder and as shards, through the input '
        'pipeline:')
  benchmark_sources.section_sources(results, _jpegs(64), size, _REPEATS.value)


def section_ceiling(results):
  rows = {}
  for dtype in (tf.float32, tf.bfloat16):
    best = 0.0
    for n in (1024, 2048, 4096):
      a = tf.cast(tf.random.normal([n, n]), dtype)
      matmul = tf.function(lambda x: tf.linalg.matmul(x, x))
      matmul(a).numpy()
      for _ in range(_REPEATS.value):
        start = time.perf_counter()
        for _ in range(3):
          out = matmul(a)
        out.numpy()
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    rows[dtype.name] = best
    print(f'  matmul {dtype.name:9} {best:8.1f} GFLOP/s (best of sizes 1024-4096 '
          f'x {_REPEATS.value})', flush=True)
  model = build('ours', 50, 'float32')
  flops = forward_flops(model)
  results['ceiling'] = {'matmul_gflops': rows, 'forward_gflops_per_image': flops / 1e9,
                        'training_gflops_per_image': 3 * flops / 1e9}
  print(f'  resnet_v2_50 forward {flops / 1e9:.2f} GFLOP/image (2 x multiply-adds of '
        f'convs and dense), training ~3x = {3 * flops / 1e9:.2f} GFLOP/image', flush=True)
  if 'pairs' in results:
    for row in results['pairs']:
      if row['mode'] == 'train' and not row['xla']:
        peak = rows['bfloat16' if 'bfloat16' in row['precision'] else 'float32']
        bound = peak * 1e9 / (3 * flops)
        row['fraction_of_ceiling'] = row['ours'] / bound
        print(f'  ours {row["precision"]:15} training {row["ours"]:.2f} images/s = '
              f'{100 * row["fraction_of_ceiling"]:.0f}% of the matmul bound '
              f'{bound:.2f} images/s', flush=True)


def micro_batch_step_fn(model, config, num_classes):
  """The run's own training step (experiments/lib/steps.py), in
  config.batch_split micro-batches: step(images, labels) -> the loss."""
  batch_size = config.batch_size
  strategy = tf.distribute.get_strategy()
  placement = cluster.Placement(strategy, None, True, '', 'float32', False)
  multi_step = steps.make_multi_step(
      config, placement, model, keras.optimizers.SGD(0.01, momentum=0.9),
      num_classes)

  def step(images, labels):
    batch = (images, labels, tf.ones([batch_size]),
             tf.zeros([batch_size], tf.int32))
    return multi_step(iter(tf.data.Dataset.from_tensors(batch)),
                      tf.constant(1))[0]

  return step


def _memory_child(spec):
  """One memory case, in its own process: prints its step time as JSON."""
  depth, size, batch, recompute, split = spec.split(':')
  depth, size, batch, split = int(depth), int(size), int(batch), int(split)
  stem = 'cifar' if size <= 64 else 'imagenet'
  num_classes = 10 if stem == 'cifar' else NUM_CLASSES
  model = resnet_v2.build_model(
      depth, num_classes, input_shape=(size, size, 3), stem=stem,
      recompute_grad=recompute == 'True',
      arg_sc=resnet_v2.resnet_arg_scope(weight_decay=0.0))
  if split > 1:
    step = micro_batch_step_fn(model, Config(
        depth=depth, stem=stem, batch_size=batch, batch_split=split,
        precision='float32'), num_classes)
  else:
    step = train_step_fn(model, False)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)), tf.float32)
  labels = tf.constant(rng.integers(0, 10, batch), tf.int32)
  step(images, labels).numpy()  # Compilation, not timed.
  times = []
  for _ in range(3):
    start = time.perf_counter()
    step(images, labels).numpy()
    times.append(time.perf_counter() - start)
  print(json.dumps({'step_seconds': statistics.median(times)}), flush=True)


def _resident_gb(pid):
  with open(f'/proc/{pid}/status', encoding='utf-8') as f:
    kb = next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))
  return kb / 2**20


def section_memory(results):
  rows = []
  for case in _MEMORY_CASES.value:
    depth, size, batch = (int(v) for v in case.split(':'))
    variants = [(False, 1), (True, 1)]
    if _MEMORY_SPLIT.value > 1:
      variants.append((False, _MEMORY_SPLIT.value))
    for recompute, split in variants:
      child = f'--memory_child={case}:{recompute}:{split}'
      process = subprocess.Popen(
          [sys.executable, '-m', 'experiments.benchmark', child],
          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
      stopped = False
      while True:  # Waits, guarding the machine; the child's own peak RSS.
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
          break
        try:
          if not stopped and _resident_gb(process.pid) > _MEMORY_LIMIT.value:
            process.kill()
            stopped = True
        except (OSError, StopIteration):
          pass
        time.sleep(0.2)
      output = process.stdout.read()
      peak_gb = usage.ru_maxrss / 2**20  # kB on Linux.
      row = {'depth': depth, 'image_size': size, 'batch': batch,
             'recompute_grad': recompute, 'batch_split': split,
             'peak_rss_gb': peak_gb, 'stopped_at_limit': stopped}
      if not stopped and output.strip():
        row.update(json.loads(output.strip().splitlines()[-1]))
      rows.append(row)
      if 'step_seconds' in row:
        outcome = f'step {row["step_seconds"]:7.2f} s'
      elif stopped:
        outcome = f'stopped at the {_MEMORY_LIMIT.value:g} GB limit'
      else:
        outcome = (f'failed (exit {os.waitstatus_to_exitcode(status)}; '
                   f'{child} alone shows why)')
      print(f'  resnet_v2_{depth:<5} {size}x{size} batch {batch:3}  recompute_grad='
            f'{str(recompute):5}  batch_split={split}  peak {peak_gb:6.2f} GB  '
            + outcome, flush=True)
  results['memory'] = rows


def machine():
  cpu_flags = cluster.cpu_flags()
  wanted = ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile', 'fma')
  return {'cores': os.cpu_count(), 'platform': platform.platform(),
          'cpu_flags': [f for f in wanted if f in cpu_flags],
          'tensorflow': tf.__version__, 'keras': keras.__version__}


def main(argv):
  del argv
  if _CHILD.value:
    _memory_child(_CHILD.value)
    return
  results = {'date': time.strftime('%Y-%m-%d'), 'machine': machine(),
             'batch_size': _BATCH.value, 'image_size': _SIZE.value,
             'repeats': _REPEATS.value, 'steps': _STEPS.value}
  print(f'Machine: {results["machine"]}', flush=True)
  if 'pairs' in _SECTIONS.value:
    print('Training and inference images/s, ours vs keras.applications.ResNet50V2:')
    section_pairs(results)
  if 'depths' in _SECTIONS.value:
    print('Our throughput by depth and batch size (mixed_bfloat16):')
    section_depths(results, 'mixed_bfloat16')
  if 'input' in _SECTIONS.value:
    print('Input pipeline alone:')
    section_input(results)
  if 'ceiling' in _SECTIONS.value:
    print('The machine\'s ceiling:')
    section_ceiling(results)
  if 'tflite' in _SECTIONS.value:
    print('The SavedModel, float32 TFLite and int8 TFLite (--export_tflite):')
    benchmark_tflite.section_tflite(results, _REPEATS.value, _SIZE.value)
  if 'memory' in _SECTIONS.value:
    print('Peak memory and step time (float32 training): plain, with '
          'recomputation, in micro-batches:')
    section_memory(results)
  with open(_OUTPUT.value, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=1)
  print(f'Wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
