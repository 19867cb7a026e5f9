"""--dataset=<a directory of TFRecord shards>: tf-slim's and the TPU's ImageNet.

A directory is read as shards when it holds 'train-NNNNN-of-NNNNN' and/or
'validation-NNNNN-of-NNNNN' files (the names of slim's
build_imagenet_data.py, the TPU's imagenet_to_gcs.py and
`experiments.make_tfrecords`), on any filesystem `tf.io.gfile` reaches.
Only whole sets are read: a shard missing from its set is an error that
names it, since a silently shorter epoch is how copies go wrong.

Labels are the shards' own. slim's ImageNet numbers its classes 1..1000 and
keeps 0 for 'background', so the source has 1001 classes, as the published
1001-class checkpoints do; --labels_offset=-1 gives 1000.

What a run needs to know before reading (examples per shard, the classes'
synsets and texts) comes from the converter's manifest.json. Published
shards have none: their records are then counted once, in parallel, and the
counts are remembered in the run directory (COUNTS_FILE), so a resumed run
or a later --mode=eval does not count again.

Each input pipeline reads its own shards when there are at least as many as
pipelines (slim's and the TPU's way of feeding many hosts), and its own
records of all of them otherwise.
"""

import json
import os
import time

from absl import logging

import numpy as np
import tensorflow as tf

from experiments.lib import files
from experiments.lib.data import shard_format
from experiments.lib.data import tfds as tfds_kind
from experiments.lib.data.source import Source
from experiments.lib.errors import DataError
from experiments.lib.errors import shortlist

# The --dataset values of this kind, for messages.
KNOWN = ('a directory of TFRecord shards (train-*-of-*, validation-*-of-*)',)
# Where a run directory remembers the counts of shards without a manifest.
COUNTS_FILE = 'shard_counts.json'
# The shards' split of each of a `Source`'s splits.
_SPLITS = {'train': 'train', 'eval': 'validation'}
# Shards read at once by one pipeline.
_CYCLE = 16
# What this process has counted, by (directory, shard names): a command
# loads its source more than once (BiT-HyperRule's choices, then the run).
_counted = {}


def _shard_names(directory):
  """{split: [shard names, in order]} of the shard sets in `directory`."""
  found = {}
  for name in tf.io.gfile.listdir(directory):
    match = shard_format.SHARD_NAME.fullmatch(name)
    if match and match['split'] in shard_format.SPLITS:
      found.setdefault(match['split'], set()).add(name)
  return {split: sorted(names) for split, names in found.items()}


def recognises(name):
  """True if --dataset=`name` is a directory holding train or validation shards."""
  return tf.io.gfile.isdir(name) and bool(_shard_names(name))


def _check_sets(directory, names):
  """Refuses a split whose shards are not one whole set.

  Raises:
    DataError: Naming the missing shards, or the two sets of one split.
  """
  for split, split_names in names.items():
    counts = {shard_format.SHARD_NAME.fullmatch(n)['count'] for n in split_names}
    if len(counts) > 1:
      raise DataError(
          f'{directory} holds {split} shards of {len(counts)} different sets '
          f'(-of-{", -of-".join(sorted(counts))}). Keep one conversion per '
          'directory: move the other set elsewhere.')
    expected = shard_format.shard_names(split, int(counts.pop()))
    missing = sorted(set(expected) - set(split_names))
    if missing:
      raise DataError(
          f'{directory} holds {len(split_names)} of the {len(expected)} '
          f'{split} shards: {shortlist(missing, 5)} missing. An incomplete '
          'copy would silently train on less data; copy the missing shards '
          '(or the directory) again.')


def _from_manifest(directory, names):
  """(examples per shard name, {label: (synset, text)}, first label) from
  manifest.json, or None if there is none or it lacks per-shard counts."""
  path = f'{directory.rstrip("/")}/{shard_format.MANIFEST}'
  if not tf.io.gfile.exists(path):
    return None
  manifest = shard_format.read_manifest(files.read_text(path))
  if manifest is None:
    return None
  counts = {}
  for split, entry in manifest['splits'].items():
    if entry['shards'] != names.get(split, []) or 'shard_examples' not in entry:
      return None
    counts.update(zip(entry['shards'], entry['shard_examples']))
  classes = {c['label']: (c['synset'], c['text']) for c in manifest['classes']}
  return counts, classes, manifest['label_offset']


def _count(directory, names):
  """(examples per shard name, {label: (synset, text)}, first label), read
  from every record, many shards at once, with a progress line."""
  paths = [f'{directory.rstrip("/")}/{n}' for split in sorted(names)
           for n in names[split]]
  spec = {key: shard_format.FEATURES[key] for key in
          (shard_format.LABEL, shard_format.SYNSET, shard_format.TEXT)}

  def parse(index, records):
    parsed = tf.io.parse_example(records, spec)
    return (index, parsed[shard_format.LABEL], parsed[shard_format.SYNSET],
            parsed[shard_format.TEXT])

  records = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(paths), dtype=tf.int64), paths)).interleave(
          lambda i, path: tf.data.TFRecordDataset(path).map(
              lambda record: (tf.fill([], i), record)),
          cycle_length=_CYCLE, num_parallel_calls=tf.data.AUTOTUNE,
          deterministic=False)
  batches = records.batch(4096).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  counts, classes = np.zeros(len(paths), np.int64), {}
  start = last = time.monotonic()
  logging.info('Counting the records of the %d shards in %s, once (the '
               'manifest.json of experiments.make_tfrecords would say).',
               len(paths), directory)
  try:
    for index, labels, synsets, texts in batches.as_numpy_iterator():
      counts += np.bincount(index, minlength=len(paths))
      for label, at in zip(*np.unique(labels, return_index=True)):
        classes.setdefault(int(label), (synsets[at].decode(),
                                        texts[at].decode()))
      if time.monotonic() - last > 10:
        last = time.monotonic()
        logging.info('Counted %d records, %.0f/s.', counts.sum(),
                     counts.sum() / (last - start))
  except tf.errors.OpError as e:
    raise DataError(f'The shards in {directory} cannot be read to the end '
                    f'({files.reason(e)}). A shard is damaged or cut short: '
                    'copy it again.') from None
  logging.info('Counted %d records in %.0f s.', counts.sum(),
               time.monotonic() - start)
  named = dict(zip((os.path.basename(p) for p in paths), counts.tolist()))
  return named, classes, min(classes, default=0)


def _remembered(directory, names, options):
  """The counts the run directory remembers for these shards; else counted
  now, and remembered if `options.remember`."""
  path = options.run_dir and os.path.join(options.run_dir, COUNTS_FILE)
  every = sorted(n for split_names in names.values() for n in split_names)
  if path and tf.io.gfile.exists(path):
    kept = json.loads(files.read_text(path))
    if kept['dataset'] == directory and sorted(kept['shards']) == every:
      return (kept['shards'], {int(label): tuple(c) for label, *c in
                               kept['classes']}, kept['first_label'])
  key = (directory, tuple(every))
  if key not in _counted:
    _counted[key] = _count(directory, names)
  counts, classes, first = _counted[key]
  if path and options.remember and tf.io.gfile.isdir(options.run_dir):
    kept = {'dataset': directory, 'shards': counts, 'first_label': first,
            'classes': [[label, *classes[label]] for label in sorted(classes)]}
    files.write_atomically(path, json.dumps(kept, indent=1) + '\n')
  return counts, classes, first


def _class_names(classes, first_label):
  """(labels, label names, is ImageNet) of label ids 0..max: the synsets and
  texts, 'background' below the first label (slim's label 0)."""
  num_classes = max(classes, default=-1) + 1
  synsets = [classes.get(i, ('', ''))[0] or str(i) for i in range(num_classes)]
  texts = [classes.get(i, ('', ''))[1] for i in range(num_classes)]
  for i in range(first_label):
    synsets[i], texts[i] = 'background', 'background'
  imagenet = synsets[first_label:] == tfds_kind.imagenet_synsets()
  if imagenet and not all(texts[first_label:]):  # The TPU's shards: no text.
    texts[first_label:] = tfds_kind.imagenet_label_names()
  return synsets, [t or s for t, s in zip(texts, synsets)], imagenet


def _example(with_boxes):
  """fn(record) -> (encoded image, label[, boxes]); boxes are float32
  [num_boxes, 4] in TF's (ymin, xmin, ymax, xmax) order."""

  def fn(record):
    parsed = shard_format.parse(record)
    image, label = parsed[shard_format.ENCODED], parsed[shard_format.LABEL]
    if not with_boxes:
      return image, label
    xmin, ymin, xmax, ymax = (parsed[key] for key in shard_format.BOX_KEYS)
    return image, label, tf.stack([ymin, xmin, ymax, xmax], axis=1)

  return fn


def load(directory, options):
  """The `Source` of a directory of shards.

  Args:
    directory: The directory (local, gs://, ...).
    options: The `Options`: `run_dir` and `remember` say where counts are
      remembered.

  Returns:
    A `Source` of encoded images with boxes, in the shards' label numbering.

  Raises:
    DataError: If a shard set is incomplete or a shard cannot be read.
  """
  names = _shard_names(directory)
  _check_sets(directory, names)
  known = _from_manifest(directory, names)
  counts, classes, first = known or _remembered(directory, names, options)
  empty = [n for n, count in counts.items() if not count]
  if empty:
    logging.warning('%d shards of %s hold no records: %s', len(empty),
                    directory, shortlist(sorted(empty), 5))
  paths = {ours: [f'{directory.rstrip("/")}/{n}' for n in names.get(theirs, [])]
           for ours, theirs in _SPLITS.items()}
  sizes = {path: counts[os.path.basename(path)]
           for split_paths in paths.values() for path in split_paths}
  labels, label_names, imagenet = _class_names(classes, first)

  def own_files(split, num_shards, shard_index):
    split_paths = paths[split]
    if len(split_paths) >= num_shards:
      return split_paths[shard_index::num_shards], False
    return split_paths, True

  def read(split, num_shards, shard_index, with_boxes=False):
    own, by_record = own_files(split, num_shards, shard_index)
    # `own or ['']`, taken to len(own): a split without shards is an empty
    # dataset of strings (an empty list has no type).
    records = tf.data.Dataset.from_tensor_slices(own or ['']).take(
        len(own)).interleave(
            tf.data.TFRecordDataset, cycle_length=min(_CYCLE, max(len(own), 1)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if by_record:
      records = records.shard(num_shards, shard_index)
    return records.map(_example(with_boxes),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def size(split, num_shards, shard_index):
    own, by_record = own_files(split, num_shards, shard_index)
    total = sum(sizes[path] for path in own)
    return len(range(shard_index, total, num_shards)) if by_record else total

  return Source(directory, len(labels), options.image_size,
                size('train', 1, 0), size('eval', 1, 0), encoded=True,
                augment='inception', read=read, labels=labels,
                label_names=label_names, first_label=first,
                imagenet=imagenet, sizes=size, boxes=True)
