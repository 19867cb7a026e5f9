"""Every random stream of the input, seeded by the run's seed and a position.

A run's input is a pure function of (seed, position in the stream), so a
resumed run replays exactly what an uninterrupted one saw (see
input_pipeline). `seed` is where every stream's seed is made, from the run's
seed r (an int), or from another stream's seed [s0, s1]:

| stream     | position                 | seed                          |
|------------|--------------------------|-------------------------------|
| SHUFFLE    | epoch e                  | r * 1_000_003 + e (an int)    |
| PREPROCESS | example i of pipeline p  | [r, i * n + p]                |
| AUGMENT    | example i of pipeline p  | [-1 - r, i * n + p]           |
| MIX        | batch i of pipeline p    | [-2 - r, i * n + p]           |
| MIX_CHOICE | (of a MIX seed)          | [s0, -s1 - 1]                 |
| DRAW       | draw k (of a seed)       | [s0, s1 * 1009 + k]           |

Positions interleave the input pipelines (n of them), so every example of
the whole stream has its own seed whatever n is; the first value keeps the
streams apart (the run's seed is not negative). DRAW numbers the random
draws a Keras layer makes while it is traced (`keras_seed_generator`).
"""

import keras
import tensorflow as tf

SHUFFLE, PREPROCESS, AUGMENT, MIX, MIX_CHOICE, DRAW = (
    'shuffle', 'preprocess', 'augment', 'mix', 'mix_choice', 'draw')
_SALTS = {PREPROCESS: 0, AUGMENT: -1, MIX: -2}


def seed(stream, base, position=None, context=None):
  """The seed of one position of one stream (see the module's table).

  Args:
    stream: One of SHUFFLE, PREPROCESS, AUGMENT, MIX, MIX_CHOICE, DRAW.
    base: The run's seed (an int) for SHUFFLE, PREPROCESS, AUGMENT and MIX;
      the [2] seed it derives from for MIX_CHOICE and DRAW.
    position: The epoch (SHUFFLE), the example or batch index (a scalar
      int64 tensor), or the draw's number (DRAW).
    context: The `tf.distribute.InputContext` whose pipelines interleave,
      for PREPROCESS, AUGMENT and MIX.

  Returns:
    An int for SHUFFLE (tf.data's seed), else an int64 [2] tensor for the
    stateless random ops.
  """
  if stream == SHUFFLE:
    return base * 1_000_003 + position
  if stream == MIX_CHOICE:
    return tf.stack([base[0], -base[1] - 1])
  if stream == DRAW:
    return tf.stack([base[0], base[1] * 1009 + position])
  salt = _SALTS[stream]
  first = base if stream == PREPROCESS else salt - base
  return tf.stack([tf.constant(first, tf.int64),
                   position * context.num_input_pipelines
                   + context.input_pipeline_id])


class _StatelessSeedGenerator(keras.random.SeedGenerator):
  """A Keras seed generator without state: draw k is `seed(DRAW, base, k)`.

  Keras's random functions call `next()` on a layer's generator for each
  draw; this one counts the draws while the graph is traced and derives
  each from the base seed, a tensor. It makes no variable, so nothing of
  Keras's own state (which a new process starts afresh) is involved.
  """

  def __init__(self, base):  # pylint: disable=super-init-not-called
    self._base = tf.cast(base, tf.int64)
    self._draws = 0

  def next(self, ordered=True):
    del ordered
    self._draws += 1
    return seed(DRAW, self._base, self._draws)


def use_seed(layer, base):
  """Makes a Keras augmentation layer draw from `base` (a [2] seed) next.

  This relies on two things of Keras 3 that `tests/test_augmentation.py`
  pins, so that a Keras release that changes them fails loudly there: the
  layers (RandAugment, MixUp, CutMix) draw from their `generator` attribute
  (RandAugment hands its own to the layers it applies), and Keras's random
  functions take their seeds from it by calling `next()`. Keras's own
  `seed=` arguments take only Python ints, and RandAugment ignores them.

  Args:
    layer: A Keras augmentation layer.
    base: A [2] int tensor, e.g. an AUGMENT or MIX seed.
  """
  # Set outside Keras's attribute tracking, which would keep every traced
  # generator.
  object.__setattr__(layer, 'generator', _StatelessSeedGenerator(base))
