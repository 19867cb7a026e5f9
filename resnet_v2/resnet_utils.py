"""Block specs and the helpers that stack them into a ResNet.

As in tf-slim's `resnet_utils`, a network body is data: a list of `Block`s,
each a scope name, a unit function and one argument set per unit. Unlike the
original implementation of He et al., slim (and we) subsample in the LAST unit
of a block instead of the first unit of the next; the two give identical
results, and this one is more memory efficient.
"""

import collections
import numbers

import keras
from tf_slim.ops.arg_scope import add_arg_scope
from tf_slim.ops.arg_scope import arg_scope
from tf_slim.ops.arg_scope import has_arg_scope

from resnet_v2 import layers
from resnet_v2 import recompute
from resnet_v2 import scopes

UNIT_KEYS = ('depth', 'depth_bottleneck', 'stride')
UNIT_FORMS = ("a unit is a tuple (depth, depth_bottleneck, stride) or a dict "
              "{'depth': .., 'depth_bottleneck': .., 'stride': ..}")


class Block(collections.namedtuple('Block', ['scope', 'unit_fn', 'args'])):
  """A named tuple describing a ResNet block.

  Its parts are:
    scope: The block's scope name, e.g. 'block1'.
    unit_fn: The unit function (e.g. `bottleneck`); it is called as
      `unit_fn(net, rate=.., **unit)` for each unit.
    args: One entry per unit: a tuple (depth, depth_bottleneck, stride), the
      classic slim form, or a dict with those keys, the newer form.
  """


class FeatureLevel(collections.namedtuple(
    'FeatureLevel', ['name', 'stride', 'channels', 'end_point'])):
  """One level of a network's features: the last feature map at one stride.

  Its parts are:
    name: 'stride_<stride>', the key of a backbone's output.
    stride: Ratio of the input's resolution to this level's.
    channels: The level's depth.
    end_point: The end point it is: a unit's or the stem's output, or
      '<scope>/postnorm' for the deepest level.
  """


def record_level(feature_levels, stride, end_point, tensor):
  """Records `tensor` as the level at `stride`, replacing an earlier one.

  Args:
    feature_levels: None, or a dict {stride: FeatureLevel} that a network
      fills in as it is built; the last map at each stride is its level.
    stride: The tensor's stride, counted from the image.
    end_point: The tensor's end-point name, or None for a tensor with none
      (a user's unit function that records no end point), which is left out.
    tensor: The feature map.
  """
  if feature_levels is not None and end_point is not None:
    feature_levels[stride] = FeatureLevel(f'stride_{stride}', stride,
                                          tensor.shape[-1], end_point)


class CheckedBlocks(list):
  """A block list as `check_blocks` returns it: validated, units as dicts.

  `check_blocks` returns one of these unchanged, so the functions that take
  blocks (`stack_blocks_dense`, `unit_plan`, `scale_width`, ...) can all
  accept a user's list and still check it only once per build.
  """


def check_positive_int(value, where, key):
  """Returns `value` as an int, or raises ValueError naming `where` and `key`."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value <= 0):
    raise ValueError(f'{where}: {key} must be a positive integer, got {value!r}.')
  return int(value)


def _unit_kwargs(unit, where):
  """Returns a unit's arguments as a dict, checking the ones we know."""
  if isinstance(unit, (tuple, list)):
    if len(unit) != 3:
      raise ValueError(f'{where}: expected 3 values (depth, depth_bottleneck, '
                       f'stride), got {len(unit)}: {unit!r}; {UNIT_FORMS}.')
    unit = dict(zip(UNIT_KEYS, unit))
  elif isinstance(unit, dict):
    if 'depth' not in unit:
      raise ValueError(f"{where}: missing 'depth' in {unit!r}; {UNIT_FORMS}.")
    unit = dict(unit)
  else:
    raise ValueError(f'{where}: got {unit!r}; {UNIT_FORMS}.')
  for key in UNIT_KEYS:
    if key in unit:
      unit[key] = check_positive_int(unit[key], where, key)
  return unit


def check_blocks(blocks):
  """Validates a block list and returns it with every unit as a dict.

  Args:
    blocks: A non-empty list of `Block`s.

  Returns:
    A `CheckedBlocks` list of `Block`s whose `args` are lists of dicts
    (`blocks` itself if it is one already).

  Raises:
    ValueError: Naming the offending block and unit, if the list is empty, a
      block is not a `Block`, names repeat, or a unit is malformed.
  """
  if isinstance(blocks, CheckedBlocks):
    return blocks
  if not isinstance(blocks, (list, tuple)) or not blocks:
    raise ValueError('blocks must be a non-empty list of Block(scope, unit_fn, '
                     f'args), got {blocks!r}.')
  checked, seen = [], set()
  for index, block in enumerate(blocks):
    if not isinstance(block, tuple) or len(block) != 3:
      raise ValueError(f'blocks[{index}] must be a Block(scope, unit_fn, args), '
                       f'got {block!r}.')
    scope, unit_fn, args = block
    if not isinstance(scope, str) or not scope or '/' in scope:
      raise ValueError(f'blocks[{index}]: the scope must be a non-empty name '
                       f'without "/", got {scope!r}.')
    if scope in seen:
      raise ValueError(f'Block {scope!r} appears twice; block names must be '
                       'unique.')
    seen.add(scope)
    if not callable(unit_fn):
      raise ValueError(f'Block {scope!r}: unit_fn must be callable, got '
                       f'{unit_fn!r}.')
    if not isinstance(args, (list, tuple)) or not args:
      raise ValueError(f'Block {scope!r}: args must be a non-empty list of '
                       f'units; {UNIT_FORMS}. Got {args!r}.')
    units = [_unit_kwargs(unit, f'Block {scope!r} unit_{i + 1}')
             for i, unit in enumerate(args)]
    checked.append(Block(scope, unit_fn, units))
  return CheckedBlocks(checked)


def reachable_output_strides(blocks, input_stride=1):
  """Returns the output strides `stack_blocks_dense` can stop at.

  Args:
    blocks: A list of `Block`s.
    input_stride: The stride of the blocks' input relative to the image.

  Returns:
    The sorted distinct running strides, starting with `input_stride`.
  """
  return sorted({input_stride} | {
      stride for steps in unit_plan(blocks, None, input_stride)
      for _, _, stride in steps})


def check_output_stride(blocks, output_stride, input_stride=1):
  """Checks an `output_stride` request against what the blocks can reach.

  Args:
    blocks: A list of `Block`s.
    output_stride: The requested ratio of image to output resolution.
    input_stride: The stride of the blocks' input relative to the image (4
      after slim's root block).

  Returns:
    The stride the blocks themselves must reach: output_stride / input_stride.

  Raises:
    ValueError: If `output_stride` is not a positive integer, not a multiple
      of `input_stride`, or not reachable by the blocks; the message lists
      the reachable values.
  """
  check_positive_int(output_stride, 'resnet_v2', 'output_stride')
  if output_stride % input_stride:
    raise ValueError(
        f'output_stride must be a multiple of {input_stride} when the root '
        f'block is included (conv1 and pool1 stride by {input_stride}), got '
        f'{output_stride}.')
  reachable = reachable_output_strides(blocks, input_stride)
  if output_stride not in reachable:
    raise ValueError(
        f'The target output_stride {output_stride} cannot be reached by '
        f'these blocks; reachable values are {reachable}.')
  return output_stride // input_stride


def subsample(inputs, factor, scope=None):
  """Subsamples the input along the spatial dimensions.

  Args:
    inputs: A tensor of size [batch, height_in, width_in, channels].
    factor: The subsampling factor.
    scope: Optional scope name.

  Returns:
    The input, intact if factor == 1, else a 1x1 max pool with stride factor.
  """
  if factor == 1:
    return inputs
  return layers.max_pool2d(inputs, [1, 1], stride=factor, scope=scope)


def conv2d_same(inputs, num_outputs, kernel_size, stride, rate=1, scope=None):
  """Strided 2-D convolution with 'SAME' padding that ignores input parity.

  With stride 1 this is a plain 'SAME' convolution. With stride > 1 it pads
  explicitly and symmetrically by (effective kernel - 1) / 2, then convolves
  with 'VALID' padding. A 'SAME' strided convolution would instead pad only
  at the bottom/right when the input size is even, shifting the sampling
  grid; with this function

     net = conv2d_same(inputs, num_outputs, 3, stride=stride)

  equals a stride-1 'SAME' convolution followed by `subsample(net, stride)`
  for any input size.

  Args:
    inputs: A 4-D tensor [batch, height_in, width_in, channels].
    num_outputs: The number of filters.
    kernel_size: An int, the kernel size.
    stride: An int, the output stride.
    rate: An int, the atrous rate.
    scope: The scope name.

  Returns:
    A 4-D tensor [batch, height_out, width_out, num_outputs].
  """
  if stride == 1:
    return layers.conv2d(inputs, num_outputs, kernel_size, stride=1, rate=rate,
                         padding='SAME', scope=scope)
  kernel_size_effective = kernel_size + (kernel_size - 1) * (rate - 1)
  pad_total = kernel_size_effective - 1
  pad_beg = pad_total // 2
  pad_end = pad_total - pad_beg
  inputs = keras.ops.pad(
      inputs, [[0, 0], [pad_beg, pad_end], [pad_beg, pad_end], [0, 0]])
  return layers.conv2d(inputs, num_outputs, kernel_size, stride=stride,
                       rate=rate, padding='VALID', scope=scope)


def unit_plan(blocks, output_stride=None, input_stride=1):
  """How `stack_blocks_dense` runs each unit: its stride and atrous rate.

  This is the rule of output density: once the running stride reaches
  `output_stride`, every later unit runs with stride 1 and its stride
  multiplies the atrous rate of the units after it.

  Args:
    blocks: A list of `Block`s.
    output_stride: None for the nominal stride, else the target stride,
      counted from the image.
    input_stride: The stride of the blocks' input relative to the image.

  Returns:
    Per block, per unit: (stride, rate, output stride of the unit counted
    from the image).

  Raises:
    ValueError: If `blocks` is malformed or `output_stride` cannot be reached.
  """
  blocks = check_blocks(blocks)
  target = None if output_stride is None else check_output_stride(
      blocks, output_stride, input_stride)
  # The running stride of the activations, and the atrous rate used once it
  # has reached the target.
  current, rate, plan = 1, 1, []
  for block in blocks:
    steps = []
    for unit in block.args:
      stride = unit.get('stride', 1)
      if target is not None and current == target:
        steps.append((1, rate, current * input_stride))
        rate *= stride
      else:
        current *= stride
        steps.append((stride, 1, current * input_stride))
    plan.append(steps)
  return plan


def _recomputed_unit(unit_fn, net, outputs_collections, **unit_args):
  """A unit built as its own model and called through `Recomputed`.

  The tensors inside the unit belong to its own model, so of its end points
  only the unit's output is recorded, as the enclosing model's tensor.
  """
  inputs = keras.Input(tuple(net.shape[1:]), dtype=net.dtype)
  inner = {}
  collecting = [layers.conv2d] + ([unit_fn] if has_arg_scope(unit_fn) else [])
  with arg_scope(collecting, outputs_collections=inner):
    output = unit_fn(inputs, **unit_args)
  path = next((name for name, tensor in inner.items() if tensor is output),
              scopes.current_scope())
  unit = keras.Model(inputs, output, name=path.replace('/', '.'))
  output = recompute.Recomputed(unit, name=f'{unit.name}.recomputed')(net)
  if path in inner:
    scopes.collect_named_outputs(outputs_collections, path, output)
  return output


def _end_point_of(outputs_collections, tensor):
  """The name under which `tensor` was recorded as an end point, or None."""
  if outputs_collections is None:
    return None
  if isinstance(outputs_collections, dict):
    outputs_collections = [outputs_collections]
  return next((name for collection in outputs_collections
               for name, value in reversed(collection.items())
               if value is tensor), None)


@add_arg_scope
def stack_blocks_dense(net, blocks, output_stride=None,
                       outputs_collections=None, input_stride=1,
                       recompute_grad=False, feature_levels=None):
  """Stacks ResNet `Block`s and controls the output feature density.

  Units get the scopes 'block_name/unit_1', 'block_name/unit_2', ...

  `output_stride` is the ratio of input to output spatial resolution. Once
  the running stride reaches it, every later unit runs with stride 1 and its
  stride multiplies the atrous rate of the units after it instead, so the
  features stay dense but see the same context (DeepLab,
  arXiv:1606.00915). A valid `output_stride` is a product of unit strides
  from the start: for unit strides 1, 2, 1, 3, 4, 1 it is 1, 2, 6 or 24.

  Args:
    net: A 4-D tensor [batch, height, width, channels].
    blocks: A non-empty list of `Block`s.
    output_stride: None for the nominal stride, else the target stride,
      counted from the image.
    outputs_collections: End-point dict(s) for every block's output.
    input_stride: The stride of `net` relative to the image (4 after slim's
      root block; `resnet_v2` passes it so that `output_stride` and its
      errors speak of the whole network). An addition to slim's signature;
      with the default 1, `output_stride` is slim's.
    recompute_grad: If True, each unit keeps only its input for the backward
      pass, which runs it again (`recompute.Recomputed`): less memory, a
      second forward pass of each unit. Only the units' own outputs are then
      end points. (An addition to slim's signature.)
    feature_levels: None, or a dict {stride: FeatureLevel} in which each
      unit's output is recorded as the level at its stride, as it is built
      (see `record_level`; an addition to slim's signature).

  Returns:
    The output tensor, at stride `output_stride` if given.

  Raises:
    ValueError: If `blocks` is malformed or `output_stride` cannot be reached.
  """
  blocks = check_blocks(blocks)
  plan = unit_plan(blocks, output_stride, input_stride)
  for block, steps in zip(blocks, plan):
    with scopes.variable_scope(block.scope) as block_path:
      for i, (unit, (stride, rate, reached)) in enumerate(
          zip(block.args, steps)):
        with scopes.variable_scope(f'unit_{i + 1}'):
          unit = dict(unit, stride=stride, rate=rate)
          if recompute_grad:
            net = _recomputed_unit(block.unit_fn, net, outputs_collections,
                                   **unit)
          else:
            net = block.unit_fn(net, **unit)
        record_level(feature_levels, reached,
                     _end_point_of(outputs_collections, net), net)
    net = scopes.collect_named_outputs(outputs_collections, block_path, net)
  return net


def scaled_depth(depth, multiplier):
  """A depth widened by `multiplier`: round(depth * multiplier), at least 1."""
  return max(1, round(depth * multiplier))


def scale_width(blocks, multiplier):
  """Returns `blocks` with every unit's depths multiplied (a wider network).

  Args:
    blocks: A list of `Block`s.
    multiplier: A positive number; each depth becomes round(depth *
      multiplier), at least 1 (BiT's R50x2 is 2, WRN-style widening).

  Returns:
    A list of `Block`s with dict units.

  Raises:
    ValueError: If `multiplier` is not positive, or a block is malformed.
  """
  if isinstance(multiplier, bool) or not multiplier > 0:
    raise ValueError(f'A width multiplier must be positive, got {multiplier!r}.')
  depth_keys = ('depth', 'depth_bottleneck')
  return CheckedBlocks(
      Block(block.scope, block.unit_fn,
            [{k: scaled_depth(v, multiplier) if k in depth_keys else v
              for k, v in unit.items()} for unit in block.args])
      for block in check_blocks(blocks))


def with_stochastic_depth(blocks, drop_rate):
  """Returns `blocks` with stochastic depth: a `drop_rate` for every unit.

  As Huang et al. 2016 ("Deep Networks with Stochastic Depth"), the drop
  probability rises linearly with the unit's position: unit l of L drops its
  residual with probability drop_rate * l / L, so the last unit's is
  `drop_rate`. The unit functions take it as `drop_rate`.

  Args:
    blocks: A list of `Block`s.
    drop_rate: The last unit's drop probability, in [0, 1).

  Returns:
    A list of `Block`s with dict units (unchanged if drop_rate is 0).

  Raises:
    ValueError: If `drop_rate` is outside [0, 1), or a block is malformed.
  """
  if isinstance(drop_rate, bool) or not 0 <= drop_rate < 1:
    raise ValueError(f'A stochastic-depth rate must be in [0, 1), got '
                     f'{drop_rate!r}.')
  blocks = check_blocks(blocks)
  if not drop_rate:
    return blocks
  total = sum(len(block.args) for block in blocks)
  index, result = 0, []
  for block in blocks:
    units = []
    for unit in block.args:
      index += 1
      units.append(dict(unit, drop_rate=drop_rate * index / total))
    result.append(Block(block.scope, block.unit_fn, units))
  return CheckedBlocks(result)
