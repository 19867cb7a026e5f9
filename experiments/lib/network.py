"""The network of a run: built from its Config, optionally initialised.

`resnet_v2.build_model` is the only builder; this module maps the Config's
fields onto its arguments, and loads --init_checkpoint (a tf-slim checkpoint
or one of ours) into the result.
"""

import dataclasses

import resnet_v2
import tensorflow as tf

from experiments.lib.config import ConfigError


def build(config, num_classes, image_size):
  """Builds the classifier a (resolved) config describes.

  Args:
    config: A `Config` whose precision is resolved (not 'auto').
    num_classes: Logits width.
    image_size: Input height and width.

  Returns:
    A `keras.Model` from images in [-1, 1] to float32 logits.
  """
  if config.normalization == 'group_norm':
    arg_sc = resnet_v2.bit_arg_scope(weight_decay=config.weight_decay,
                                     groups=config.group_norm_groups)
  else:
    arg_sc = resnet_v2.resnet_arg_scope(weight_decay=config.weight_decay,
                                        sync_batch_norm=config.sync_batch_norm)
  try:
    return resnet_v2.build_model(
        config.architecture(), num_classes,
        input_shape=(image_size, image_size, 3), stem=config.stem,
        dtype_policy=config.precision, arg_sc=arg_sc,
        width_multiplier=config.width_multiplier,
        drop_path_rate=config.drop_path_rate,
        recompute_grad=config.recompute_grad)
  except ValueError as e:  # E.g. depths that --group_norm_groups must divide.
    raise ConfigError(f'The network cannot be built: {e}') from None


def for_export(model, config, image_size):
  """The model to export: itself, or its float32 twin for --export_precision.

  A mixed-precision model keeps float32 variables but computes in bfloat16 or
  float16, which TFLite and other converters refuse; the twin is the same
  network built in float32 with the same weights.

  Args:
    model: The trained model.
    config: The run's resolved Config.
    image_size: Input height and width.

  Returns:
    A `keras.Model`.
  """
  if config.export_precision == 'training' or config.precision == 'float32':
    return model
  twin = build(dataclasses.replace(config, precision='float32'),
               model.output.shape[-1], image_size)
  twin.set_weights(model.get_weights())
  return twin


def load_init_checkpoint(model, config):
  """Initializes the model from a tf-slim checkpoint or one of ours.

  Only the model is read from one of ours: its optimizer state belongs to
  another run.

  Returns:
    'ours' or 'tf-slim'.

  Raises:
    ConfigError: If --init_checkpoint is not a readable checkpoint (or a
      directory holding one), or does not match the model; the message lists
      the mismatched variables and the flags that fix the usual causes.
  """
  path = config.init_checkpoint
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
  try:
    names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  except (tf.errors.OpError, ValueError, TypeError) as e:
    raise ConfigError(f'--init_checkpoint={config.init_checkpoint!r} is not a '
                      'readable checkpoint: give a checkpoint prefix (the path '
                      "before '.index') or a directory holding one.") from e
  if '_CHECKPOINTABLE_OBJECT_GRAPH' in names:
    tf.train.Checkpoint(model=model).read(
        path).assert_existing_objects_matched().expect_partial()
    return 'ours'
  try:
    resnet_v2.load_slim_checkpoint(
        model, path, skip_logits=config.init_skip_logits,
        checkpoint_scope=config.init_checkpoint_scope)
  except ValueError as e:
    raise ConfigError(
        f'--init_checkpoint: {e}\n  On the command line: --init_skip_logits '
        'is skip_logits=True, --init_checkpoint_scope is checkpoint_scope=.'
    ) from None
  return 'tf-slim'
