"""How a run optimises: its length, its learning-rate schedule, its optimizer.

SGD with momentum (loss-scaled under float16), on a schedule of warm-up then
cosine or step decay, with rates given per --lr_reference_batch images and
scaled linearly with the global batch (Goyal et al. 2017).
"""

import contextlib
import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='resnet_v2')
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Warm-up, then cosine decay to 0 or division by 10 at given steps.

  Warm-up is either linear from 0 to `base_lr` (Goyal et al., for large
  batches) or, with `warmup_lr`, a constant low rate (He et al.'s 0.01 for
  the first 400 steps of very deep CIFAR nets).
  """

  def __init__(self, base_lr, total_steps, warmup_steps=0, decay='cosine',
               boundaries=(), warmup_lr=None):
    """Creates the schedule.

    Args:
      base_lr: The rate after warm-up.
      total_steps: Training length (cosine reaches 0 there).
      warmup_steps: Length of the warm-up.
      decay: 'cosine', 'step' (x0.1 at each of `boundaries`) or 'constant'.
      boundaries: Steps of the step decay.
      warmup_lr: None for a linear warm-up, else the constant warm-up rate.

    The values come from a checked `Config` (--lr_decay and increasing
    boundaries are checked there).
    """
    super().__init__()
    self.base_lr, self.total_steps = float(base_lr), int(total_steps)
    self.warmup_steps, self.decay = int(warmup_steps), decay
    self.boundaries, self.warmup_lr = [int(b) for b in boundaries], warmup_lr

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    if self.decay == 'cosine':
      span = max(self.total_steps - self.warmup_steps, 1)
      progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
      rate = 0.5 * self.base_lr * (1.0 + tf.cos(math.pi * progress))
    elif self.decay == 'step':
      passed = tf.reduce_sum(tf.cast(
          step >= tf.constant(self.boundaries or [math.inf], tf.float32),
          tf.float32))
      rate = self.base_lr * tf.pow(0.1, passed)
    else:
      rate = tf.constant(self.base_lr)
    if self.warmup_steps:
      if self.warmup_lr is None:
        warm = self.base_lr * (step + 1) / self.warmup_steps
      else:
        warm = tf.constant(float(self.warmup_lr))
      rate = tf.where(step < self.warmup_steps, warm, rate)
    return rate

  def get_config(self):
    return {'base_lr': self.base_lr, 'total_steps': self.total_steps,
            'warmup_steps': self.warmup_steps, 'decay': self.decay,
            'boundaries': self.boundaries, 'warmup_lr': self.warmup_lr}


def total_steps(config, num_train):
  """The run's length in steps, from --train_steps or --train_epochs.

  Args:
    config: A `Config`.
    num_train: Examples in the training split.

  Returns:
    --train_steps if given, else the steps of --train_epochs (90 if neither
    is given) at the global batch size, at least 1.
  """
  if config.train_steps is not None:
    return config.train_steps
  epochs = 90 if config.train_epochs is None else config.train_epochs
  return max(1, math.ceil(epochs * num_train / config.batch_size))


def make_schedule(config, num_train):
  """The learning-rate schedule of a config whose train_steps is resolved."""
  steps_per_epoch = num_train / config.batch_size
  warmup = (config.warmup_steps if config.warmup_steps is not None
            else round(config.warmup_epochs * steps_per_epoch))
  boundaries = (config.lr_boundary_steps if config.lr_boundary_steps is not None
                else [round(e * steps_per_epoch) for e in config.lr_boundary_epochs])
  return WarmupDecay(
      config.base_lr * config.batch_size / config.lr_reference_batch,
      config.train_steps, warmup_steps=min(warmup, config.train_steps),
      decay=config.lr_decay, boundaries=boundaries, warmup_lr=config.warmup_lr)


def make_optimizer(config, precision, schedule, model):
  """SGD with momentum (loss-scaled for float16), built for `model`.

  With --ema_decay, Keras's optimizer also keeps an exponential moving
  average of the trainable weights (its own variables, so checkpointed with
  it); `averaged_weights` swaps it in. Building the optimizer makes all its
  variables now, so that a checkpoint restore finds them. Only the trainable
  weights get slots: frozen ones (--trainable) are not the optimizer's.
  """
  optimizer = keras.optimizers.SGD(
      learning_rate=schedule, momentum=config.momentum,
      use_ema=bool(config.ema_decay), ema_momentum=config.ema_decay or 0.99)
  if precision == 'mixed_float16':
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  optimizer.build(model.trainable_variables)
  return optimizer


@contextlib.contextmanager
def averaged_weights(model, optimizer):
  """Puts the moving average of the weights into `model` for the body.

  Evaluation and export see the averaged weights; afterwards the trained
  values are put back exactly, so training goes on (and a resumed run stays
  bit-identical). Without --ema_decay, nothing changes.

  Args:
    model: The model the optimizer trains.
    optimizer: From `make_optimizer`.

  Yields:
    None.
  """
  inner = getattr(optimizer, 'inner_optimizer', optimizer)
  if not inner.use_ema:
    yield
    return
  trained = [tf.identity(v) for v in model.trainable_variables]
  inner.finalize_variable_values(model.trainable_variables)
  try:
    yield
  finally:
    for variable, value in zip(model.trainable_variables, trained):
      variable.assign(value)
