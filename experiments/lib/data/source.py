"""What a data set is to a run (`Source`), and the sources made from one.

Every kind of --dataset (see `experiments.lib.data`) returns a `Source`:
what the data is (classes, size, how to augment it) and a function giving
one worker's shard of a split as a `tf.data.Dataset` of (image, label),
where `image` is either encoded bytes (decoded, and skipped if corrupt, by
the input pipeline) or a uint8 array. The functions here work on any
source, whatever its kind: its model's labels and a few-shot subset.
"""

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from experiments.lib.errors import DataError

# The files read as encoded images, and so the formats the input pipeline
# decodes.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
# How many file names a message or warning about bad files lists.
SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Source:
  """A data set and how to read and augment it.

  Attributes:
    name: As given to --dataset.
    num_classes: Number of labels.
    image_size: Default training/eval image size.
    num_train: Examples in the training split.
    num_eval: Examples in the evaluation split.
    encoded: True if images arrive as encoded bytes.
    augment: 'inception' (random-resized crop + flip) or 'pad_crop'.
    pad: Padding for 'pad_crop'.
    flip: Random left-right flips in training (not for digits).
    read: read(split, num_shards, shard_index) -> a Dataset of (image, label)
      for split 'train' or 'eval', in a fixed order (the input pipeline
      shuffles).
    labels: The string label of each class: ImageNet's synset ids, CIFAR's
      class names, the class folders' names, '0'..'9' for digits.
    label_names: Human-readable names, where they differ from `labels`
      (ImageNet's).
    files: For data read from files, {split: the file of each example, in
      the order `read(split, 1, 0)` gives them}, to name bad files.
    train_labels: The label of each training example in that order, where
      it is known without reading the examples (None: read them).
    first_label: The lowest label used: 1 for tf-slim's ImageNet, whose
      label 0 ('background') has no examples.
    imagenet: True if the classes from `first_label` on are ImageNet's 1000
      synsets in their sorted order, as the pretrained networks number them.
    sizes: sizes(split, num_shards, shard_index) -> the examples of
      `read(split, num_shards, shard_index)`, for a source that shares out
      files rather than records (None: records, see `shard_examples`).
    boxes: True if `read(..., with_boxes=True)` gives each training example's
      object boxes as a third element, float32 [num_boxes, 4] in TF's
      (ymin, xmin, ymax, xmax) order, relative to the image.
  """
  name: str
  num_classes: int
  image_size: int
  num_train: int
  num_eval: int
  encoded: bool
  augment: str
  read: Callable[..., tf.data.Dataset]
  labels: Sequence[str]
  label_names: Optional[Sequence[str]] = None
  pad: int = 4
  flip: bool = True
  files: Optional[Mapping[str, Sequence[str]]] = None
  train_labels: Optional[Sequence[int]] = None
  first_label: int = 0
  imagenet: bool = False
  sizes: Optional[Callable[..., int]] = None
  boxes: bool = False

  def shard_examples(self, split, num_shards, shard_index):
    """The examples of `read(split, num_shards, shard_index)`.

    An input pipeline reads that many per epoch; evaluation pads each
    pipeline's part to the longest.
    """
    if self.sizes is not None:
      return self.sizes(split, num_shards, shard_index)
    total = self.num_train if split == 'train' else self.num_eval
    return len(range(shard_index, total, num_shards))


@dataclasses.dataclass(frozen=True)
class Options:
  """What `load_source` was given besides --dataset; each kind reads its own.

  Attributes:
    data_dir: The TFDS data directory (None for TFDS's default).
    manual_dir: Where the ImageNet tars are (None: <data_dir>/downloads/manual).
    num_classes: Classes of synthetic data.
    image_size: Image size of synthetic or folder data.
    need_data: False if only the data set's description is needed (an
      export).
    run_dir: The run's directory, where what is learnt by reading the whole
      data once (the records of shards without a manifest) is remembered;
      None for none.
    remember: Whether to write there what is not remembered yet (only the
      process that writes the run's files does).
  """
  data_dir: Optional[str]
  manual_dir: Optional[str]
  num_classes: int
  image_size: int
  need_data: bool
  run_dir: Optional[str] = None
  remember: bool = False


def labels_with_offset(source, labels_offset):
  """(labels, names) of the model's classes: the source's, after the offset.

  With tf-slim's --labels_offset=1, class 0 is 'background'; a negative
  offset drops the source's first classes (slim shards' unused
  'background', with -1).
  """
  names = list(source.label_names or source.labels)
  if labels_offset < 0:
    return list(source.labels)[-labels_offset:], names[-labels_offset:]
  padding = (['background'] if labels_offset == 1
             else [f'offset_{i}' for i in range(labels_offset)])
  return padding + list(source.labels), padding + names


def few_shot(source, examples_per_class, seed):
  """The source with only `examples_per_class` training examples per class.

  The examples of each class are drawn without replacement with `seed`,
  before the split is sharded, so every worker sees the same subset (as
  BiT's `--examples_per_class`). They are read once and kept in memory
  (as encoded files or arrays), so that the many epochs of a few-shot run do
  not read the whole split each time. The evaluation split is unchanged.

  Raises:
    DataError: If a class has fewer training examples than asked for.
  """
  examples = source.read('train', 1, 0)
  labels = np.asarray(source.train_labels if source.train_labels is not None
                      else [int(label) for _, label in
                            examples.map(lambda _, label: label)])
  rng = np.random.default_rng(seed)
  chosen = []
  for label in range(source.num_classes):
    indices = np.flatnonzero(labels == label)
    if len(indices) < examples_per_class:
      raise DataError(
          f'--examples_per_class={examples_per_class}, but class '
          f'{source.labels[label]!r} of {source.name!r} has only '
          f'{len(indices)} training examples.')
    chosen.append(rng.permutation(indices)[:examples_per_class])
  chosen = np.sort(np.concatenate(chosen))
  keep = tf.constant(np.isin(np.arange(len(labels)), chosen))
  images, kept_labels = zip(*examples.enumerate().filter(
      lambda index, _: keep[index]).map(lambda _, example: example)
                            .as_numpy_iterator())
  subset = (np.array(images, dtype=object if source.encoded else None),
            np.array(kept_labels))
  read_all = source.read

  def read(split, num_shards, shard_index):
    if split != 'train':
      return read_all(split, num_shards, shard_index)
    return tf.data.Dataset.from_tensor_slices(subset).shard(num_shards,
                                                            shard_index)

  def sizes(split, num_shards, shard_index):
    if split != 'train':
      return source.shard_examples(split, num_shards, shard_index)
    return len(range(shard_index, len(chosen), num_shards))

  files = source.files and dict(
      source.files, train=[source.files['train'][i] for i in chosen])
  # The subset keeps no boxes: its crops take the whole image.
  return dataclasses.replace(source, num_train=len(chosen), read=read,
                             files=files, train_labels=labels[chosen],
                             sizes=sizes, boxes=False)
