"""--export_tflite=int8: a full-integer TFLite model that agrees with float."""

import json

import numpy as np
import pytest
import tensorflow as tf

from experiments import benchmark_tflite
from experiments.lib import data
from experiments.lib import tflite
from tests import run_cli

# Real processes throughout: not in the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow


def _held_out():
  """The 360 held-out digits as serve_images takes them, and their labels."""
  source = data.load_source('digits')
  images, labels = zip(*source.read('eval', 1, 0).as_numpy_iterator())
  return np.array(images, np.float32), np.array(labels)


def _run(interpreter, images):
  runner = interpreter.get_signature_runner('serve_images')
  return np.concatenate([runner(images=images[i:i + 1])['probabilities']
                         for i in range(len(images))])


# BatchNorm's moving averages (decay 0.997) need about 1000 steps to settle.
@pytest.mark.parametrize('normalization, steps', [('batch_norm', 1000),
                                                  ('group_norm', 300)])
def test_the_int8_model_is_integer_and_agrees_with_float(tmp_path, normalization,
                                                         steps):
  run = tmp_path / 'run'
  run_cli.run('experiments.digits', f'--model_dir={run}', '--blocks=16x1/2, 32x1',
              f'--normalization={normalization}', '--group_norm_groups=4',
              f'--train_steps={steps}', '--steps_per_loop=100', '--log_every=500',
              '--warmup_epochs=0', '--export_tflite=int8', '--show=0')
  marker = json.loads((run / 'export' / 'resnet_v2_export.json').read_text())
  assert marker['tflite'] == tflite.FILES['int8']
  interpreter = tf.lite.Interpreter(str(run / 'export' / tflite.FILES['int8']))
  interpreter.allocate_tensors()
  tensors = interpreter.get_tensor_details()
  convolutions = [op for op in interpreter._get_ops_details()  # pylint: disable=protected-access
                  if op['op_name'] == 'CONV_2D']
  assert convolutions
  for op in convolutions:  # Input, weights and output are int8.
    assert {tensors[i]['dtype'] for i in (*op['inputs'][:2], *op['outputs'])} == {np.int8}

  images, labels = _held_out()
  served = tf.saved_model.load(str(run / 'export')).signatures['serve_images']
  reference = served(images=tf.constant(images))['probabilities'].numpy()
  quantized = _run(interpreter, images)
  float_top1 = np.mean(reference.argmax(1) == labels)
  assert float_top1 > 0.85, float_top1
  agreement = np.mean(quantized.argmax(1) == reference.argmax(1))
  assert agreement > 0.9, agreement
  assert np.mean(quantized.argmax(1) == labels) > float_top1 - 0.05
  # The benchmark's tflite rows, on this export: the three forms compared.
  rows = benchmark_tflite._rows('digits', str(run / 'export'), images[:40],  # pylint: disable=protected-access
                                labels[:40], repeats=1)
  assert [row['form'] for row in rows] == ['SavedModel', 'TFLite float32', 'TFLite int8']
  assert rows[0]['agreement'] == rows[1]['agreement'] == 1.0
  assert rows[2]['megabytes'] < rows[1]['megabytes']
  assert all(row['latency_ms'] > 0 and row['images_per_second'] > 0 for row in rows)


def test_int8_with_the_training_precision_is_refused_before_any_work(tmp_path):
  result = run_cli.run('experiments.digits', f'--model_dir={tmp_path / "run"}',
                       '--export_tflite=int8', '--export_precision=training',
                       check=False)
  assert result.returncode != 0 and 'Traceback' not in result.stdout
  assert '--export_tflite needs --export_precision=float32 (TFLite refuses' in result.stdout
  assert not (tmp_path / 'run').exists()
