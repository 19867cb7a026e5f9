"""`python -m experiments.make_tfrecords`: folders of images -> slim's shards.

The shards are read back with `tf.data.TFRecordDataset` and parsed with the
feature spec written out below from slim's build_imagenet_data.py, not with
the converter's own `shard_format`, so a drift from the published format
shows here.
"""

import json
import os
import re
import signal

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from experiments.lib import errors
from experiments.lib.data import shard_format
from experiments.lib import shard_plan
from experiments.lib import shard_writer
from tests import run_cli

# slim's keys and their types: strings and ints, one each; boxes, float
# lists of any length, and the box labels.
SCALARS = {
    'image/encoded': tf.string, 'image/format': tf.string,
    'image/filename': tf.string, 'image/colorspace': tf.string,
    'image/class/synset': tf.string, 'image/class/text': tf.string,
    'image/height': tf.int64, 'image/width': tf.int64,
    'image/channels': tf.int64, 'image/class/label': tf.int64,
}
LISTS = {
    'image/object/bbox/xmin': tf.float32, 'image/object/bbox/ymin': tf.float32,
    'image/object/bbox/xmax': tf.float32, 'image/object/bbox/ymax': tf.float32,
    'image/object/bbox/label': tf.int64,
}
SPEC = {**{k: tf.io.FixedLenFeature([], t) for k, t in SCALARS.items()},
        **{k: tf.io.VarLenFeature(t) for k, t in LISTS.items()}}
KIND = {tf.string: 'bytes_list', tf.int64: 'int64_list',
        tf.float32: 'float_list'}
SHARD = re.compile(r'(train|validation)-\d{5}-of-\d{5}')
# The first three ILSVRC2012 synsets: slim's labels 1, 2, 3.
SYNSETS = ('n01440764', 'n01443537', 'n01484850')


def _image(path, seed, size=(24, 20), mode='RGB'):
  rng = np.random.default_rng(seed)
  shape = (size[1], size[0]) + ((3,) if mode == 'RGB' else ())
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _folders(root, classes, per_class, splits=('train', 'validation'),
             size=(24, 20)):
  """root/<split>/<class>/<i>.jpg (and one PNG, one grey JPEG) per class."""
  seed = 0
  for split in splits:
    for name in classes:
      directory = root / split / name if split else root / name
      directory.mkdir(parents=True, exist_ok=True)
      for i in range(per_class):
        extension, mode = (('png', 'RGB') if i == 1 else
                           ('jpg', 'L') if i == 2 else ('jpg', 'RGB'))
        seed += 1
        _image(directory / f'{name}_{i}.{extension}', seed, size, mode)
  return str(root)


def _read(output):
  """{(split, synset, file name): parsed example} of every shard in output."""
  names = sorted(n for n in tf.io.gfile.listdir(output) if SHARD.fullmatch(n))
  examples = {}
  for name in names:
    for record in tf.data.TFRecordDataset(f'{output}/{name}'):
      proto = tf.train.Example.FromString(record.numpy())
      kinds = {key: feature.WhichOneof('kind')
               for key, feature in proto.features.feature.items()}
      assert kinds == {k: KIND[t] for k, t in {**SCALARS, **LISTS}.items()}
      parsed = tf.io.parse_single_example(record, SPEC)
      example = {k: (tf.sparse.to_dense(v) if k in LISTS else v).numpy()
                 for k, v in parsed.items()}
      key = (name.split('-')[0], example['image/class/synset'].decode(),
             example['image/filename'].decode())
      assert key not in examples, f'{key} is in the shards twice'
      examples[key] = example
  return examples


def _convert(images, output, layout='folders', on_bad_image='skip',
             shards=None, **kwargs):
  """Converts in this process, as the script does; returns the manifest."""
  if layout == 'folders':
    classes, splits = shard_plan.folder_splits(images)
  else:
    classes, splits = shard_plan.ilsvrc2012_splits(images, **kwargs)
  plan = shard_plan.cut(images, 1 if layout == 'ilsvrc2012' else 0, classes,
                        splits, shards or {})
  return shard_writer.write(plan, output, on_bad_image)


def test_folders_become_slim_examples_numbered_as_the_folder_reader(tmp_path):
  images = _folders(tmp_path / 'in', ['tulip', 'daisy', 'rose'], 4)
  output = str(tmp_path / 'out')
  manifest = _convert(images, output, shards={'train': 2})
  examples = _read(output)
  assert len(examples) == 24
  # The folder reader numbers the sorted folder names from 0.
  numbers = {'daisy': 0, 'rose': 1, 'tulip': 2}
  for (split, synset, filename), example in examples.items():
    path = os.path.join(images, split, synset, filename)
    with open(path, 'rb') as f:
      assert example['image/encoded'] == f.read()  # The bytes as they are.
    assert example['image/class/label'] == numbers[synset]
    assert example['image/class/text'] == synset.encode()
    kind, channels = ((b'PNG', 3) if filename.endswith('.png') else
                      (b'JPEG', 1) if filename.endswith('_2.jpg') else
                      (b'JPEG', 3))
    assert example['image/format'] == kind
    assert example['image/channels'] == channels
    assert (example['image/height'], example['image/width']) == (20, 24)
    assert not len(example['image/object/bbox/xmin'])
  assert [c['synset'] for c in manifest['classes']] == ['daisy', 'rose',
                                                        'tulip']
  assert manifest['label_offset'] == 0
  assert manifest['splits']['train']['examples'] == 12
  assert manifest['splits']['train']['shards'] == ['train-00000-of-00002',
                                                   'train-00001-of-00002']
  assert manifest['splits']['validation']['shards'] == [
      'validation-00000-of-00001']
  # Only the shards and the manifest are left.
  assert sorted(os.listdir(output)) == sorted(
      manifest['splits']['train']['shards'] +
      manifest['splits']['validation']['shards'] + ['manifest.json'])


def test_a_folder_without_validation_holds_out_every_tenth_image(tmp_path):
  images = _folders(tmp_path / 'in', ['a', 'b'], 10, splits=(None,))
  output = f'ram://{tmp_path.name}/shards'
  manifest = _convert(images, output)
  assert manifest['splits']['train']['examples'] == 18
  assert manifest['splits']['validation']['examples'] == 2
  examples = _read(output)
  held_out = sorted(k for k in examples if k[0] == 'validation')
  assert held_out == [('validation', 'a', 'a_9.jpg'),
                      ('validation', 'b', 'b_9.jpg')]
  assert _convert(images, output) == manifest  # A rerun finds it whole.
  with pytest.raises(errors.UserError, match='with other flags'):
    _convert(images, output, shards={'train': 2})


def test_empty_input_is_refused(tmp_path):
  (tmp_path / 'in' / 'train' / 'cats').mkdir(parents=True)
  (tmp_path / 'in' / 'train' / 'cats' / 'notes.txt').write_text('no image')
  result = run_cli.run('experiments.make_tfrecords',
                       f'--images={tmp_path / "in"}',
                       f'--output={tmp_path / "out"}', check=False)
  assert result.returncode != 0
  assert 'error: No images' in result.stdout
  assert 'Traceback' not in result.stdout
  assert not (tmp_path / 'out').exists()


def test_an_output_folder_with_other_files_is_refused(tmp_path):
  images = _folders(tmp_path / 'in', ['a', 'b'], 2)
  output = tmp_path / 'out'
  output.mkdir()
  (output / 'train-00000-of-00003').write_text('not ours')
  (output / 'notes.txt').write_text('keep me')
  with pytest.raises(errors.UserError, match='notes.txt'):
    _convert(images, str(output))
  assert sorted(os.listdir(output)) == ['notes.txt', 'train-00000-of-00003']
  assert (output / 'notes.txt').read_text() == 'keep me'


def test_undecodable_files_are_skipped_or_stop_the_run(tmp_path):
  images = _folders(tmp_path / 'in', ['a', 'b'], 3)
  bad = tmp_path / 'in' / 'train' / 'b' / 'b_9.jpg'
  bad.write_bytes(b'\xff\xd8\xff' + bytes(200))  # A JPEG header, no image.
  manifest = _convert(images, str(tmp_path / 'skip'))
  assert manifest['splits']['train'] == {
      'examples': 6, 'shards': ['train-00000-of-00001'], 'shard_examples': [6],
      'skipped': [str(bad)]}
  assert ('train', 'b', 'b_9.jpg') not in _read(str(tmp_path / 'skip'))

  result = run_cli.run('experiments.make_tfrecords', f'--images={images}',
                       f'--output={tmp_path / "stop"}', '--on_bad_image=stop',
                       check=False)
  assert result.returncode != 0
  assert f'error: {bad} is not an image that decodes' in result.stdout
  assert 'Traceback' not in result.stdout
  # No shard of the train split, no temporaries, no manifest.
  assert not [n for n in os.listdir(tmp_path / 'stop') if n.startswith(
      ('train', '.train', 'manifest'))]


def test_ilsvrc2012_flat_validation_with_labels_file_and_boxes(tmp_path):
  root = tmp_path / 'ILSVRC2012'
  for k, synset in enumerate(SYNSETS):
    (root / 'train' / synset).mkdir(parents=True)
    for i in range(2):
      _image(root / 'train' / synset / f'{synset}_{i + 1}.JPEG', 10 * k + i)
  (root / 'validation').mkdir()
  # Images 2, 3 and 5 of the 50,000; the labels file names all five.
  for number in (2, 3, 5):
    _image(root / 'validation' / f'ILSVRC2012_val_{number:08d}.JPEG', number)
  labels = tmp_path / 'imagenet_2012_validation_synset_labels.txt'
  labels.write_text('n01484850\nn01443537\nn01440764\nn01484850\nn01443537\n')
  boxes = tmp_path / 'imagenet_2012_bounding_boxes.csv'
  boxes.write_text('n01443537_2.JPEG,0.1000,0.2000,0.5000,0.6000\n'
                   'n01443537_2.JPEG,0.0000,0.0000,1.0000,0.9000\n'
                   'ILSVRC2012_val_00000005.JPEG,0.2500,0.2500,0.7500,0.7500\n')
  manifest = _convert(str(root), str(tmp_path / 'out'), layout='ilsvrc2012',
                      validation_labels=str(labels), bounding_boxes=str(boxes))
  examples = _read(str(tmp_path / 'out'))
  assert manifest['label_offset'] == 1 and len(manifest['classes']) == 1000
  assert manifest['classes'][0] == {'label': 1, 'synset': 'n01440764',
                                    'text': 'tench, Tinca tinca'}
  labels_of = {filename: (split, e['image/class/label'])
               for (split, _, filename), e in examples.items()}
  assert labels_of == {
      'n01440764_1.JPEG': ('train', 1), 'n01440764_2.JPEG': ('train', 1),
      'n01443537_1.JPEG': ('train', 2), 'n01443537_2.JPEG': ('train', 2),
      'n01484850_1.JPEG': ('train', 3), 'n01484850_2.JPEG': ('train', 3),
      'ILSVRC2012_val_00000002.JPEG': ('validation', 2),
      'ILSVRC2012_val_00000003.JPEG': ('validation', 1),
      'ILSVRC2012_val_00000005.JPEG': ('validation', 2)}
  boxed = examples[('train', 'n01443537', 'n01443537_2.JPEG')]
  np.testing.assert_allclose(boxed['image/object/bbox/xmin'], [0.1, 0.0])
  np.testing.assert_allclose(boxed['image/object/bbox/ymax'], [0.6, 0.9])
  assert list(boxed['image/object/bbox/label']) == [2, 2]
  assert boxed['image/class/text'] == b'goldfish, Carassius auratus'
  val = examples[('validation', 'n01443537', 'ILSVRC2012_val_00000005.JPEG')]
  np.testing.assert_allclose(val['image/object/bbox/ymin'], [0.25])
  assert not len(examples[('train', 'n01440764', 'n01440764_1.JPEG')][
      'image/object/bbox/xmin'])


def test_a_killed_conversion_finishes_on_rerun_with_each_image_once(tmp_path):
  # 144 training images of 640x480 in 36 shards, written one at a time:
  # long enough after the first shard for the kill to land before the last.
  images = _folders(tmp_path / 'in', [f'c{i}' for i in range(8)], 20,
                    splits=('train',), size=(640, 480))
  output = tmp_path / 'out'
  flags = (f'--images={images}', f'--output={output}', '--train_shards=36',
           '--num_threads=1')
  process = run_cli.start('experiments.make_tfrecords', *flags)
  first = output / 'train-00000-of-00036'
  # Until the first shard is complete and the next one is being written.
  while not (first.exists() and any('.partial-' in name
                                    for name in os.listdir(output))):
    assert process.poll() is None, process.stdout.read()
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (output / 'manifest.json').exists(), (
      'the converter finished before the kill')
  kept = os.stat(first)

  run_cli.run('experiments.make_tfrecords', *flags)
  examples = _read(str(output))
  # Each image once, in one split or the other.
  assert sorted(key[1:] for key in examples) == sorted(
      (f'c{c}', f'c{c}_{i}.' + ('png' if i == 1 else 'jpg'))
      for c in range(8) for i in range(20))
  names = sorted(os.listdir(output))
  assert names == sorted([f'train-{i:05d}-of-00036' for i in range(36)] +
                         ['validation-00000-of-00001', 'manifest.json'])
  # Kept as it was, not written again.
  assert (os.stat(first).st_ino, os.stat(first).st_mtime_ns) == (
      kept.st_ino, kept.st_mtime_ns)
  manifest = json.loads((output / 'manifest.json').read_text())
  assert manifest['splits']['train']['examples'] == 144


def test_shard_format_parses_ours_and_the_tpu_shards(tmp_path):
  images = _folders(tmp_path / 'in', ['a'], 1, splits=('train',))
  _convert(images, str(tmp_path / 'out'))
  ours = next(iter(tf.data.TFRecordDataset(
      str(tmp_path / 'out' / 'train-00000-of-00001'))))
  parsed = shard_format.parse(ours)
  assert parsed['image/class/synset'].numpy() == b'a'
  assert parsed['image/object/bbox/xmin'].shape == (0,)
  # imagenet_to_gcs.py writes no text and no boxes.
  feature = {
      'image/encoded': tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[b'\xff\xd8\xff'])),
      'image/class/label': tf.train.Feature(
          int64_list=tf.train.Int64List(value=[7])),
      'image/class/synset': tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[b'n01440764'])),
  }
  tpu = tf.train.Example(features=tf.train.Features(feature=feature))
  parsed = shard_format.parse(tpu.SerializeToString())
  assert parsed['image/class/label'].numpy() == 7
  assert parsed['image/class/text'].numpy() == b''
  assert parsed['image/format'].numpy() == b'JPEG'
  assert parsed['image/object/bbox/label'].shape == (0,)
