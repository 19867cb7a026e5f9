"""The compiled functions of a run: several training steps, one eval step.

Each runs `strategy.run` inside a `tf.function`, so the same code serves one
device, mirrored GPUs, several workers and TPUs. Losses are scaled by the
GLOBAL batch, because gradients are summed over replicas.

With --batch_split=K each replica runs its share of the batch as K
micro-batches, one after the other (a `tf.while_loop`, so only one
micro-batch's activations are alive at a time), and adds their gradients
into one optimizer step. The loss is a sum over examples divided by the
global batch, so the summed gradients are the whole batch's, exactly for
networks whose layers treat examples independently (GroupNorm); BatchNorm
normalizes each micro-batch by its own statistics and updates its moving
averages once per micro-batch.
"""

import math

import tensorflow as tf


def make_multi_step(config, placement, model, optimizer, num_classes):
  """Returns multi_step(iterator, num_steps) -> per-step losses and sums.

  Args:
    config: A resolved `Config` (batch size and split, label smoothing).
    placement: The run's `cluster.Placement` (strategy, precision, XLA).
    model: The model, built in the strategy's scope.
    optimizer: Its optimizer, built for it.
    num_classes: Logits width.

  Returns:
    multi_step(iterator, num_steps) running `num_steps` steps in one call and
    returning (losses [num_steps], correct, skipped): the loss of each step,
    the number of correctly classified and of skipped (undecodable) images.
  """
  strategy = placement.strategy
  gradients = make_gradients(config, placement, model, optimizer, num_classes)

  def replica_step(batch):
    images, labels, weights, skipped = batch
    loss, grads, correct = gradients(images, labels, weights)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss, correct, tf.reduce_sum(skipped)

  @tf.function
  def multi_step(iterator, num_steps):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    correct = skipped = tf.constant(0.0)
    for i in tf.range(num_steps):
      loss, step_correct, step_skipped = strategy.run(
          replica_step, args=(next(iterator),))
      reduce = lambda x: strategy.reduce('SUM', x, axis=None)
      losses = losses.write(i, reduce(loss))
      correct += reduce(step_correct)
      skipped += tf.cast(reduce(step_skipped), tf.float32)
    return losses.stack(), correct, skipped

  return multi_step


def make_gradients(config, placement, model, optimizer, num_classes):
  """Returns gradients(images, labels, weights) -> (loss, grads, correct).

  For one replica's share of a batch, in --batch_split micro-batches when it
  is over 1; call it in a replica context (`strategy.run`, or none). The
  loss is the replica's share of the global batch's (see the module
  docstring), so the grads are what the optimizer step applies.

  Args:
    config, placement, model, optimizer, num_classes: As `make_multi_step`.

  Returns:
    The function; (loss, grads, correct) are the loss, the gradients of the
    model's trainable variables (scaled under mixed_float16, as the
    optimizer unscales them) and the number of correctly classified images.
  """
  forward_backward = _forward_backward(config, placement, model, optimizer,
                                       num_classes)
  if placement.jit_compile:
    forward_backward = tf.function(forward_backward, jit_compile=True)
  if config.batch_split == 1:
    return forward_backward
  return _summed_over_micro_batches(forward_backward, config.batch_split,
                                    model)


def _forward_backward(config, placement, model, optimizer, num_classes):
  """forward_backward(images, labels, weights) on one (micro-)batch."""
  global_batch = config.batch_size
  # Weight decay is added once per step, a 1/split share per micro-batch.
  regularization_share = (placement.strategy.num_replicas_in_sync
                          * config.batch_split)

  def forward_backward(images, labels, weights):
    # Labels are class ids, or class distributions from MixUp/CutMix.
    soft = labels.shape.rank == 2
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      targets = labels if soft else tf.one_hot(labels, num_classes)
      if config.label_smoothing:
        targets = (targets * (1 - config.label_smoothing)
                   + config.label_smoothing / num_classes)
      cross_entropy = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
      # Stand-ins for corrupt images have weight 0.
      loss = tf.reduce_sum(cross_entropy * weights) / global_batch
      if model.losses:
        loss += tf.add_n(model.losses) / regularization_share
      if config.fail_at_step is not None:
        loss *= tf.where(optimizer.iterations + 1 == config.fail_at_step,
                         math.nan, 1.0)
      scaled = (optimizer.scale_loss(loss)
                if placement.precision == 'mixed_float16' else loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    if soft:  # The class with most weight in a mixed label.
      labels = tf.argmax(labels, -1, output_type=tf.int32)
    correct = tf.reduce_sum(weights * tf.cast(
        tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
        tf.float32))
    return loss, grads, correct

  return forward_backward


def _summed_over_micro_batches(forward_backward, split, model):
  """forward_backward over `split` micro-batches of a batch; their sums."""

  def micro_batches(images, labels, weights):
    parts = [tf.reshape(t, [split, -1] + t.shape[1:].as_list())
             for t in (images, labels, weights)]

    def body(i, loss, correct, grads):
      part_loss, part_grads, part_correct = forward_backward(
          *(part[i] for part in parts))
      return (i + 1, loss + part_loss, correct + part_correct,
              [g + tf.cast(p, g.dtype) for g, p in zip(grads, part_grads)])

    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    # One iteration at a time: TF's default runs up to 10 at once, which
    # keeps their activations alive together and runs one oneDNN
    # convolution kernel for several micro-batches at once, which crashes
    # now and then. (Peak RSS of a script of bare steps, R50 at 224, batch
    # 32 in 4: 2.95 GB with 10 at once, 1.91 GB one at a time. The README's
    # memory table measures whole benchmark runs: 2.09 GB for that case.)
    _, loss, correct, grads = tf.while_loop(
        lambda i, *_: i < split, body,
        (tf.constant(0), tf.constant(0.0), tf.constant(0.0), zeros),
        parallel_iterations=1)
    return loss, grads, correct

  return micro_batches


def make_eval_step(strategy, model):
  """Returns eval_step(batch) -> sums of loss, top-1, top-5 and weight."""

  def replica_step(batch):
    images, labels, weights, _ = batch
    logits = tf.cast(model(images, training=False), tf.float32)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    top1 = tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)
    top5 = tf.cast(tf.math.in_top_k(labels, logits, min(5, logits.shape[-1])),
                   tf.float32)
    return tf.stack([tf.reduce_sum(cross_entropy * weights),
                     tf.reduce_sum(top1 * weights),
                     tf.reduce_sum(top5 * weights), tf.reduce_sum(weights)])

  @tf.function
  def eval_step(batch):
    return strategy.reduce('SUM', strategy.run(replica_step, args=(batch,)),
                           axis=None)

  return eval_step
