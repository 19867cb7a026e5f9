"""The published tf-slim checkpoints end to end, and runs that remember themselves.

No checkpoint can be downloaded here, so the test writes one as tf-slim did
(a TF1 Saver, slim's names, 1001 classes with 'background' first), evaluates
it through the real TFDS imagenet2012 builder on a tiny ILSVRC directory
with --labels_offset=1 and slim's Inception eval preprocessing, and checks the
reported numbers against an independent computation: TF1 ops for the
preprocessing, NumPy for the network.
"""

import io
import json
import re
import tarfile

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from experiments.lib import data
from experiments.lib import errors
from experiments.lib import preprocessing
from experiments.lib import train
from experiments.lib.config import Config
from tests import ilsvrc_fixture
from tests import numpy_resnet
from tests import run_cli
from tests import tiny_run

SPEC = [('block1', [(16, 4, 2)]), ('block2', [(32, 8, 1)])]  # = '4x1/2, 8x1'
SLIM_SCOPE = 'resnet_v2_50'  # as in the published checkpoint's names
SIZE = 33


def _tf1_inception_eval(jpegs, size):
  """tf-slim's preprocess_for_eval, run as TF1 ops in a TF1 graph and session."""
  with tf.Graph().as_default():
    data = tf.compat.v1.placeholder(tf.string, [])
    image = tf.image.decode_jpeg(data, channels=3)
    image = tf.image.convert_image_dtype(image, dtype=tf.float32)
    image = tf.image.central_crop(image, central_fraction=0.875)
    image = tf.expand_dims(image, 0)
    image = tf.compat.v1.image.resize_bilinear(image, [size, size], align_corners=False)
    image = tf.squeeze(image, [0])
    image = tf.multiply(tf.subtract(image, 0.5), 2.0)
    with tf.compat.v1.Session() as session:
      return np.stack([session.run(image, {data: jpeg}) for jpeg in jpegs])


def _jpeg(height, width, seed):
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def test_slim_inception_eval_equals_tf1_ops():
  jpegs = [_jpeg(h, w, i) for i, (h, w) in enumerate(
      [(37, 53), (101, 29), (64, 64), (15, 200), (299, 301)])]
  for size in (29, 64):
    reference = _tf1_inception_eval(jpegs, size)
    ours = np.stack([preprocessing.slim_inception_eval(preprocessing.decode(j), size)
                     for j in jpegs])
    assert np.max(np.abs(ours - reference)) <= 1e-5
    # TF2's resize samples half a pixel elsewhere: a test that could not see
    # that difference would prove nothing.
    tf2 = np.stack([(tf.image.resize(tf.image.central_crop(tf.image.convert_image_dtype(
        preprocessing.decode(j), tf.float32), 0.875), [size, size]) - 0.5) * 2 for j in jpegs])
    assert np.max(np.abs(tf2 - reference)) > 0.05


def test_imagenet_label_names_follow_tfds_synsets():
  source = data.load_source('imagenet2012', data_dir='/nonexistent', need_data=False)
  labels, names = data.labels_with_offset(source, 1)
  assert len(labels) == len(names) == 1001
  assert labels[:3] == ['background', 'n01440764', 'n01443537']
  assert names[1].startswith('tench') and names[2].startswith('goldfish')
  assert labels[-1] == 'n15075141' and names[-1].startswith('toilet tissue')


@pytest.fixture(scope='module')
def published(tmp_path_factory):
  """A slim-format 1001-class checkpoint and a prepared tiny ImageNet."""
  root = tmp_path_factory.mktemp('published')
  weights = numpy_resnet.random_weights(
      numpy_resnet.slim_weight_shapes(SPEC, 1001, SLIM_SCOPE), seed=3)
  checkpoint = numpy_resnet.write_tf1_checkpoint(weights, str(root / 'slim' / 'model.ckpt'))
  written = ilsvrc_fixture.write_ilsvrc_manual_dir(root / 'manual', num_validation=6,
                                                   image_size=(47, 61))
  return root, checkpoint, weights, written


def _validation_jpegs(written):
  with tarfile.open(written['val_tar']) as tar:
    return [tar.extractfile(name).read() for name in written['validation_files']]


def _reference(weights, jpegs):
  images = _tf1_inception_eval(jpegs, SIZE)
  logits = numpy_resnet.forward(images, weights, SPEC, SLIM_SCOPE, 1001)
  logits = logits - logits.max(-1, keepdims=True)
  return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


@pytest.mark.slow
def test_evaluate_a_published_checkpoint_with_labels_offset(published, tmp_path):
  root, checkpoint, weights, written = published
  result = run_cli.run(
      'experiments.imagenet', '--mode=eval', f'--data_dir={root / "tfds"}',
      f'--manual_dir={root / "manual"}', f'--model_dir={tmp_path}',
      '--blocks=4x1/2, 8x1', f'--init_checkpoint={checkpoint}',
      f'--init_checkpoint_scope={SLIM_SCOPE}', '--num_classes=1001',
      '--labels_offset=1', '--eval_preprocessing=slim_inception',
      f'--image_size={SIZE}', '--batch_size=4', '--precision=float32')
  match = re.search(r'eval at step 0: top-1 ([\d.]+)%, top-5 ([\d.]+)%, loss ([\d.]+) '
                    r'on 6 images', result.stdout)
  assert match, result.stdout[-3000:]
  probabilities = _reference(weights, _validation_jpegs(written))
  synsets = ['background'] + ilsvrc_fixture.imagenet_synsets()
  labels = np.array([synsets.index(s) for s in written['validation_synsets']])
  loss = -np.mean(np.log(probabilities[np.arange(6), labels]))
  ranks = (probabilities > probabilities[np.arange(6), labels][:, None]).sum(-1)
  assert float(match.group(3)) == pytest.approx(loss, abs=2e-4)
  assert float(match.group(1)) == pytest.approx(100 * np.mean(ranks < 1), abs=0.01)
  assert float(match.group(2)) == pytest.approx(100 * np.mean(ranks < 5), abs=0.01)
  # A label off by one (no --labels_offset) would give another loss.
  assert abs(loss + np.mean(np.log(probabilities[np.arange(6), labels - 1]))) > 1e-3


@pytest.mark.slow
def test_one_command_from_a_slim_checkpoint_to_a_servable(published, tmp_path):
  root, checkpoint, weights, written = published
  run_cli.run(
      'experiments.imagenet', '--mode=export', f'--data_dir={tmp_path / "unprepared"}',
      f'--model_dir={tmp_path / "run"}', '--blocks=4x1/2, 8x1',
      f'--init_checkpoint={checkpoint}', f'--init_checkpoint_scope={SLIM_SCOPE}',
      '--num_classes=1001', '--labels_offset=1', '--eval_preprocessing=slim_inception',
      f'--image_size={SIZE}', f'--export_dir={tmp_path / "servable"}',
      '--precision=float32')
  served = tf.saved_model.load(str(tmp_path / 'servable'))
  jpegs = _validation_jpegs(written)[:3]
  out = served.signatures['serving_default'](image_bytes=tf.constant(jpegs))
  expected = _reference(weights, jpegs)
  np.testing.assert_allclose(out['probabilities'], expected, atol=1e-5)
  synsets = ['background'] + ilsvrc_fixture.imagenet_synsets()
  top = np.argsort(-expected, -1)[:, :5]
  np.testing.assert_array_equal(out['class_ids'], top)
  assert out['classes'].numpy().astype(str).tolist() == [[synsets[i] for i in row]
                                                         for row in top]
  names = data.labels_with_offset(
      data.load_source('imagenet2012', data_dir='/nonexistent', need_data=False), 1)[1]
  assert out['class_names'].numpy().astype(str).tolist() == [[names[i] for i in row]
                                                             for row in top]
  assets = tmp_path / 'servable' / 'assets'
  assert (assets / 'labels.txt').read_text().splitlines()[:2] == ['background', 'n01440764']
  assert (assets / 'label_names.txt').read_text().splitlines()[1].startswith('tench')


# --- A run directory remembers its run ---------------------------------------

TINY = tiny_run.flags(precision='float32') + ['--show=0']


@pytest.mark.slow
def test_a_run_directory_remembers_its_run(tmp_path):
  run_cli.run('experiments.digits', *TINY, f'--model_dir={tmp_path}', '--train_steps=10',
              '--mode=train')
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['blocks'] == '4x1/2, 8x1' and saved['num_classes'] == 10
  assert saved['image_size'] == 8 and saved['train_steps'] == 10
  assert saved['precision'] == 'float32' and saved['mode'] == 'train'

  # Another recipe, given only the directory, exports the saved network.
  exported = run_cli.run('experiments.imagenet', '--mode=export', f'--model_dir={tmp_path}')
  assert 'Exported the SavedModel' in exported.stdout
  served = tf.saved_model.load(str(tmp_path / 'export'))
  out = served.signatures['serve_images'](images=tf.zeros([1, 8, 8, 3]))
  assert out['probabilities'].shape == (1, 10)

  # A changed network, class count or preprocessing is refused up front...
  for flag, message in [('--blocks=8x1', "--blocks='8x1' differs from '4x1/2, 8x1'"),
                        ('--image_size=16', '--image_size=16 differs from 8'),
                        ('--labels_offset=1', '--labels_offset=1 differs from 0')]:
    refused = run_cli.run('experiments.digits', f'--model_dir={tmp_path}', flag, check=False)
    assert refused.returncode == 1 and 'Traceback' not in refused.stdout
    assert message in refused.stdout and 'Training' not in refused.stdout
  # ... while what a later command may change, it changes.
  resumed = run_cli.run('experiments.digits', f'--model_dir={tmp_path}', '--show=0',
                        '--train_steps=20')
  assert re.search(r'Resumed from .*ckpt-10 at step 10', resumed.stdout)
  assert 'step 20/20' in resumed.stdout


def test_a_checkpoint_of_another_network_lists_what_differs(tmp_path):
  common = dict(dataset='digits', stem='cifar', batch_size=32, lr_reference_batch=32,
                warmup_epochs=0, steps_per_loop=5, log_every=5, checkpoint_every=10,
                seed=1, precision='float32', mode='train', model_dir=str(tmp_path))
  train.run(Config(blocks='4x1/2, 8x1', train_steps=10, **common))
  (tmp_path / 'config.json').unlink()  # as in a directory made by hand
  with pytest.raises(errors.RunDirError) as error:
    train.run(Config(blocks='4x1/2, 16x1', train_steps=20, **common))
  message = str(error.value)
  assert 'none of the checkpoints restores' in message and 'ckpt-10' in message
  assert re.search(r'resnet_v2\.block2\.unit_1\.bottleneck_v2\.conv3: checkpoint '
                   r'\[\(1, 1, 8, 32\), \(32,\)\], this network \[\(1, 1, 16, 64\), '
                   r'\(64,\)\]', message), message


def test_saved_config_round_trips_on_a_non_local_filesystem():
  """config.json goes through tf.io.gfile, as a gs:// run directory needs
  (TF's in-memory ram:// filesystem stands in for a bucket here)."""
  from experiments.lib import saved_config  # pylint: disable=g-import-not-at-top
  config = Config(dataset='digits', blocks='4x1/2, 8x1', stem='cifar',
                  lr_boundary_steps=(10, 20), model_dir='ram://run')
  saved_config.save(config, 'ram://run')
  saved = json.loads(tf.io.gfile.GFile('ram://run/config.json').read())
  assert saved['blocks'] == '4x1/2, 8x1' and saved['lr_boundary_steps'] == [10, 20]
  assert saved_config.load('ram://run')['network'] == '4x1/2, 8x1'
  assert saved_config.load('ram://elsewhere') is None
