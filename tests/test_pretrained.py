"""create_model loads every family's published layout exactly.

Keras applications is checked against its own model in this process, from
a legacy HDF5 file written as tf.keras wrote the published ones; BiT and
timm against independent NumPy forward passes of their layouts
(`numpy_families`), from files written in their published key layout: a BiT
.npz and timm .safetensors (with PyTorch's num_batches_tracked).
"""

import dataclasses
import json
import os
import subprocess
import sys

from absl import logging as absl_logging
import h5py
import keras
from keras.src.legacy.saving import legacy_h5_format
import numpy as np
import pytest
from safetensors.numpy import save_file
import tensorflow as tf

import resnet_v2
from resnet_v2 import pretrained
from tests import numpy_families
from tests import run_cli

IMAGES = np.random.default_rng(3).uniform(-1, 1, (2, 40, 40, 3)).astype(np.float32)


def _relative_error(ours, reference):
  return np.abs(np.asarray(ours, np.float64) - reference).max() / np.abs(reference).max()


def test_every_family_is_named():
  assert resnet_v2.list_models() == sorted(
      ['resnet_v2_50', 'resnet_v2_101', 'resnet_v2_152', 'resnet_v2_200',
       'keras_resnet50v2', 'keras_resnet101v2', 'keras_resnet152v2',
       'bit_r50x1', 'bit_r50x3', 'bit_r101x1', 'bit_r101x3', 'bit_r152x2', 'bit_r152x4',
       'timm_resnetv2_50', 'timm_resnetv2_101', 'timm_resnetv2_50x1_bit'])
  with pytest.raises(ValueError, match="Unknown model 'bit_r50x2'; known models are"):
    resnet_v2.create_model('bit_r50x2')


def _keras_reference(include_top, tmp_path):
  reference = keras.applications.ResNet50V2(
      weights=None, include_top=include_top, pooling=None if include_top else 'avg',
      classifier_activation=None, input_shape=(40, 40, 3))
  rng = np.random.default_rng(0)
  for weight in reference.weights:  # Not the initial values: BN statistics matter.
    if 'moving_variance' in weight.path:
      weight.assign(rng.uniform(0.5, 1.5, weight.shape))
    else:
      weight.assign(rng.normal(0, 0.05 if len(weight.shape) > 1 else 0.1, weight.shape))
  path = tmp_path / f'resnet50v2{"" if include_top else "_notop"}.h5'
  with h5py.File(path, 'w') as f:  # What tf.keras's save_weights wrote.
    legacy_h5_format.save_weights_to_hdf5_group(f, reference)
  return reference, str(path)


def test_keras_applications_with_and_without_top(tmp_path):
  reference, path = _keras_reference(True, tmp_path)
  model = resnet_v2.create_model('keras_resnet50v2', input_shape=(40, 40, 3),
                                 checkpoint_path=path)
  assert model.count_params() == reference.count_params()
  assert model.weights[0].path == 'keras_resnet50v2/conv1/kernel'
  logits = model(IMAGES, training=False)
  assert logits.shape == (2, 1000)
  assert _relative_error(logits, reference(IMAGES, training=False).numpy()) < 1e-4

  reference, path = _keras_reference(False, tmp_path)
  features = resnet_v2.create_model('keras_resnet50v2', 0, (40, 40, 3), path)
  assert _relative_error(features(IMAGES, training=False)[:, 0, 0],
                         reference(IMAGES, training=False).numpy()) < 1e-4
  # No head in the file: a 7-class model gets a fresh one, the rest loaded.
  seven = resnet_v2.create_model('keras_resnet50v2', 7, (40, 40, 3), path)
  assert seven(IMAGES, training=False).shape == (2, 7)


def _tiny(name, **changes):
  """A registered family's layout with fewer units (and width), for speed."""
  return dataclasses.replace(resnet_v2.get_model_spec(name), name=f'{name}_tiny',
                             **changes)


@pytest.mark.parametrize('units, width, classes', [((1, 2, 1, 1), 0.5, 11),
                                                   ((3, 4, 6, 3), 1, 1000)])
def test_bit_npz_matches_bits_own_forward_pass(tmp_path, units, width, classes):
  weights = numpy_families.random_weights(
      numpy_families.bit_shapes(units, width, classes), 'hwio', kernel_mean=0.05)
  np.savez(tmp_path / 'BiT.npz', **weights)
  reference = numpy_families.bit_forward(IMAGES, weights, units)
  if units == (3, 4, 6, 3):  # the published bit_r50x1, as create_model makes it
    model = resnet_v2.create_model('bit_r50x1', input_shape=(40, 40, 3),
                                   checkpoint_path=str(tmp_path / 'BiT.npz'))
  else:
    spec = _tiny('bit_r50x1', num_units=units, width=width)
    model = pretrained.build(spec, classes, (40, 40, 3))
    assert pretrained.load(model, spec, str(tmp_path / 'BiT.npz'))
  assert model.output.shape[-1] == classes
  assert _relative_error(model(IMAGES, training=False), reference) < 1e-4


@pytest.mark.parametrize('name, kind, ws_eps, pad', [
    ('timm_resnetv2_50', 'batch_norm', None, -np.inf),
    ('timm_resnetv2_50x1_bit', 'group_norm', 1e-8, 0.0)])
def test_timm_safetensors_match_timms_own_forward_pass(tmp_path, name, kind, ws_eps, pad):
  units = (3, 4, 6, 3)
  weights = numpy_families.random_weights(
      numpy_families.timm_shapes(units, 1000, kind), 'oihw',
      kernel_mean=0.05 if ws_eps else 0.0)
  save_file(weights, str(tmp_path / 'model.safetensors'))
  model = resnet_v2.create_model(name, input_shape=(40, 40, 3),
                                 checkpoint_path=str(tmp_path / 'model.safetensors'))
  reference = numpy_families.timm_forward(IMAGES, weights, units, kind, ws_eps, pad)
  assert _relative_error(model(IMAGES, training=False), reference) < 1e-4
  trained = sum(v.size for k, v in weights.items() if 'running' not in k
                and 'num_batches' not in k)
  assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trained


def test_a_fresh_head_when_the_classes_differ(tmp_path, caplog):
  units, classes = (1, 1, 1, 1), 21
  weights = numpy_families.random_weights(
      numpy_families.bit_shapes(units, 0.5, classes), 'hwio')
  np.savez(tmp_path / 'BiT.npz', **weights)
  spec = _tiny('bit_r50x1', num_units=units, width=0.5)
  model = pretrained.build(spec, 5, (40, 40, 3))
  absl_logging.set_verbosity(absl_logging.INFO)
  with caplog.at_level('INFO', logger='absl'):
    assert not pretrained.load(model, spec, str(tmp_path / 'BiT.npz'))
  assert 'a fresh head of 5 classes (zeros; the file has 21)' in caplog.text
  np.testing.assert_array_equal(model(IMAGES, training=False), 0.0)  # BiT's zero head
  np.testing.assert_array_equal(model.get_layer('bit_r50x1_tiny.conv1').kernel,
                                weights['resnet/root_block/standardized_conv2d/kernel'])


def test_a_file_of_another_network_is_refused_listing_what_differs(tmp_path):
  units = (1, 1, 1, 1)
  weights = numpy_families.random_weights(
      numpy_families.timm_shapes(units, 1000, 'batch_norm'), 'oihw')
  save_file(weights, str(tmp_path / 'model.safetensors'))
  spec = _tiny('timm_resnetv2_50', num_units=(1, 2, 1, 1))
  model = pretrained.build(spec, 1000, (40, 40, 3))
  before = [w.numpy().copy() for w in model.weights]
  with pytest.raises(ValueError) as error:
    pretrained.load(model, spec, str(tmp_path / 'model.safetensors'))
  message = str(error.value)
  assert 'missing from the file (15)' in message  # block2's second unit
  assert 'stages.1.blocks.1.conv2.weight' in message
  for old, weight in zip(before, model.weights):  # nothing assigned
    np.testing.assert_array_equal(old, weight.numpy())
  # A BiT file for a timm name: nothing matches, and the message says why.
  np.savez(tmp_path / 'other.npz', **numpy_families.random_weights(
      numpy_families.bit_shapes(units, 1, 10), 'hwio'))
  with pytest.raises(ValueError, match=r"unexpected in the file(.|\n)*laid out as bit's"):
    pretrained.load(model, spec, str(tmp_path / 'other.npz'))
  with pytest.raises(ValueError, match='is not a weight file this library reads'):
    (tmp_path / 'notes.txt').write_text('not weights')
    pretrained.load(model, spec, str(tmp_path / 'notes.txt'))


def test_npz_is_read_one_array_at_a_time(tmp_path):
  """A 400 MB .npz: its keys and shapes come from the headers, and reading it
  whole one array at a time never holds more than one array."""
  arrays = {f'resnet/block1/unit{i:02d}/a/standardized_conv2d/kernel':
            np.full((1, 1, 1000, 25_000), i, np.float32) for i in range(1, 5)}
  np.savez(tmp_path / 'big.npz', **arrays)
  size = os.path.getsize(tmp_path / 'big.npz')
  script = f'''
import resource
from resnet_v2 import weight_files
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
weights = weight_files.open_weights({str(tmp_path / 'big.npz')!r})
opened = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert all(s == (1, 1, 1000, 25_000) for s in weights.shapes.values())
total = sum(float(weights.read(key)[0, 0, 0, 0]) for key in weights.shapes)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((opened - before) * 1024, (after - before) * 1024, total)
'''
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       check=True).stdout.split()
  opened, peak, total = int(out[0]), int(out[1]), float(out[2])
  assert total == 1 + 2 + 3 + 4
  assert opened < size / 20          # no array read to list them
  assert peak < 0.4 * size, (peak, size)  # one 100 MB array at a time


@pytest.mark.slow
def test_the_scripts_train_evaluate_and_export_a_named_network(tmp_path):
  """--network=bit_r50x1 --init_checkpoint=<a BiT .npz> trains (a fresh zero
  head for digits' 10 classes), and the run directory remembers the name."""
  units = (3, 4, 6, 3)
  weights = numpy_families.random_weights(
      numpy_families.bit_shapes(units, 1, 1000), 'hwio', kernel_mean=0.05)
  np.savez(tmp_path / 'BiT-M-R50x1-ILSVRC2012.npz', **weights)
  run = tmp_path / 'run'
  output = run_cli.run('experiments.digits', '--network=bit_r50x1', '--image_size=32',
                       f'--init_checkpoint={tmp_path / "BiT-M-R50x1-ILSVRC2012.npz"}',
                       '--batch_size=8', '--train_steps=2', '--steps_per_loop=1',
                       '--log_every=1', '--mode=train', '--precision=float32', '--show=0',
                       f'--model_dir={run}').stdout
  assert 'Initialized from the bit checkpoint' in output
  assert 'a fresh head of 10 classes (zeros; the file has 1000)' in output
  saved = json.loads((run / 'config.json').read_text())
  assert saved['network'] == 'bit_r50x1' and saved['eval_preprocessing'] == 'resize'
  assert 'blocks' not in saved and 'depth' not in saved
  output = run_cli.run('experiments.digits', '--mode=eval', f'--model_dir={run}',
                       '--show=0').stdout
  assert 'eval at step 2' in output
  served = tf.saved_model.load(str(run / 'export')).signatures['serve_images']
  assert served(images=tf.zeros([1, 32, 32, 3]))['classes'].shape == (1, 5)
  refused = run_cli.run('experiments.digits', f'--model_dir={run}', '--stem=imagenet',
                        check=False)
  assert refused.returncode == 1 and 'Traceback' not in refused.stdout
  assert "--stem='imagenet' differs from 'imagenet_zero_pad'" in refused.stdout
