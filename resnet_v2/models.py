"""A `keras.Model` from a depth or a block list, in one call."""

import contextlib
import math
import numbers

import keras
from tf_slim.ops.arg_scope import arg_scope

from resnet_v2 import arg_scopes
from resnet_v2 import nets


@contextlib.contextmanager
def using_dtype_policy(policy):
  """Sets the global Keras dtype policy for the `with` body, if not None.

  Layers take the policy in force when they are made, so building a model
  inside `with using_dtype_policy('mixed_bfloat16'):` makes it mixed precision
  without changing the policy for later code.
  """
  if policy is None:
    yield
    return
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


def build_model(depth_or_blocks, num_classes=None, input_shape=(224, 224, 3),
                outputs=None, scope=None, dtype_policy=None, arg_sc=None,
                **resnet_kwargs):
  """Builds a ResNet v2 as a `keras.Model`.

      model = build_model(50, num_classes=1001)
      model = build_model([resnet_v2_block('block1', 16, 2, 2), ...], 10,
                          input_shape=(32, 32, 3))

  Args:
    depth_or_blocks: A registered depth (50, 101, 152, 200, ...) or a list of
      `Block`s.
    num_classes: Number of classes; None or 0 for a feature extractor.
    input_shape: The image shape (height, width, channels); height and width
      may be None for fully convolutional use.
    outputs: None to output `net` (logits, or features); else a list of
      end-point names, and the model outputs a dict of exactly those.
    scope: The network's scope; defaults to 'resnet_v2_<depth>' for a depth
      and 'resnet_v2' for a block list. Also the model's name.
    dtype_policy: A Keras dtype policy for this model's layers
      ('mixed_bfloat16', 'mixed_float16'), or None for the global policy.
      Logits and predictions stay float32.
    arg_sc: The arg scope to build under; defaults to `resnet_arg_scope()`.
    **resnet_kwargs: Further `resnet_v2` arguments (is_training,
      global_pool, output_stride, include_root_block, spatial_squeeze).

  Returns:
    A `keras.Model`. Its `end_points` attribute maps every end-point name to
    its symbolic tensor.

  Raises:
    ValueError: For an unknown depth, malformed blocks, or an unknown
      end-point name in `outputs`.
  """
  if isinstance(depth_or_blocks, numbers.Integral):
    blocks = nets.blocks_for_depth(depth_or_blocks)
    scope = scope or f'resnet_v2_{depth_or_blocks}'
  else:
    blocks = depth_or_blocks
    scope = scope or 'resnet_v2'
  with using_dtype_policy(dtype_policy):
    inputs = keras.Input(tuple(input_shape), name='images')
    with arg_scope(arg_sc or arg_scopes.resnet_arg_scope()):
      net, end_points = nets.resnet_v2(inputs, blocks, num_classes, scope=scope,
                                       **resnet_kwargs)
    if outputs is not None:
      unknown = [name for name in outputs if name not in end_points]
      if unknown:
        raise ValueError(f'Unknown end points {unknown}; this network has '
                         f'{list(end_points)}.')
      net = {name: end_points[name] for name in outputs}
    model = keras.Model(inputs, net, name=scope)
  model.end_points = end_points
  return model


def layer_table(model):
  """Returns a text table of a model's weighted layers and its totals.

  Args:
    model: A `keras.Model`, e.g. from `build_model`.

  Returns:
    A string: one row per layer with weights (its weight path prefix, type,
    output shape, parameter count), then trainable and total counts.
  """
  rows = []
  for layer in model.layers:
    if not layer.weights:
      continue
    count = sum(math.prod(w.shape) for w in layer.weights)
    shape = tuple(layer.output.shape) if hasattr(layer, 'output') else ''
    rows.append((layer.path, type(layer).__name__, str(shape), f'{count:,}'))
  header = ('weights', 'layer', 'output shape', 'params')
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
  line = lambda r: '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
  trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
  total = sum(math.prod(w.shape) for w in model.weights)
  return '\n'.join(
      [line(header), line(['-' * w for w in widths])] + [line(r) for r in rows]
      + [f'{model.name}: {trainable:,} trainable / {total:,} total parameters'])
