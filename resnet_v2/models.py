"""A `keras.Model` from a depth or a block list, in one call."""

import contextlib
import functools
import math
import numbers

import keras
from tf_slim.ops.arg_scope import arg_scope

from resnet_v2 import arg_scopes
from resnet_v2 import nets
from resnet_v2 import resnet_utils
from resnet_v2 import stems


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


def resolve_network(depth_or_blocks, stem='imagenet', scope=None):
  """Turns a depth or a block list into blocks and a scope.

  Args:
    depth_or_blocks: As for `build_model`.
    stem: As for `build_model`; with 'cifar' a depth means `cifar_blocks`.
    scope: An explicit scope, or None for the default.

  Returns:
    (blocks, scope): the blocks (checked, or the network function), and the
    scope: `scope` if given, else 'resnet_v2_<depth>' for a depth and
    'resnet_v2' for a block list.

  Raises:
    ValueError: For an unknown stem or depth, malformed blocks, or a network
      function with a stem.
  """
  stems.get_stem(stem)
  if isinstance(depth_or_blocks, numbers.Integral):
    depth = depth_or_blocks
    blocks = (nets.cifar_blocks(depth) if stem == 'cifar'
              else nets.blocks_for_depth(depth))
    return resnet_utils.check_blocks(blocks), scope or f'resnet_v2_{depth}'
  if callable(depth_or_blocks):
    if stem != 'none':
      raise ValueError("A network function builds its own stem, like slim's "
                       "resnet_v2_50: use stem='none'.")
    return depth_or_blocks, scope or 'resnet_v2'
  return resnet_utils.check_blocks(depth_or_blocks), scope or 'resnet_v2'


def build_model(depth_or_blocks, num_classes=None, input_shape=(224, 224, 3),
                outputs=None, scope=None, dtype_policy=None, arg_sc=None,
                stem='imagenet', width_multiplier=1, drop_path_rate=0.0,
                recompute_grad=False, **resnet_kwargs):
  """Builds a ResNet v2 as a `keras.Model`.

  The experiment scripts, `backbone` and `create_model` all build through
  here, so a model made one way is the same as one made another.

      model = build_model(50, num_classes=1001)
      model = build_model(164, 10, input_shape=(32, 32, 3), stem='cifar')
      model = build_model([resnet_v2_block('block1', 16, 2, 2), ...], 10,
                          input_shape=(32, 32, 3), stem='cifar',
                          arg_sc=resnet_arg_scope(weight_decay=5e-4))

  Args:
    depth_or_blocks: A depth, a list of `Block`s, or a slim-style network
      function. A depth names a registered ImageNet network (18, 34, 50,
      101, 152, 200, ...), or with stem='cifar' the paper's 9n+2 CIFAR
      network (`cifar_blocks`). A network function is called like slim's
      `resnet_v2_50`: fn(images, num_classes, scope=..., **resnet_kwargs) ->
      (net, end_points), with stem='none' (it makes its own).
    num_classes: Number of classes; None or 0 for a feature extractor.
    input_shape: The image shape (height, width, channels); height and width
      may be None for fully convolutional use.
    outputs: None to output `net` (logits, or features); else a list of
      end-point names, and the model outputs a dict of exactly those.
    scope: The network's scope; defaults to 'resnet_v2_<depth>' for a depth
      and 'resnet_v2' for a block list. Also the model's name.
    dtype_policy: A Keras dtype policy for this model's layers ('float32',
      'mixed_bfloat16', 'mixed_float16'), or None for the global policy.
      Logits and predictions stay float32.
    arg_sc: The arg scope to build under; defaults to `resnet_arg_scope()`.
      Its options (weight decay, BatchNorm decay, synchronized BatchNorm,
      conv biases, ...) are how a network's layer defaults are set.
    stem: What comes before the blocks, a name of `stems.STEMS`:
      'imagenet' (slim's root block, a 7x7/2 `conv1` and a 3x3/2 `pool1`,
      stride 4), 'imagenet_zero_pad' and 'imagenet_symmetric' (the same with
      the pooling padded as Keras applications and BiT, or as PyTorch, pad
      it), 'cifar' (the paper's CIFAR stem, one 3x3 `conv1` with 16 outputs
      at full resolution) or 'none' (the blocks take the input as it is).
      A stem's convolution has no normalizer or ReLU, because the first
      unit's `preact` applies them.
    width_multiplier: Multiplies every depth of the stem and the units
      (`scale_width`); 1 is the network as specified.
    drop_path_rate: Stochastic depth, the last unit's drop probability
      (`with_stochastic_depth`); 0 for none.
    recompute_grad: Recompute each unit's activations in the backward pass
      instead of keeping them (less memory, a second forward pass of each
      unit; see `recompute`). Only units' outputs are then end points inside
      blocks.
    **resnet_kwargs: Further `resnet_v2` arguments (is_training,
      global_pool, output_stride, spatial_squeeze).

  Returns:
    A `keras.Model`. Its `end_points` attribute maps every end-point name to
    its symbolic tensor; its `feature_info` lists the `FeatureLevel` of each
    stride, finest first (empty for a network function).

  Raises:
    ValueError: For an unknown depth or stem, malformed blocks, a bad
      output_stride, or an unknown end-point name in `outputs`.
  """
  blocks, scope = resolve_network(depth_or_blocks, stem, scope)
  levels = {}
  if callable(blocks):  # A network function: its blocks are its own.
    if width_multiplier != 1 or drop_path_rate:
      raise ValueError('width_multiplier and drop_path_rate apply to blocks, '
                       'not to a network function.')
    network_fn = blocks
  else:
    if width_multiplier != 1:
      blocks = resnet_utils.scale_width(blocks, width_multiplier)
    blocks = resnet_utils.with_stochastic_depth(blocks, drop_path_rate)
    root_depth = stems.get_stem(stem).depth
    if root_depth is not None:
      root_depth = resnet_utils.scaled_depth(root_depth, width_multiplier)
    network_fn = functools.partial(
        nets.resnet_v2, blocks=blocks, include_root_block=stem != 'none',
        stem=stem, root_depth=root_depth, feature_levels=levels)
  with using_dtype_policy(dtype_policy):
    inputs = keras.Input(tuple(input_shape), name='images')
    with arg_scope(arg_sc or arg_scopes.resnet_arg_scope()), arg_scope(
        [resnet_utils.stack_blocks_dense], recompute_grad=recompute_grad):
      net, end_points = network_fn(inputs, num_classes=num_classes,
                                   scope=scope, **resnet_kwargs)
    if outputs is not None:
      unknown = [name for name in outputs if name not in end_points]
      if unknown:
        raise ValueError(f'Unknown end points {unknown}; this network has '
                         f'{list(end_points)}.')
      net = {name: end_points[name] for name in outputs}
    model = keras.Model(inputs, net, name=scope)
  model.end_points = end_points
  model.feature_info = [levels[stride] for stride in sorted(levels)]
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
