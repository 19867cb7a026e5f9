"""python -m experiments.predict: a run, an export or a name, asked about images."""

import csv
import json
import shutil

import h5py
import keras
from keras.src.legacy.saving import legacy_h5_format
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from experiments.lib import data
from experiments.lib import predictions
from experiments.lib import predictor
from tests import run_cli
from tests import tiny_run


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny digits run with its export, and a folder of its held-out digits
  (PNG, one GIF, one BMP in a sub-folder) with a file that does not decode."""
  root = tmp_path_factory.mktemp('predict')
  run_cli.run('experiments.digits', *tiny_run.flags(root / 'run'),
              '--train_steps=20', '--show=0')
  images = root / 'images'
  (images / 'more').mkdir(parents=True)
  source = data.load_source('digits')
  for index, (image, label) in enumerate(source.read('eval', 1, 0).take(6)):
    kind = {4: 'gif', 5: 'bmp'}.get(index, 'png')
    folder = images / 'more' if index % 2 else images
    Image.fromarray(image.numpy()).save(folder / f'digit{index}_{int(label)}.{kind}')
  (images / 'more' / 'broken.jpg').write_bytes(b'\xff\xd8\xff' + bytes(50))
  return root


def _served(export_dir, paths):
  """The export's serving_default on the files' bytes: probabilities."""
  signature = tf.saved_model.load(str(export_dir)).signatures['serving_default']
  return signature(image_bytes=tf.constant(
      [open(p, 'rb').read() for p in paths]))['probabilities'].numpy()


def test_a_run_answers_as_its_exports_serving_default(run, tmp_path):
  result = run_cli.run('experiments.predict', f'--model={run / "run"}',
                       str(run / 'images'), '--top_k=3',
                       f'--output={tmp_path / "answers.jsonl"}',
                       f'--gradcam={tmp_path / "maps"}')
  assert 'broken.jpg' in result.stdout and 'Traceback' not in result.stdout
  answers = [json.loads(line) for line in open(tmp_path / 'answers.jsonl')]
  assert [a['image'] for a in answers] == sorted(
      str(p) for p in (run / 'images').rglob('digit*'))
  pngs = [a for a in answers if a['image'].endswith('.png')]
  expected = _served(run / 'run' / 'export', [a['image'] for a in pngs])
  for answer, probabilities in zip(pngs, expected):
    best = np.argsort(-probabilities, kind='stable')[:3]
    assert answer['classes'] == [str(i) for i in best]  # Digits' names.
    np.testing.assert_allclose(answer['scores'], probabilities[best], rtol=1e-5)
  # A Grad-CAM map per image, at the image's own 8x8 resolution.
  for answer in answers:
    stem = answer['image'].rsplit('/', 1)[1].rsplit('.', 1)[0]
    cam = np.load(tmp_path / 'maps' / f'{stem}.npy')
    assert cam.shape == (8, 8) and cam.dtype == np.float32
    assert 0 <= cam.min() and cam.max() <= 1
    assert (tmp_path / 'maps' / f'{stem}.png').exists()
  for answer in answers:  # The table: a line per image, its classes.
    assert f'{answer["classes"][0]} {answer["scores"][0]:.3f}' in result.stdout


def test_a_checkpoint_answers_as_the_export_made_from_it(run, tmp_path):
  shutil.copytree(run / 'run', tmp_path / 'run', ignore=shutil.ignore_patterns('export'))
  classifier = predictor.open_classifier(str(tmp_path / 'run'))
  assert classifier.description.startswith('the checkpoint') and classifier.network
  paths = sorted(str(p) for p in (run / 'images').glob('*.png'))
  answers = predictions.classify(classifier, paths, top_k=10, batch_size=2)
  expected = _served(run / 'run' / 'export', paths)
  for answer, probabilities in zip(answers, expected):
    np.testing.assert_allclose(
        answer['scores'], probabilities[answer['class_ids']], rtol=1e-5, atol=1e-7)
    assert answer['class_ids'][0] == np.argmax(probabilities)


def test_an_export_directory_and_csv(run, tmp_path):
  classifier = predictor.open_classifier(str(run / 'run' / 'export'))
  assert classifier.network is None and classifier.labels == [str(i) for i in range(10)]
  paths = sorted(str(p) for p in (run / 'images').rglob('*.png'))
  answers = predictions.classify(classifier, paths, top_k=2, batch_size=8)
  predictions.write(answers, str(tmp_path / 'answers.csv'))
  rows = list(csv.DictReader(open(tmp_path / 'answers.csv')))
  assert [r['image'] for r in rows] == paths
  assert [r['class_1'] for r in rows] == [a['classes'][0] for a in answers]
  np.testing.assert_allclose([float(r['score_2']) for r in rows],
                             [a['scores'][1] for a in answers], rtol=1e-6)


def test_mistakes_are_one_paragraph_before_any_work(run, tmp_path):
  (tmp_path / 'bad').mkdir()
  (tmp_path / 'bad' / 'x.png').write_bytes(b'not a png')
  (tmp_path / 'taken.jsonl').write_text('mine\n')
  for flags, message in (
      ([str(tmp_path / 'bad')], 'None of the 1 files decodes as an image'),
      ([str(run / 'images'), f'--output={tmp_path / "taken.jsonl"}'],
       'exists; predict does not write over a file'),
      ([str(run / 'images'), f'--gradcam={tmp_path / "maps"}', '--gradcam_layer=block9'],
       "--gradcam_layer='block9' is not an end point")):
    result = run_cli.run('experiments.predict', f'--model={run / "run"}', *flags,
                         check=False)
    assert result.returncode != 0 and 'Traceback' not in result.stdout, result.stdout
    assert message in result.stdout, result.stdout[-2000:]
  assert (tmp_path / 'taken.jsonl').read_text() == 'mine\n'


def test_a_pretrained_name_with_its_file_names_imagenet_classes(tmp_path):
  reference = keras.applications.ResNet50V2(weights=None, classifier_activation=None)
  rng = np.random.default_rng(0)
  for weight in reference.weights:
    if 'moving_variance' in weight.path:
      weight.assign(rng.uniform(0.5, 1.5, weight.shape))
    else:
      weight.assign(rng.normal(0, 0.05 if len(weight.shape) > 1 else 0.1, weight.shape))
  with h5py.File(tmp_path / 'resnet50v2.h5', 'w') as f:  # As tf.keras wrote it.
    legacy_h5_format.save_weights_to_hdf5_group(f, reference)
  image = tmp_path / 'photo.jpg'
  Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(image)
  classifier = predictor.open_classifier(
      'keras_resnet50v2', init_checkpoint=str(tmp_path / 'resnet50v2.h5'))
  assert len(classifier.names) == 1000 and classifier.names[0] == 'tench, Tinca tinca'
  answer, = predictions.classify(classifier, [str(image)], top_k=5, batch_size=1)
  pixels = classifier.preprocess(tf.constant(image.read_bytes()))
  logits = reference(pixels[tf.newaxis], training=False)[0].numpy()
  assert answer['class_ids'] == list(np.argsort(-logits, kind='stable')[:5])
  assert answer['classes'][0] == classifier.names[answer['class_ids'][0]]
  # tf-slim's 1001 classes start with 'background'.
  labels, names = predictor._imagenet_classes(  # pylint: disable=protected-access
      predictor.resnet_v2.get_model_spec('resnet_v2_50'))
  assert labels[:2] == ['background', 'n01440764'] and names[1] == 'tench, Tinca tinca'
