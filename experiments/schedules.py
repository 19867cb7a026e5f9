"""The learning-rate schedule: warm-up, then cosine or step decay."""

import math

import keras
import tensorflow as tf


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

    Raises:
      ValueError: For an unknown decay or unsorted boundaries.
    """
    super().__init__()
    if decay not in ('cosine', 'step', 'constant'):
      raise ValueError(f"decay must be 'cosine', 'step' or 'constant', got {decay!r}.")
    if list(boundaries) != sorted(boundaries):
      raise ValueError(f'Step-decay boundaries must be increasing, got {boundaries}.')
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
