"""The SavedModel serves float pixels and encoded images, like the model."""

import dataclasses
import io
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import resnet_v2
from experiments.lib import config as config_lib
from experiments.lib import export
from experiments.lib import network
from experiments.lib import preprocessing
from experiments.lib import train
from tests import run_cli
from tests import tiny_run

SIZE = 16
# What serving_default does to encoded images: the small-image evaluation.
PREPROCESS = preprocessing.eval_fn('pad_crop', SIZE)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  model = resnet_v2.build_model(resnet_v2.parse_blocks('4x1/2, 8x1'), 5,
                                input_shape=(SIZE, SIZE, 3), stem='cifar')
  # Non-trivial BatchNorm statistics, so inference mode matters.
  for weight in model.weights:
    if 'moving' in weight.path:
      weight.assign(np.random.default_rng(0).uniform(0.5, 1.5, weight.shape))
  path = str(tmp_path_factory.mktemp('export') / 'model')
  export.export_saved_model(model, path, SIZE, PREPROCESS, top_k=3)
  return model, tf.saved_model.load(path), path


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def test_float_signature_matches_in_memory_model(exported):
  model, loaded, _ = exported
  pixels = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
  out = loaded.signatures['serve_images'](images=tf.constant(pixels))
  expected = tf.nn.softmax(model(preprocessing.normalize(pixels), training=False))
  np.testing.assert_allclose(out['probabilities'], expected, atol=1e-6)
  assert out['class_ids'].shape == (3, 3) and out['class_ids'].dtype == tf.int32
  np.testing.assert_array_equal(out['class_ids'][:, 0], np.argmax(expected, -1))
  assert out['classes'].dtype == tf.string  # labels: '0'..'4' by default
  np.testing.assert_array_equal(out['classes'].numpy().astype(str),
                                out['class_ids'].numpy().astype(str))
  np.testing.assert_allclose(out['scores'][:, 0], np.max(expected, -1), atol=1e-6)


def test_encoded_signature_decodes_like_evaluation(exported):
  model, loaded, _ = exported
  images = np.random.default_rng(2).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
  out = loaded.signatures['serving_default'](
      image_bytes=tf.constant([_png(image) for image in images]))
  expected = tf.nn.softmax(model(preprocessing.normalize(images.astype(np.float32)),
                                 training=False))
  np.testing.assert_allclose(out['probabilities'], expected, atol=1e-5)


def test_float_signature_has_a_static_shape(exported):
  _, loaded, _ = exported
  _, spec = loaded.signatures['serve_images'].structured_input_signature
  assert spec['images'].shape.as_list() == [None, SIZE, SIZE, 3]


def _tflite(path):
  """The serve_images signature converted with builtin ops only."""
  converter = tf.lite.TFLiteConverter.from_saved_model(
      path, signature_keys=['serve_images'])
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return converter.convert()


@pytest.mark.filterwarnings('ignore:.*tf.lite.Interpreter is deprecated')
def test_tflite_conversion_runs_like_the_saved_model(exported):
  _, loaded, path = exported
  interpreter = tf.lite.Interpreter(model_content=_tflite(path))
  assert {op['op_name'] for op in interpreter._get_ops_details()}.isdisjoint(
      {'VAR_HANDLE', 'READ_VARIABLE', 'DELEGATE_FLEX', 'CUSTOM'})
  pixels = np.random.default_rng(3).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
  got = interpreter.get_signature_runner('serve_images')(images=pixels)
  want = loaded.signatures['serve_images'](images=tf.constant(pixels))
  np.testing.assert_allclose(got['probabilities'], want['probabilities'], atol=1e-5)
  np.testing.assert_array_equal(got['class_ids'], want['class_ids'])
  for key in 'classes', 'class_names':
    np.testing.assert_array_equal(got[key], want[key].numpy())


@pytest.mark.filterwarnings('ignore:.*tf.lite.Interpreter is deprecated')
@pytest.mark.parametrize('name', ['bit_r50x1', 'timm_resnetv2_50'])
def test_the_families_layouts_convert_to_tflite(tmp_path, name):
  """create_model's BiT (zero-padded pool, GroupNorm + WS) and timm (-inf
  padded pool) layouts, a few units of them, through TFLite's builtin ops."""
  spec = dataclasses.replace(resnet_v2.get_model_spec(name), num_units=(1, 1, 1, 1),
                             width=0.5)
  model = resnet_v2.pretrained.build(spec, 5, (32, 32, 3))
  path = str(tmp_path / 'export')
  export.export_saved_model(model, path, 32, preprocessing.eval_fn('inception', 32))
  runner = tf.lite.Interpreter(model_content=_tflite(path)).get_signature_runner(
      'serve_images')
  pixels = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
  want = tf.saved_model.load(path).signatures['serve_images'](images=tf.constant(pixels))
  np.testing.assert_allclose(runner(images=pixels)['probabilities'],
                             want['probabilities'], atol=1e-5)


def test_float32_export_of_a_mixed_precision_run_converts(tmp_path):
  config = config_lib.Config(blocks='4x1/2, 8x1', stem='cifar',
                             precision='mixed_bfloat16',
                             export_precision='float32')
  net = network.resolve(config)
  model = network.build(net, config, config.precision, 5, SIZE)
  assert network.for_export(model, net, dataclasses.replace(
      config, export_precision='training'), config.precision, SIZE) is model
  twin = network.for_export(model, net, config, config.precision, SIZE)
  assert twin.compute_dtype == 'float32' and model.compute_dtype == 'bfloat16'
  for ours, theirs in zip(twin.weights, model.weights):
    np.testing.assert_array_equal(ours, theirs)
  images = np.random.default_rng(4).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
  np.testing.assert_allclose(twin(images, training=False),
                             model(images, training=False), atol=0.05)
  export.export_saved_model(model, str(tmp_path / 'bf16'), SIZE, PREPROCESS)
  with pytest.raises(Exception, match='(?i)bf16|bfloat16'):
    _tflite(str(tmp_path / 'bf16'))
  export.export_saved_model(twin, str(tmp_path / 'f32'), SIZE, PREPROCESS)
  assert _tflite(str(tmp_path / 'f32'))


def test_wrong_shape_is_a_clear_error(exported):
  _, loaded, _ = exported
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf'serve_images expects float32 pixels \[batch, {SIZE}, {SIZE}, 3\]'):
    loaded.signatures['serve_images'](images=tf.zeros([1, SIZE + 1, SIZE, 3]))


def test_undecodable_bytes_are_a_clear_error(exported):
  _, loaded, _ = exported
  good = _png(np.zeros((SIZE, SIZE, 3), np.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'expects JPEG or PNG file bytes(.|\n)*\[1 2\]'):
    loaded.signatures['serving_default'](
        image_bytes=tf.constant([good, b'not an image', b'GIF89a...']))


def test_export_replaces_atomically(exported, tmp_path):
  model, _, _ = exported
  path = str(tmp_path / 'model')
  export.export_saved_model(model, path, SIZE, PREPROCESS)
  export.export_saved_model(model, path, SIZE, PREPROCESS)  # over an old one
  assert sorted(p.name for p in tmp_path.iterdir()) == ['model']
  assert tf.saved_model.load(path).signatures['serving_default'] is not None


@pytest.mark.parametrize('images, message', [
    (np.zeros([SIZE, SIZE, 3], np.float32), r'expects float32 pixels \[batch, 16, 16, 3\]'),
    (np.zeros([1, SIZE, SIZE, 3, 1], np.float32), r'expects float32 pixels'),
    (np.zeros([0, SIZE, SIZE, 3], np.float32), 'serve_images got an empty batch'),
    (np.stack([np.zeros([SIZE, SIZE, 3]), np.full([SIZE, SIZE, 3], np.nan),
               np.zeros([SIZE, SIZE, 3]), np.full([SIZE, SIZE, 3], np.inf)]).astype(np.float32),
     r'NaN or infinite pixels in these images \(by index\):(.|\n)*\[1 3\]'),
])
def test_bad_pixels_are_clear_errors(exported, images, message):
  _, loaded, _ = exported
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    loaded.signatures['serve_images'](images=tf.constant(images))


def test_empty_batch_of_encoded_images_is_a_clear_error(exported):
  _, loaded, _ = exported
  with pytest.raises(tf.errors.InvalidArgumentError, match='serving_default got an empty batch'):
    loaded.signatures['serving_default'](image_bytes=tf.constant([], tf.string))


@pytest.mark.slow
def test_command_line_exports_a_mixed_precision_run_in_float32(tmp_path):
  run = tmp_path / 'run'
  run_cli.run('experiments.digits', '--blocks=4x1', '--stem=cifar', '--batch_size=16',
              '--train_steps=2', '--steps_per_loop=2', '--mode=train', '--show=0',
              '--precision=mixed_bfloat16', f'--model_dir={run}')
  run_cli.run('experiments.digits', '--mode=export', '--export_precision=float32',
              f'--model_dir={run}', f'--export_dir={tmp_path / "f32"}', '--show=0')
  assert _tflite(str(tmp_path / 'f32'))


def _onnx(path, tmp_path):
  """The serve_images signature converted by tf2onnx's command line (the
  README's ONNX path), loaded in onnxruntime; run(images) -> its outputs."""
  onnxruntime = pytest.importorskip('onnxruntime')
  subprocess.run([sys.executable, '-m', 'tf2onnx.convert', '--saved-model', path,
                  '--signature_def', 'serve_images', '--output', str(tmp_path / 'm.onnx')],
                 check=True, capture_output=True)
  session = onnxruntime.InferenceSession(str(tmp_path / 'm.onnx'))
  names = [o.name for o in session.get_outputs()]
  return lambda images: dict(zip(names, session.run(None, {'images': images})))


@pytest.mark.slow
@pytest.mark.parametrize('arg_sc', [resnet_v2.resnet_arg_scope(),
                                    resnet_v2.bit_arg_scope(groups=4)],
                         ids=['batch_norm', 'group_norm_ws'])
def test_serve_images_converts_to_onnx_and_runs_in_onnxruntime(tmp_path, arg_sc):
  """The README's ONNX path: tf2onnx's command line on the serve_images
  signature, run in onnxruntime, agrees with the SavedModel, strings too."""
  model = resnet_v2.build_model(resnet_v2.parse_blocks('4x1/2, 8x1'), 5,
                                input_shape=(SIZE, SIZE, 3), stem='cifar', arg_sc=arg_sc)
  rng = np.random.default_rng(0)
  for weight in model.weights:  # Not the initial values: every layer matters.
    weight.assign(rng.uniform(0.5, 1.5, weight.shape) if 'moving_variance' in weight.path
                  else rng.normal(0.02, 0.3, weight.shape))
  path = str(tmp_path / 'export')
  export.export_saved_model(model, path, SIZE, PREPROCESS, top_k=3,
                            labels=[f'class_{i}' for i in range(5)])
  images = rng.uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
  got = _onnx(path, tmp_path)(images)
  want = tf.saved_model.load(path).signatures['serve_images'](images=tf.constant(images))
  np.testing.assert_allclose(got['probabilities'], want['probabilities'], atol=1e-6)
  np.testing.assert_array_equal(got['class_ids'], want['class_ids'])
  assert got['classes'].tolist() == want['classes'].numpy().astype(str).tolist()
  assert got['classes'][0, 0].startswith('class_')


def _dtypes(path):
  """Every dtype that an op of the SavedModel in `path` takes or makes, in
  its graph and in every function the signatures call."""
  proto = saved_model_pb2.SavedModel()
  with open(f'{path}/saved_model.pb', 'rb') as f:
    proto.ParseFromString(f.read())
  graph = proto.meta_graphs[0].graph_def
  nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
  return {tf.dtypes.as_dtype(t).name for n in nodes for value in n.attr.values()
          for t in [value.type, *value.list.type] if t}


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:.*tf.lite.Interpreter is deprecated')
def test_a_mixed_precision_run_exports_float32_by_default(tmp_path):
  """--precision=auto trains in mixed_bfloat16 on CPUs with AMX; the export
  that ends the run, with the default flags, computes in float32 (the
  trained weights are float32 variables anyway), so TFLite and ONNX take it."""
  run = tmp_path / 'run'
  summary = train.run(config_lib.Config(**dict(
      tiny_run.RUN, precision='mixed_bfloat16', train_steps=2, steps_per_loop=2,
      mode='train', model_dir=str(run))))
  path = summary['export_dir']
  assert path == str(run / 'export')
  dtypes = _dtypes(path)
  assert 'float32' in dtypes and not dtypes & {'bfloat16', 'float16'}, dtypes
  served = tf.saved_model.load(path).signatures['serve_images']
  size = served.structured_input_signature[1]['images'].shape[1]  # digits: 8
  images = np.random.default_rng(5).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
  want = served(images=tf.constant(images))
  tflite = tf.lite.Interpreter(model_content=_tflite(path)).get_signature_runner(
      'serve_images')
  for got in tflite(images=images), _onnx(path, tmp_path)(images):
    np.testing.assert_allclose(got['probabilities'], want['probabilities'], atol=1e-5)
    np.testing.assert_array_equal(got['class_ids'], want['class_ids'])
