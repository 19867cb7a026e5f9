"""Models the library builds are ordinary Keras models: .keras files round-trip."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import resnet_v2
from experiments.lib import optimization
from tests import run_cli


@pytest.mark.parametrize('build', [
    dict(depth_or_blocks=resnet_v2.parse_blocks('4x1/2, 8x1'), num_classes=5,
         input_shape=(16, 16, 3), stem='cifar'),
    dict(depth_or_blocks=resnet_v2.parse_blocks('4x2/2, 8x1'), num_classes=3,
         input_shape=(33, 33, 3), stem='imagenet', output_stride=8, global_pool=False,
         spatial_squeeze=False),
    dict(depth_or_blocks=resnet_v2.parse_blocks('4x1'), num_classes=None,
         input_shape=(8, 8, 16), stem='none', dtype_policy='mixed_bfloat16'),
    dict(depth_or_blocks=resnet_v2.parse_blocks('basic 8x1/2, 4x1'), num_classes=3,
         input_shape=(8, 8, 3), stem='cifar', arg_sc=resnet_v2.bit_arg_scope(groups=2),
         drop_path_rate=0.2, width_multiplier=1.5),
    # The BiT and timm layouts of create_model: zero- and -inf-padded pool1.
    dict(depth_or_blocks=resnet_v2.parse_blocks('8x1, 16x1/2', stride_unit='first',
                                                projection='stride'),
         num_classes=3, input_shape=(32, 32, 3), stem='imagenet_zero_pad',
         arg_sc=resnet_v2.bit_arg_scope(groups=8, conv_biases=False)),
    dict(depth_or_blocks=resnet_v2.parse_blocks('8x1, 16x1/2', stride_unit='first',
                                                projection='first_unit'),
         num_classes=3, input_shape=(32, 32, 3), stem='imagenet_symmetric',
         arg_sc=resnet_v2.resnet_arg_scope(conv_biases=False)),
])
@pytest.mark.slow
def test_keras_file_round_trip_in_a_fresh_process(tmp_path, build):
  model = resnet_v2.build_model(**build)
  for weight in model.weights:  # Non-trivial values everywhere.
    weight.assign(np.random.default_rng(len(weight.path)).uniform(0.5, 1.5, weight.shape))
  images = np.random.default_rng(0).normal(size=(2, *build['input_shape'])).astype(np.float32)
  np.save(tmp_path / 'images.npy', images)
  np.save(tmp_path / 'expected.npy', keras.ops.convert_to_numpy(model(images)).astype(np.float32))
  model.save(tmp_path / 'model.keras')
  # A new process: nothing registered but by `import resnet_v2`, no custom_objects.
  script = (
      'import keras, numpy as np, sys, resnet_v2\n'
      f'model = keras.saving.load_model({str(tmp_path / "model.keras")!r})\n'
      f'out = keras.ops.convert_to_numpy(model(np.load({str(tmp_path / "images.npy")!r})))\n'
      f'np.testing.assert_array_equal(out.astype(np.float32), np.load({str(tmp_path / "expected.npy")!r}))\n'
      'print("layers", len(model.layers), model.name)\n')
  result = subprocess.run([sys.executable, '-c', script], env=run_cli.env(), cwd=run_cli.ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  assert result.returncode == 0, result.stdout[-3000:]
  assert f'layers {len(model.layers)} {model.name}' in result.stdout


def test_learning_rate_schedule_round_trips():
  schedule = optimization.WarmupDecay(0.4, 100, warmup_steps=10, decay='step',
                                      boundaries=[50, 80], warmup_lr=0.01)
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
  assert type(restored) is optimization.WarmupDecay
  assert [float(restored(s)) for s in (0, 20, 60, 90)] == [float(schedule(s)) for s in (0, 20, 60, 90)]


def test_plot_model_names_layers_by_their_slim_paths():
  model = resnet_v2.build_model(resnet_v2.parse_blocks('4x1'), 3, input_shape=(16, 16, 3))
  labels = ' '.join(node.get_label() or '' for node in keras.utils.model_to_dot(model).get_nodes())
  assert 'resnet_v2.block1.unit_1.bottleneck_v2.conv1' in labels
  assert 'resnet_v2/block1/unit_1/bottleneck_v2/conv1 ' in resnet_v2.layer_table(model)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('dot') is None,
                    reason="Graphviz's dot is not installed (apt install graphviz); .ci/run "
                    'installs it')
def test_describe_draws_the_network(tmp_path):
  output = run_cli.run('experiments.describe', '--blocks=4x1', '--image_size=16',
                       '--num_classes=3', f'--plot={tmp_path / "net.png"}').stdout
  assert (tmp_path / 'net.png').read_bytes().startswith(b'\x89PNG\r\n')
  assert 'resnet_v2/block1/unit_1/bottleneck_v2/conv1 ' in output


@pytest.mark.slow
def test_describe_says_what_to_install_for_plots(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.describe', '--blocks=4x1', '--image_size=16',
       f'--plot={tmp_path / "net.png"}'], cwd=run_cli.ROOT,
      env=dict(run_cli.env(), PATH=str(tmp_path)),  # no dot program on it
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  assert result.returncode == 1 and 'Traceback' not in result.stdout
  assert "--plot needs pydot and Graphviz's dot program" in result.stdout
  assert not os.path.exists(tmp_path / 'net.png')
