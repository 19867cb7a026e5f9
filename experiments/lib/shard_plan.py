"""What a conversion to TFRecord shards writes: which image, which label, where.

A `Plan` lists, for each split, the images of each shard with their label
and boxes, and the classes with their synset and text. It is a pure
function of the input's listing and the flags, so that a rerun after an
interruption writes the missing shards exactly as the first run would have
(`Plan.fingerprint` tells a rerun whether the kept shards are of the same
plan).

Two layouts:
* 'folders': class sub-folders, read by the folder reader's rules (its
  split rule and its class numbering, from 0), so a run can switch between
  the folder and its shards and keep its class ids.
* 'ilsvrc2012': ImageNet's own folders, numbered as slim numbers them
  (1..1000 over the sorted 1000 synsets, 0 unused), validation in synset
  folders or flat with a labels file, boxes from slim's CSV.
"""

import dataclasses
import hashlib
import json
import math
import os
import re
from typing import Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from experiments.lib.data import folders
from experiments.lib.data import shard_format
from experiments.lib.data import tfds as tfds_kind
from experiments.lib.data.source import IMAGE_EXTENSIONS
from experiments.lib.data.source import Options
from experiments.lib.errors import DataError
from experiments.lib.errors import FlagError
from experiments.lib.errors import shortlist

# Shards this big by default: big enough that reading one is mostly
# streaming, small enough that a split has many (slim's ImageNet train
# shards hold about 137 MB each).
TARGET_SHARD_BYTES = 150 << 20
# Files whose size is read to estimate a split's bytes (stat is slow on
# object stores, and a million-file split needs no exact total).
_SIZE_SAMPLE = 2000
# slim shuffles a split with a fixed seed before cutting it into shards, so
# that each shard mixes the classes; so do we (not slim's seed: its order
# came from Python 2's `random`).
_SHUFFLE_SEED = 12345


@dataclasses.dataclass(frozen=True)
class Item:
  """One image to convert: its file, class label and relative boxes."""
  path: str
  label: int
  boxes: Tuple[Tuple[float, float, float, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything a conversion writes, but the images' bytes.

  Attributes:
    root: The input folder (file names are recorded relative to it).
    label_offset: The label of the first class.
    classes: (synset, text) of each class, in label order.
    shards: {split: [the items of each shard]}.
  """
  root: str
  label_offset: int
  classes: Sequence[Tuple[str, str]]
  shards: Mapping[str, Sequence[Sequence[Item]]]

  def num_examples(self, split):
    return sum(len(items) for items in self.shards[split])

  def fingerprint(self):
    """A digest of the plan: equal for equal listings and settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps([shard_format.FORMAT_VERSION, self.label_offset,
                              list(self.classes)]).encode())
    for split in sorted(self.shards):
      for index, items in enumerate(self.shards[split]):
        digest.update(f'\n{split} {index}\n'.encode())
        for item in items:
          # Relative to the root, so that a moved input folder is the same.
          name = item.path[len(self.root):] if item.path.startswith(
              self.root) else item.path
          digest.update(json.dumps([name, item.label, item.boxes]).encode())
    return digest.hexdigest()[:16]


def cut(root, label_offset, classes, splits, num_shards):
  """The `Plan` that shuffles each split and cuts it into shards.

  Args:
    root: The input folder.
    label_offset: The label of the first class.
    classes: (synset, text) per class.
    splits: {split: [Item]} in listing order (empty splits are left out).
    num_shards: {split: shards wanted, or None for about
      TARGET_SHARD_BYTES each}.

  Raises:
    DataError: If there are no images at all.
    FlagError: If more shards are asked for than the split has images.
  """
  if not any(splits.values()):
    raise DataError(
        f'No images to convert in {root}: expected class folders of image '
        'files, or train/ and validation/ folders holding them (see --layout).')
  shards = {}
  for split, items in splits.items():
    if not items:
      continue
    order = np.random.default_rng(_SHUFFLE_SEED).permutation(len(items))
    items = [items[i] for i in order]
    count = num_shards.get(split) or default_num_shards(items)
    if not 1 <= count <= min(len(items), shard_format.MAX_SHARDS):
      raise FlagError(
          f'--{split}_shards={count}, but the {split} split has '
          f'{len(items)} images: give from 1 to '
          f'{min(len(items), shard_format.MAX_SHARDS)} shards.')
    bounds = np.linspace(0, len(items), count + 1).astype(int)
    shards[split] = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
  return Plan(root, label_offset, list(classes), shards)


def default_num_shards(items):
  """Shards of about TARGET_SHARD_BYTES, from the files' estimated total."""
  step = max(1, len(items) // _SIZE_SAMPLE)
  sample = items[::step]
  total = sum(tf.io.gfile.stat(item.path).length for item in sample)
  total *= len(items) / len(sample)
  count = math.ceil(total / TARGET_SHARD_BYTES)
  return max(1, min(count, len(items), shard_format.MAX_SHARDS))


def folder_splits(root, bounding_boxes=None):
  """(classes, {split: [Item]}) of class folders, by the folder reader.

  The folder reader's 'eval' split (validation/, val/ or test/, or every
  10th image) becomes slim's 'validation'; labels count from 0, and a
  class's synset and text are its folder's name.

  Args:
    root: The folder.
    bounding_boxes: slim's bounding-box CSV, or None.

  Raises:
    DataError: If the folder has no images, as the folder reader says.
  """
  source = folders.load(root, Options(data_dir=None, manual_dir=None,
                                      num_classes=0, image_size=224,
                                      need_data=True))
  classes = list(source.labels)
  # The reader's label of a file is its class folder's place in `classes`.
  label_of = {name: label for label, name in enumerate(classes)}
  boxes = read_boxes(bounding_boxes) if bounding_boxes else {}
  items = {
      ours: [Item(f, label_of[os.path.basename(os.path.dirname(f))],
                  tuple(boxes.get(os.path.basename(f), ())))
             for f in source.files[theirs]]
      for ours, theirs in (('train', 'train'), ('validation', 'eval'))}
  assert [i.label for i in items['train']] == list(source.train_labels)
  return [(name, name) for name in classes], items


def _metadata_texts(path, synsets):
  """The text of each synset from slim's imagenet_metadata.txt.

  Raises:
    DataError: If a synset has no line 'synset<TAB>text' in the file.
  """
  texts = {}
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      synset, _, text = line.rstrip('\n').partition('\t')
      texts[synset.strip()] = text.strip()
  missing = [s for s in synsets if not texts.get(s)]
  if missing:
    raise DataError(
        f'--imagenet_metadata={path} has no text for {len(missing)} of the '
        f'1000 ImageNet synsets ({shortlist(missing, 5)}). It should be '
        "slim's imagenet_metadata.txt, one 'synset<TAB>text' line per synset; "
        'or leave the flag out to take the names TFDS ships.')
  return [texts[s] for s in synsets]


def imagenet_classes(metadata=None):
  """(synset, text) of ImageNet's 1000 classes, in slim's label order."""
  synsets = tfds_kind.imagenet_synsets()
  if metadata:
    return list(zip(synsets, _metadata_texts(metadata, synsets)))
  return list(zip(synsets, tfds_kind.imagenet_label_names()))


def read_boxes(path):
  """{file name: [(xmin, ymin, xmax, ymax)]} from slim's bounding-box CSV.

  The CSV is `process_bounding_boxes.py`'s output: one box per line,
  'n00007846_64193.JPEG,0.0060,0.2620,0.7545,0.9940', relative coordinates.

  Raises:
    DataError: Naming the first line that is not of that form.
  """
  boxes = {}
  with tf.io.gfile.GFile(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      fields = line.strip().split(',')
      try:
        box = tuple(float(v) for v in fields[1:])
      except ValueError:
        box = ()
      if len(fields) != 5 or len(box) != 4 or not all(0 <= v <= 1 for v in box):
        raise DataError(
            f'Line {number} of --bounding_boxes={path} is {line.strip()!r}; '
            "expected slim's 'file.JPEG,xmin,ymin,xmax,ymax' with coordinates "
            'from 0 to 1 (the output of process_bounding_boxes.py).')
      boxes.setdefault(fields[0], []).append(box)
  return boxes


_VAL_NUMBER = re.compile(r'ILSVRC2012_val_(\d{8})\.')


def _flat_validation_labels(files, labels_path):
  """The synset of each flat validation file, from slim's labels file.

  Line i of imagenet_2012_validation_synset_labels.txt is the synset of
  ILSVRC2012_val_<i, 8 digits>.JPEG, so files named that way take the line
  of their number (a subset of the 50,000 is fine); other names take the
  lines in sorted file-name order, and then their count must match.
  """
  with tf.io.gfile.GFile(labels_path) as f:
    lines = f.read().split()
  names = [os.path.basename(f) for f in files]
  numbers = [_VAL_NUMBER.match(n) for n in names]
  if all(numbers):
    beyond = [n for n, m in zip(names, numbers) if int(m.group(1)) > len(lines)]
    if not beyond:
      return [lines[int(m.group(1)) - 1] for m in numbers]
    problem = (f'it has {len(lines)} lines, and {shortlist(beyond, 3)} '
               'number beyond them')
  elif len(lines) == len(files):
    return lines
  else:
    problem = (f'it has {len(lines)} lines for {len(files)} images not all '
               'named ILSVRC2012_val_<number>')
  raise DataError(
      f'--validation_labels={labels_path} does not fit the flat validation '
      f'folder: {problem}. Give slim\'s imagenet_2012_validation_synset_'
      'labels.txt (50,000 lines, line i the synset of '
      'ILSVRC2012_val_<i>.JPEG).')


def _synset_items(directory, label_of, boxes):
  """[Item] of a folder of synset folders, listed by the folder reader."""
  classes, files, labels = folders.folder_files(directory)
  unknown = [c for c in classes if c not in label_of]
  if unknown:
    raise DataError(
        f'{directory} has folders that are not ImageNet synsets: '
        f'{shortlist(unknown, 5)}. --layout=ilsvrc2012 takes the 1000 '
        'ILSVRC2012 synset folders (n01440764, ...); for other classes use '
        '--layout=folders.')
  return [Item(f, label_of[classes[l]],
               tuple(boxes.get(os.path.basename(f), ())))
          for f, l in zip(files, labels)]


def ilsvrc2012_splits(root, validation_labels=None, metadata=None,
                      bounding_boxes=None):
  """(classes, {split: [Item]}) of ILSVRC2012's folders, numbered as slim.

  Args:
    root: A folder with train/ (synset folders of JPEGs) and/or validation/
      (or val/): synset folders, as slim's
      preprocess_imagenet_validation_data.py leaves it, or flat.
    validation_labels: slim's imagenet_2012_validation_synset_labels.txt,
      for a flat validation folder.
    metadata: slim's imagenet_metadata.txt, for slim's class texts instead
      of TFDS's.
    bounding_boxes: slim's bounding-box CSV.

  Raises:
    DataError: For a missing folder or labels file, or folders that are not
      synsets.
  """
  classes = imagenet_classes(metadata)
  label_of = {synset: i + 1 for i, (synset, _) in enumerate(classes)}
  boxes = read_boxes(bounding_boxes) if bounding_boxes else {}
  train_dir = os.path.join(root, 'train')
  val_dir = next((os.path.join(root, name) for name in ('validation', 'val')
                  if tf.io.gfile.isdir(os.path.join(root, name))), None)
  if not tf.io.gfile.isdir(train_dir) and val_dir is None:
    raise DataError(
        f'--images={root} has neither a train/ nor a validation/ folder. '
        '--layout=ilsvrc2012 reads ILSVRC2012 as extracted: train/<synset>/'
        '*.JPEG, and validation/ with synset folders or flat '
        'ILSVRC2012_val_*.JPEG files (then with --validation_labels).')
  items = {'train': [], 'validation': []}
  if tf.io.gfile.isdir(train_dir):
    items['train'] = _synset_items(train_dir, label_of, boxes)
  if val_dir and any(tf.io.gfile.isdir(os.path.join(val_dir, name))
                     for name in tf.io.gfile.listdir(val_dir)):
    items['validation'] = _synset_items(val_dir, label_of, boxes)
  elif val_dir:
    files = [os.path.join(val_dir, name)
             for name in sorted(tf.io.gfile.listdir(val_dir))
             if name.lower().endswith(IMAGE_EXTENSIONS) and
             folders.is_readable_image(os.path.join(val_dir, name))]
    if files and not validation_labels:
      raise DataError(
          f'{val_dir} holds its images flat, without synset folders, so '
          'their classes must come from --validation_labels: slim\'s '
          'imagenet_2012_validation_synset_labels.txt (line i is the synset '
          'of ILSVRC2012_val_<i>.JPEG).')
    synsets = _flat_validation_labels(files, validation_labels) if files else []
    unknown = sorted(set(synsets) - set(label_of))
    if unknown:
      raise DataError(f'--validation_labels={validation_labels} names '
                      f'synsets that are not ImageNet\'s: '
                      f'{shortlist(unknown, 5)}.')
    items['validation'] = [
        Item(f, label_of[s], tuple(boxes.get(os.path.basename(f), ())))
        for f, s in zip(files, synsets)]
  return classes, items
