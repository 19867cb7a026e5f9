"""--dataset=<a directory of TFRecord shards>, as tf-slim and the TPU wrote them."""

import io
import json
import re
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from experiments.lib import data
from experiments.lib import errors
from experiments.lib import input_pipeline
from experiments.lib import network
from experiments.lib import preprocessing
from experiments.lib import train
from experiments.lib.config import Config
from experiments.lib.data import shards
from experiments.lib.data import tfds as tfds_kind
from experiments.lib.errors import DataError
from tests import published_shards
from tests import run_cli


def _load(directory, run_dir=None):
  shards._counted.clear()  # pylint: disable=protected-access
  return data.load_source(str(directory), image_size=32,
                          run_dir=run_dir and str(run_dir),
                          remember=run_dir is not None)


def _context(pipelines, index):
  return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                    input_pipeline_id=index,
                                    num_replicas_in_sync=pipelines)


def test_published_shards_have_slims_labels_and_names(tmp_path):
  published_shards.write(tmp_path / 'data', 'train', 3, per_class=4)
  published_shards.write(tmp_path / 'data', 'validation', 1, per_class=2)
  (tmp_path / 'data' / 'README.txt').write_text('not a shard')
  source = _load(tmp_path / 'data')
  assert (source.num_train, source.num_eval) == (12, 6)
  # slim's 1001-way layout: label 0 is the unused 'background'.
  assert source.num_classes == 4 and source.first_label == 1
  assert list(source.labels) == ['background'] + [s for s, _ in published_shards.CLASSES]
  assert list(source.label_names) == ['background'] + [t for _, t in published_shards.CLASSES]
  labels = sorted(int(label) for _, label in source.read('eval', 1, 0))
  assert labels == [1, 1, 2, 2, 3, 3]
  # --labels_offset=-1 gives the 1000-way (here 3-way) head its names.
  assert data.labels_with_offset(source, -1)[1] == [t for _, t in published_shards.CLASSES]


def test_counts_are_remembered_in_the_run_directory(tmp_path):
  published_shards.write(tmp_path / 'data', 'train', 2, per_class=3)
  (tmp_path / 'run').mkdir()
  _load(tmp_path / 'data', tmp_path / 'run')
  kept = json.loads((tmp_path / 'run' / shards.COUNTS_FILE).read_text())
  assert sum(kept['shards'].values()) == 9
  # Other shards under the same directory are counted afresh.
  published_shards.write(tmp_path / 'data', 'validation', 1, per_class=1)
  assert _load(tmp_path / 'data', tmp_path / 'run').num_eval == 3
  # Then the shards are not read again: damaged, they would be refused.
  for shard in (tmp_path / 'data').glob('*-of-*'):
    shard.write_bytes(b'damaged ' * 20)
  source = _load(tmp_path / 'data', tmp_path / 'run')
  assert (source.num_train, source.num_eval) == (9, 3)
  with pytest.raises(DataError, match='cannot be read to the end'):
    _load(tmp_path / 'data')  # Without the run directory: counted, refused.


def test_an_incomplete_or_mixed_set_is_refused_by_name(tmp_path):
  published_shards.write(tmp_path / 'data', 'train', 4, per_class=2)
  (tmp_path / 'data' / 'train-00002-of-00004').unlink()
  with pytest.raises(DataError, match=r'holds 3 of the 4 train shards: '
                     r'train-00002-of-00004 missing'):
    _load(tmp_path / 'data')
  published_shards.write(tmp_path / 'data', 'train', 2, per_class=2)
  with pytest.raises(DataError, match='train shards of 2 different sets'):
    _load(tmp_path / 'data')


@pytest.mark.parametrize('pipelines', [2, 5])
def test_each_pipeline_reads_its_own_files_or_records(tmp_path, pipelines):
  # 4 shards: 2 pipelines read 2 shards each; 5 pipelines read every 5th record.
  published_shards.write(tmp_path / 'data', 'train', 4, per_class=5)
  published_shards.write(tmp_path / 'data', 'validation', 4, per_class=3)
  source = _load(tmp_path / 'data')
  seen = []
  for index in range(pipelines):
    images = [bytes(image.numpy()) for image, _ in source.read('train', pipelines, index)]
    assert len(images) == source.shard_examples('train', pipelines, index)
    seen += images
  assert len(seen) == len(set(seen)) == 15
  # Evaluation covers every example once however unequal the parts are.
  batches, weights = [], 0.0
  for index in range(pipelines):
    dataset = input_pipeline.eval_dataset_fn(source, 32, 2 * pipelines)(
        _context(pipelines, index))
    batches.append(len(list(dataset)))
    weights += sum(float(tf.reduce_sum(w)) for _, _, w, _ in dataset)
  assert weights == 9 and len(set(batches)) == 1


def _strip_record(with_box):
  """A 100x100 JPEG, red in its left 30 columns and blue elsewhere; the box,
  if any, is the red strip: (xmin, ymin, xmax, ymax) = (0, 0, 0.3, 1)."""
  image = np.zeros((100, 100, 3), np.uint8)
  image[:, :30] = (255, 0, 0)
  image[:, 30:] = (0, 0, 255)
  out = io.BytesIO()  # Full chroma, so that the strip's edge stays sharp.
  Image.fromarray(image).save(out, 'JPEG', quality=100, subsampling=0)
  return published_shards.example(
      out.getvalue(), 1, 'n01440764', 'tench', 100, 100, 'strip.JPEG',
      boxes=[(0.0, 0.0, 0.3, 1.0)] if with_box else ())


def _red_pixels(tmp_path, with_box, crops=60):
  """The red pixels of each of `crops` 64x64 training crops of the strip."""
  directory = tmp_path / ('box' if with_box else 'none')
  directory.mkdir()
  with tf.io.TFRecordWriter(str(directory / 'train-00000-of-00001')) as writer:
    writer.write(_strip_record(with_box))
  source = _load(directory)
  dataset = input_pipeline.train_dataset_fn(
      source, 64, 1, seed=3, start_step=0, end_step=crops, shuffle_buffer=0,
      preprocess=preprocessing.train_fn('inception', 64, True, flip=False))(
          _context(1, 0))
  return np.array([int(np.sum((images[0, ..., 0] > 0.5) & (images[0, ..., 2] < -0.5)))
                   for images, _, _, _ in dataset.take(crops)])


def test_the_training_crop_overlaps_the_records_box(tmp_path):
  # Worked by hand: a crop must cover a tenth of the box, 300 of its 3000
  # pixels; no crop is taller than 100, so it holds at least 3 red columns
  # at its left edge, of at most 100: at least 1.9 of its 64 output columns,
  # and its first output column samples red. Without the box, a crop
  # narrower than 70 that starts right of the strip has no red: many do.
  with_box = _red_pixels(tmp_path, True)
  assert np.all(with_box > 0), with_box
  without = _red_pixels(tmp_path, False)
  assert np.mean(without == 0) > 0.1, without


@pytest.mark.slow
def test_the_mission_command_trains_evaluates_and_exports_from_shards(tmp_path):
  published_shards.write(tmp_path / 'shards', 'train', 3, per_class=24)
  published_shards.write(tmp_path / 'shards', 'validation', 2, per_class=6, seed=1)
  flags = [f'--dataset={tmp_path / "shards"}', f'--model_dir={tmp_path / "run"}',
           '--blocks=8x1/2, 16x1', '--stem=cifar', '--image_size=32',
           '--batch_size=12', '--steps_per_loop=10', '--log_every=10',
           '--checkpoint_every=20', '--warmup_epochs=0', '--base_lr=0.05', '--lr_reference_batch=12',
           '--seed=1']
  out = run_cli.run('experiments.imagenet', *flags, '--train_steps=60').stdout
  assert 'Counting the records' in out
  top1 = float(re.search(r'eval at step 60: top-1 ([\d.]+)%.* on 18 images', out)[1])
  assert top1 > 60, out[-3000:]
  served = tf.saved_model.load(str(tmp_path / 'run' / 'export'))
  image = published_shards.jpeg(published_shards.class_image(
      2, np.random.default_rng(9)))
  answer = served.signatures['serving_default'](image_bytes=tf.constant([image]))
  assert answer['probabilities'].shape == (1, 4)
  assert answer['classes'][0, 0].numpy().decode() == 'n01443537'
  assert answer['class_names'][0, 0].numpy().decode() == 'goldfish, Carassius auratus'
  again = run_cli.run('experiments.imagenet', *flags, '--mode=eval').stdout
  assert 'Counting the records' not in again
  assert re.search(r'eval at step 60: .* on 18 images', again)


@pytest.mark.slow
def test_the_converters_shards_train_with_the_folders_classes(tmp_path):
  rng = np.random.default_rng(0)
  for split, count in (('train', 24), ('validation', 6)):
    for label, (synset, _) in enumerate(published_shards.CLASSES, 1):
      folder = tmp_path / 'images' / split / synset
      folder.mkdir(parents=True)
      for i in range(count):
        (folder / f'{i}.jpg').write_bytes(published_shards.jpeg(
            published_shards.class_image(label, rng)))
  run_cli.run('experiments.make_tfrecords', f'--images={tmp_path / "images"}',
              f'--output={tmp_path / "shards"}', '--train_shards=2')
  flags = ['--blocks=8x1/2, 16x1', '--stem=cifar', '--image_size=32',
           '--batch_size=12', '--steps_per_loop=10', '--log_every=10',
           '--warmup_epochs=0', '--base_lr=0.05', '--lr_reference_batch=12', '--seed=1',
           '--train_steps=40']
  out = run_cli.run('experiments.imagenet', f'--dataset={tmp_path / "shards"}',
                    f'--model_dir={tmp_path / "run"}', *flags).stdout
  assert 'Counting the records' not in out  # The manifest has the counts.
  assert float(re.search(r'eval at step 40: top-1 ([\d.]+)%', out)[1]) > 60, out[-3000:]
  # The folder's class ids: the export names them by the folders.
  served = tf.saved_model.load(str(tmp_path / 'run' / 'export'))
  answer = served.signatures['serving_default'](image_bytes=tf.constant(
      [published_shards.jpeg(published_shards.class_image(3, rng))]))
  assert answer['classes'][0, 0].numpy().decode() == published_shards.CLASSES[2][0]


def test_pretrained_names_get_the_labels_offset_of_their_classes(tmp_path):
  # One tiny image per ImageNet class, labelled 1..1000 as slim labels them.
  directory = tmp_path / 'imagenet'
  directory.mkdir()
  image = published_shards.jpeg(np.full((8, 8, 3), 128, np.uint8))
  with tf.io.TFRecordWriter(str(directory / 'validation-00000-of-00001')) as writer:
    for label, synset in enumerate(tfds_kind.imagenet_synsets(), 1):
      writer.write(published_shards.example(image, label, synset, '', 8, 8, 'x.JPEG'))
  source = _load(directory)
  assert source.imagenet and source.num_classes == 1001
  # The TPU's shards have no text: TFDS's ImageNet names stand in.
  assert source.label_names[1] == tfds_kind.imagenet_label_names()[0]
  for name, offset, classes in (('resnet_v2_50', 0, 1001),
                                ('keras_resnet50v2', -1, 1000)):
    config = Config(dataset=str(directory), network=name, mode='eval')
    resolved = train.resolve(config, network.resolve(config), source)
    assert (resolved.labels_offset, resolved.num_classes) == (offset, classes), name
  config = Config(dataset=str(directory), depth=50, labels_offset=-2)
  with pytest.raises(errors.FlagError, match='labels start at 1'):
    train.resolve(config, network.resolve(config), source)


@pytest.mark.slow
def test_two_workers_read_their_own_shards_like_two_pipelines_of_one_process(tmp_path):
  """launch.local on loopback: each worker reads its own 2 of the 4 training
  shards; evaluation covers all 15 images of the 3 validation shards, 10 on
  one worker and 5 on the other; the losses are those of one process with a
  pipeline per replica."""
  published_shards.write(tmp_path / 'shards', 'train', 4, per_class=8)
  published_shards.write(tmp_path / 'shards', 'validation', 3, per_class=5, seed=1)
  train = [f'--dataset={tmp_path / "shards"}', '--blocks=4x1/2, 8x1',
           '--stem=cifar', '--image_size=16', '--batch_size=8',
           '--lr_reference_batch=8', '--warmup_epochs=0', '--sync_batch_norm',
           '--deterministic', '--seed=1', '--train_steps=8', '--log_every=2',
           '--steps_per_loop=2', '--checkpoint_every=8', '--startup_timeout=600',
           '--precision=float32']
  process = run_cli.start('launch.local', '--workers=2', '--max_restarts=0',
                          '--grace_period=3', '--', sys.executable, '-m',
                          'experiments.imagenet', '--strategy=multi_worker',
                          f'--model_dir={tmp_path / "workers"}', *train)
  output = process.communicate(timeout=900)[0]
  assert process.returncode == 0, output[-4000:]
  assert re.search(r'\[worker 0\] .*eval at step 8: .* on 15 images', output), output[-3000:]
  run_cli.run('experiments.imagenet', '--strategy=mirrored', '--cpu_devices=2',
              '--input_per_replica', f'--model_dir={tmp_path / "single"}', *train)
  losses = {name: [r['loss'] for r in map(json.loads, open(tmp_path / name / 'metrics.jsonl'))
                   if r['split'] == 'train'] for name in ('workers', 'single')}
  assert len(losses['workers']) == 4
  np.testing.assert_allclose(losses['workers'], losses['single'], rtol=1e-4)
