"""Slim checkpoints load strictly and give the numbers of a NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import resnet_v2
from tests import numpy_resnet

# A tiny spec that still has every kind of unit: a projection shortcut
# (depth changes), an identity shortcut subsampled by 2, a projection with
# stride 2, and a plain identity unit.
SPEC = [('block1', [(16, 4, 1), (16, 4, 2)]),
        ('block2', [(32, 8, 2), (32, 8, 1)])]
SCOPE = 'resnet_v2_tiny'
NUM_CLASSES = 5
# slim's resnet_v2_50: (depth, depth_bottleneck, stride) of each unit.
R50 = [('block1', [(256, 64, 1)] * 2 + [(256, 64, 2)]),
       ('block2', [(512, 128, 1)] * 3 + [(512, 128, 2)]),
       ('block3', [(1024, 256, 1)] * 5 + [(1024, 256, 2)]),
       ('block4', [(2048, 512, 1)] * 3)]


def _blocks():
  return [resnet_v2.Block('block1', resnet_v2.bottleneck, SPEC[0][1]),
          resnet_v2.Block('block2', resnet_v2.bottleneck,
                          [dict(zip(('depth', 'depth_bottleneck', 'stride'), u))
                           for u in SPEC[1][1]])]  # the dict form, too


def _relative_error(ours, reference):
  """max |ours - reference| / max |reference|."""
  return np.abs(np.asarray(ours, np.float64) - reference).max() / np.abs(reference).max()


@pytest.fixture(scope='module')
def slim_checkpoint(tmp_path_factory):
  shapes = numpy_resnet.slim_weight_shapes(SPEC, NUM_CLASSES, SCOPE)
  weights = numpy_resnet.random_weights(shapes)
  path = numpy_resnet.write_tf1_checkpoint(
      weights, str(tmp_path_factory.mktemp('slim') / 'model.ckpt'))
  return path, weights


@pytest.fixture(scope='module')
def images():
  # Odd height, even width: catches any padding that depends on parity.
  return np.random.default_rng(1).normal(size=(2, 23, 18, 3)).astype(np.float32)


def test_logits_match_numpy_reference(slim_checkpoint, images):
  path, weights = slim_checkpoint
  model = resnet_v2.build_model(_blocks(), NUM_CLASSES, input_shape=(None, None, 3),
                                scope=SCOPE)
  loaded = resnet_v2.load_slim_checkpoint(model, path)
  assert len(loaded) == len(model.weights) == len(weights)

  reference = numpy_resnet.forward(images, weights, SPEC, SCOPE, NUM_CLASSES)
  logits = model(images, training=False)
  assert logits.shape == (2, NUM_CLASSES) and logits.dtype == tf.float32
  assert _relative_error(logits, reference) < 1e-4


def test_training_mode_uses_batch_statistics(slim_checkpoint, images):
  path, weights = slim_checkpoint
  model = resnet_v2.build_model(_blocks(), NUM_CLASSES, input_shape=(None, None, 3),
                                scope=SCOPE)
  resnet_v2.load_slim_checkpoint(model, path)
  reference = numpy_resnet.forward(images, weights, SPEC, SCOPE, NUM_CLASSES,
                                   training=True)
  assert _relative_error(model(images, training=True), reference) < 1e-4


def test_atrous_features_match_numpy_reference(slim_checkpoint, images):
  path, weights = slim_checkpoint
  model = resnet_v2.build_model(
      _blocks(), None, input_shape=(None, None, 3), scope=SCOPE,
      global_pool=False, output_stride=8)
  with pytest.raises(ValueError, match='unexpected in the checkpoint'):
    resnet_v2.load_slim_checkpoint(model, path)  # the checkpoint has logits
  resnet_v2.load_slim_checkpoint(model, path, skip_logits=True)
  reference = numpy_resnet.forward(images, weights, SPEC, SCOPE, None,
                                   output_stride=8, global_pool=False)
  features = model(images, training=False)
  assert features.shape == reference.shape == (2, 3, 3, 32)
  assert _relative_error(features, reference) < 1e-4


def test_skip_logits_fine_tunes_to_another_class_count(slim_checkpoint):
  path, weights = slim_checkpoint
  model = resnet_v2.build_model(_blocks(), 3, input_shape=(32, 32, 3), scope=SCOPE)
  with pytest.raises(ValueError, match=r'mis-shaped \(2\)(.|\n)*skip_logits=True'):
    resnet_v2.load_slim_checkpoint(model, path)
  fresh_logits = model.get_layer(f'{SCOPE}.logits').kernel.numpy()
  loaded = resnet_v2.load_slim_checkpoint(model, path, skip_logits=True)
  assert len(loaded) == len(weights) - 2
  np.testing.assert_array_equal(model.get_layer(f'{SCOPE}.logits').kernel.numpy(),
                                fresh_logits)
  conv1 = model.get_layer(f'{SCOPE}.conv1').kernel.numpy()
  np.testing.assert_array_equal(conv1, weights[f'{SCOPE}/conv1/weights'])


def test_mismatch_lists_missing_and_unexpected_and_assigns_nothing(slim_checkpoint):
  path, _ = slim_checkpoint
  bigger = _blocks() + [resnet_v2.resnet_v2_block('block3', 8, 1, 1)]
  model = resnet_v2.build_model(bigger, NUM_CLASSES, input_shape=(32, 32, 3),
                                scope=SCOPE)
  before = [w.numpy().copy() for w in model.weights]
  with pytest.raises(ValueError) as error:
    resnet_v2.load_slim_checkpoint(model, path)
  message = str(error.value)
  assert f'{SCOPE}/block3/unit_1/bottleneck_v2/conv1/weights' in message
  assert 'missing from the checkpoint' in message and 'mis-shaped' in message
  for old, weight in zip(before, model.weights):
    np.testing.assert_array_equal(old, weight.numpy())


def test_scope_mapping_and_bad_path(slim_checkpoint, tmp_path):
  path, _ = slim_checkpoint
  model = resnet_v2.build_model(_blocks(), NUM_CLASSES, input_shape=(32, 32, 3))
  with pytest.raises(ValueError, match="Nothing matched(.|\n)*checkpoint_scope"):
    resnet_v2.load_slim_checkpoint(model, path)
  resnet_v2.load_slim_checkpoint(model, path, checkpoint_scope=SCOPE)
  with pytest.raises(ValueError, match='No readable checkpoint'):
    resnet_v2.load_slim_checkpoint(model, str(tmp_path / 'nothing.ckpt'))


def test_readme_slim_snippet_loads_a_slim_checkpoint(tmp_path):
  # The README's slim way of building, word for word: the model gets Keras's
  # automatic name, and the scope comes from its weights.
  weights = numpy_resnet.random_weights(
      numpy_resnet.slim_weight_shapes(R50, 1001, 'resnet_v2_50'))
  path = numpy_resnet.write_tf1_checkpoint(weights, str(tmp_path / 'resnet_v2_50.ckpt'))

  inputs = keras.Input((224, 224, 3))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    net, end_points = resnet_v2.resnet_v2_50(inputs, num_classes=1001)
  model = keras.Model(inputs, net)
  resnet_v2.load_slim_checkpoint(model, path)

  assert model.name != 'resnet_v2_50' and 'resnet_v2_50/block4' in end_points
  image = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype(np.float32)
  reference = numpy_resnet.forward(image, weights, R50, 'resnet_v2_50', 1001)
  assert _relative_error(model(image, training=False), reference) < 1e-4


def test_a_keras_model_over_resnet_v2_loads_under_any_name(slim_checkpoint, images):
  path, weights = slim_checkpoint
  inputs = keras.Input((None, None, 3))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    net, _ = resnet_v2.resnet_v2(inputs, _blocks(), NUM_CLASSES, scope=SCOPE)
  model = keras.Model(inputs, net, name='my_classifier')
  assert len(resnet_v2.load_weights(model, path)) == len(weights)
  reference = numpy_resnet.forward(images, weights, SPEC, SCOPE, NUM_CLASSES)
  assert _relative_error(model(images, training=False), reference) < 1e-4


def test_a_keras_model_over_stack_blocks_dense_loads(tmp_path):
  # The body alone, built in a name scope: a checkpoint of its blocks loads.
  shapes = numpy_resnet.slim_weight_shapes(SPEC, None, SCOPE, in_channels=64)
  blocks_only = {k: v for k, v in numpy_resnet.random_weights(shapes).items()
                 if '/block' in k}
  path = numpy_resnet.write_tf1_checkpoint(blocks_only, str(tmp_path / 'body.ckpt'))
  inputs = keras.Input((16, 16, 64))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    with keras.name_scope(SCOPE):
      net = resnet_v2.stack_blocks_dense(inputs, _blocks())
  model = keras.Model(inputs, net)
  assert len(resnet_v2.load_slim_checkpoint(model, path)) == len(blocks_only)
  for weight in model.weights:
    key = weight.path.replace('/kernel', '/weights').replace('/bias', '/biases')
    np.testing.assert_array_equal(weight.numpy(), blocks_only[key])


def test_weights_under_several_scopes_are_named(slim_checkpoint):
  path, _ = slim_checkpoint
  inputs = keras.Input((32, 32, 3))
  with resnet_v2.arg_scope(resnet_v2.resnet_arg_scope()):
    net, _ = resnet_v2.resnet_v2(inputs, _blocks(), None, scope=SCOPE)
  outputs = keras.layers.Dense(3, name='extra_head')(keras.layers.Flatten()(net))
  model = keras.Model(inputs, outputs)
  with pytest.raises(ValueError, match=r"several scopes, \['extra_head', "
                     rf"'{SCOPE}'\]: pass scope="):
    resnet_v2.load_slim_checkpoint(model, path, skip_logits=True)
