"""Gradient recomputation: trade a unit's stored activations for compute.

Training keeps every activation of the forward pass until the backward pass
uses it; for deep networks (ResNet-1001, ResNet-200 at 224) that is most of
the memory. With recomputation each residual unit keeps only its input, and
the backward pass runs the unit again to get the activations it needs (Chen
et al. 2016, "Training Deep Nets with Sublinear Memory Cost";
`tf.recompute_grad` does the same for functions without state). The
gradients are the same; a step costs at most one more forward pass of the
units (measured: README).

Units have state that the second run must not change: BatchNorm's moving
statistics are updated by the first run only (see `recomputing`), and
stochastic depth draws the same examples again (its seed is rewound).
"""

import contextlib
import threading

import keras
import tensorflow as tf

_STATE = threading.local()


def recomputing():
  """True while a unit runs again for its gradients (state must not change)."""
  return getattr(_STATE, 'active', False)


@contextlib.contextmanager
def _recomputing():
  previous = recomputing()
  _STATE.active = True
  try:
    yield
  finally:
    _STATE.active = previous


@keras.saving.register_keras_serializable(package='resnet_v2')
class Recomputed(keras.layers.Layer):
  """Calls a unit (a `keras.Model`) without keeping its activations.

  Args:
    unit: The unit as a model from its input to its output.
  """

  def __init__(self, unit, **kwargs):
    super().__init__(**kwargs)
    self.unit = unit

  def call(self, inputs, training=None):
    unit = self.unit
    if not training:  # No backward pass to save memory for.
      return unit(inputs, training=training)
    seeds = [v for v in unit.variables
             if v.path.endswith('seed_generator_state')]

    @tf.custom_gradient
    def run(x):
      seeds_before = [tf.identity(s.value) for s in seeds]
      y = unit(x, training=training)

      def grad(dy, variables=None):
        seeds_after = [tf.identity(s.value) for s in seeds]
        for seed, value in zip(seeds, seeds_before):
          seed.assign(value)
        # The second run must depend on the gradient arriving: otherwise it
        # runs early, and graph optimisation merges it with the first run
        # (the same ops on the same inputs), which keeps every activation.
        first = tf.reshape(dy, [-1])[:1]
        x_again = x + tf.cast(tf.reduce_sum(
            tf.where(tf.equal(first, first), 0.0, float('nan'))), x.dtype)
        with _recomputing(), tf.GradientTape() as tape:
          tape.watch(x_again)
          y_again = unit(x_again, training=training)
        gradients = tape.gradient(y_again, [x_again] + list(variables or []),
                                  output_gradients=dy)
        for seed, value in zip(seeds, seeds_after):
          seed.assign(value)
        return gradients[0], gradients[1:]

      return y, grad

    return run(inputs)

  def compute_output_shape(self, input_shape):
    return tuple(self.unit.output.shape)

  def get_config(self):
    return {**super().get_config(),
            'unit': keras.saving.serialize_keras_object(self.unit)}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['unit'] = keras.saving.deserialize_keras_object(config['unit'])
    return cls(**config)

