"""tf.data pipelines for training and evaluation under any tf.distribute strategy.

Both are built per input pipeline (per worker) by
`strategy.distribute_datasets_from_function`, shard the source by pipeline,
and batch with the per-replica batch size and `drop_remainder=True`, so every
step has static shapes (TPUs require it).

Every element is (images, labels, weights, skipped):
- `weights` is 1 for real examples and 0 for placeholders: the padding that
  lets evaluation cover the whole split in full batches, and the stand-ins
  for corrupt images;
- `skipped` is 1 for the stand-in of a corrupt image. Decoding errors are
  ignored (and logged by tf.data); the gaps they leave in the running example
  index are filled with zero-weight stand-ins, so a bad file never stops a
  run and never shifts the stream.

The training stream is a pure function of (seed, position): epoch e is the
shard shuffled with a seed made from (seed, e), and augmentation is stateless,
seeded by (seed, example index). Resuming at step s therefore skips, without
decoding, to example s * (examples per step of this pipeline) and replays
exactly what an uninterrupted run would have seen, on any number of workers,
re-reading at most one epoch of undecoded records. (TF's distributed
iterators cannot be checkpointed, and this needs no iterator state.)
"""

import tensorflow as tf

from experiments.lib import preprocessing
from experiments.lib import seeds

AUTOTUNE = tf.data.AUTOTUNE

def _preprocess_fn(preprocess, training, image_size, labels_offset, seed,
                   context, augment=None):
  """Returns fn(index, (image, label[, boxes])) -> (image, label, index).

  `preprocess` is fn(image, seed[, boxes]) for training, fn(image) for
  evaluation; labels are shifted by `labels_offset` (tf-slim's
  --labels_offset). `augment`, fn(image, seed), follows `preprocess` in
  training, with a seed of its own.
  """

  def fn(index, example):
    image, label, *boxes = example
    if training:
      image = preprocess(image, seeds.seed(seeds.PREPROCESS, seed, index,
                                           context), *boxes)
      if augment is not None:
        image = augment(image, seeds.seed(seeds.AUGMENT, seed, index,
                                          context))
    else:
      image = preprocess(image)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return image, tf.cast(label, tf.int32) + labels_offset, index

  return fn


def _fill_gaps(dataset, start):
  """Maps (image, label, index) with gaps to (image, label, weight, skipped).

  A zero-weight stand-in (skipped=1) takes the place of every missing index
  before each element.
  """

  def gap(previous_index, element):
    image, label, index = element
    return index, (image, label, index - previous_index - 1)

  def with_stand_ins(image, label, missing):
    stand_in = (tf.zeros_like(image), tf.zeros_like(label), tf.constant(0.0),
                tf.constant(1))
    real = (image, label, tf.constant(1.0), tf.constant(0))
    return tf.data.Dataset.from_tensors(stand_in).repeat(missing).concatenate(
        tf.data.Dataset.from_tensors(real))

  return dataset.scan(tf.constant(start - 1, tf.int64), gap).flat_map(
      with_stand_ins)


def _epochs(shard, epoch_size, seed, shuffle_buffer, start, end):
  """Examples start..end-1 of the stream of shuffled epochs of `shard`.

  Epoch e is `shard` shuffled with seed (seed, e), so any position can be
  reached by building only the epochs from its own on and skipping, without
  decoding, into the first of them.
  """
  first_epoch, offset = divmod(start, epoch_size)
  # One spare epoch: a corrupt image at `end` still gets its stand-in (it is
  # filled in when the next good image arrives). Unread epochs cost nothing.
  last_epoch = max(first_epoch, (end - 1) // epoch_size) + 1
  epochs = [shard.shuffle(shuffle_buffer,
                          seed=seeds.seed(seeds.SHUFFLE, seed, e))
            if shuffle_buffer else shard
            for e in range(first_epoch, last_epoch + 1)]
  order = tf.data.Dataset.range(len(epochs)).flat_map(
      lambda i: tf.data.Dataset.from_tensors(i).repeat(epoch_size))
  dataset = tf.data.Dataset.choose_from_datasets(epochs, order,
                                                 stop_on_empty_dataset=True)
  return dataset.skip(offset)


def _examples(source, split, preprocess, image_size, labels_offset, seed,
              context, shuffle_buffer=0, start=0, end=0, augment=None):
  """Decoded, preprocessed examples of one pipeline's shard.

  Args:
    source: A `data.Source`.
    split: 'train' (shuffled epochs from `start` to `end`) or 'eval' (one
      pass, in order).
    preprocess: The preprocessing (see `_preprocess_fn`).
    image_size: Output image size.
    labels_offset: Added to every label.
    seed: The run's seed.
    context: The `tf.distribute.InputContext`.
    shuffle_buffer: Shuffle buffer size (training); 0 for none.
    start: Position in this pipeline's training stream to start from.
    end: Position at which the training stream may end.
    augment: fn(image, seed) applied after `preprocess` in training.

  Returns:
    A Dataset of (image, label, weight, skipped).
  """
  training = split == 'train'
  shard = (split, context.num_input_pipelines, context.input_pipeline_id)
  # Training crops use the boxes of a source that has them, as tf-slim's.
  dataset = (source.read(*shard, with_boxes=True)
             if training and source.boxes else source.read(*shard))
  if training:
    epoch_size = source.shard_examples(*shard)
    dataset = _epochs(dataset, epoch_size, seed, shuffle_buffer, start, end)
  dataset = dataset.enumerate(start=start)
  dataset = dataset.map(
      _preprocess_fn(preprocess, training, image_size, labels_offset, seed,
                     context, augment),
      num_parallel_calls=AUTOTUNE, deterministic=True)
  dataset = dataset.ignore_errors(log_warning=True)
  return _fill_gaps(dataset, start)


def train_dataset_fn(source, image_size, global_batch_size, seed, start_step,
                     end_step, shuffle_buffer=10_000, labels_offset=0,
                     augment=None, mix=None, preprocess=None):
  """Returns a dataset_fn for `distribute_datasets_from_function`: training.

  Args:
    source: A `data.Source`.
    image_size: Training image size.
    global_batch_size: Images per step over all replicas.
    seed: Seed of the shuffle and of the augmentation.
    start_step: The step the run starts (or resumes) at.
    end_step: The last step of the run.
    shuffle_buffer: Examples in the shuffle buffer.
    labels_offset: Added to every label.
    augment: fn(image, seed) for every training image after the
      preprocessing (RandAugment; see augmentation.py), or None.
    mix: fn(images, labels, seed) -> (images, soft labels) for every batch
      (MixUp, CutMix), or None.
    preprocess: fn(image, seed) -> the training image (see
      `preprocessing.train_fn`); None for the source's own augmentation.

  Returns:
    dataset_fn(input_context) -> a Dataset of per-replica batches for the
    steps start_step..end_step.
  """
  preprocess = preprocess or preprocessing.train_fn(
      source.augment, image_size, source.encoded, source.pad, source.flip)

  def dataset_fn(context):
    batch_size = context.get_per_replica_batch_size(global_batch_size)
    per_step = global_batch_size // context.num_input_pipelines
    dataset = _examples(source, 'train', preprocess, image_size, labels_offset,
                        seed, context, min(shuffle_buffer, source.num_train),
                        start=start_step * per_step, end=end_step * per_step,
                        augment=augment)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if mix is not None:
      # Batches are numbered by their position in the stream, like examples.
      def mixed(index, batch):
        images, labels, weights, skipped = batch
        images, labels = mix(images, labels,
                             seeds.seed(seeds.MIX, seed, index, context))
        return images, labels, weights, skipped

      dataset = dataset.enumerate(
          start=start_step * (per_step // batch_size)).map(
              mixed, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.prefetch(AUTOTUNE)

  return dataset_fn


def eval_steps(source, global_batch_size, num_pipelines=1):
  """Steps that cover the evaluation split once (the last batch padded).

  With several input pipelines, the one with the most examples decides: a
  source that shares out files may give pipelines unequal parts.
  """
  per_pipeline = global_batch_size // num_pipelines
  return max(-(-source.shard_examples('eval', num_pipelines, i) // per_pipeline)
             for i in range(num_pipelines))


def eval_dataset_fn(source, image_size, global_batch_size, labels_offset=0,
                    preprocess=None):
  """Returns a dataset_fn for `distribute_datasets_from_function`: evaluation.

  Each pipeline reads its shard once, pads it with zero-weight examples and
  yields exactly the batches its replicas need for `eval_steps` steps, so
  that all workers run the same number of steps.

  Args:
    source: A `data.Source`.
    image_size: Eval image size.
    global_batch_size: Images per step over all replicas.
    labels_offset: Added to every label.
    preprocess: fn(image) -> the evaluation image (see
      `preprocessing.eval_fn`); None for the source's own.

  Returns:
    dataset_fn(input_context) -> a finite Dataset of per-replica batches.
  """
  preprocess = preprocess or preprocessing.eval_fn(source.augment, image_size,
                                                   source.encoded)

  def dataset_fn(context):
    batch_size = context.get_per_replica_batch_size(global_batch_size)
    batches_per_step = global_batch_size // batch_size // context.num_input_pipelines
    dataset = _examples(source, 'eval', preprocess, image_size, labels_offset,
                        0, context)
    padding = tf.data.Dataset.from_tensors(
        (tf.zeros([image_size, image_size, 3]), tf.constant(0),
         tf.constant(0.0), tf.constant(0))).repeat()
    dataset = dataset.concatenate(padding).batch(batch_size, drop_remainder=True)
    steps = eval_steps(source, global_batch_size, context.num_input_pipelines)
    dataset = dataset.take(steps * batches_per_step)
    return dataset.prefetch(AUTOTUNE)

  return dataset_fn
