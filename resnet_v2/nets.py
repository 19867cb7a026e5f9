"""ResNet v2 networks: the generator, the standard depths and their registry.

ResNet-101 for ImageNet classification into 1001 classes:

    inputs = keras.Input((224, 224, 3))
    with arg_scope(resnet_arg_scope()):
      net, end_points = resnet_v2_101(inputs, 1001)

ResNet-101 for semantic segmentation into 21 classes, with features at
output stride 16 (use inputs of size 32k+1, e.g. 513x513, so feature corners
align with image corners):

    inputs = keras.Input((513, 513, 3))
    with arg_scope(resnet_arg_scope()):
      net, end_points = resnet_v2_101(inputs, 21, global_pool=False,
                                      output_stride=16)
"""

import keras
from tf_slim.ops.arg_scope import add_arg_scope
from tf_slim.ops.arg_scope import arg_scope

from resnet_v2 import layers
from resnet_v2 import resnet_utils
from resnet_v2 import scopes
from resnet_v2 import stems
from resnet_v2 import units

def resnet_v2(inputs,
              blocks,
              num_classes=None,
              is_training=None,
              global_pool=True,
              output_stride=None,
              include_root_block=True,
              spatial_squeeze=True,
              reuse=None,
              scope=None,
              root_depth=None,
              stem='imagenet',
              feature_levels=None):
  """Builds a pre-activation ResNet from a list of blocks.

  The root `conv1` (7x7/2, with bias) has no BatchNorm or ReLU because the
  first unit's `preact` applies them; for the same reason the last unit's
  output goes through `postnorm` (BatchNorm+ReLU) before pooling (Appendix
  of He et al. 2016). For classification at 224x224 the last block gives 7x7
  features at the nominal stride 32. For dense prediction, set
  `global_pool=False` and usually `output_stride=16`; use inputs of size
  32k+1 so the output, of size (size - 1) / output_stride + 1, has corners
  aligned with the input's.

  Args:
    inputs: A 4-D tensor [batch, height, width, channels], normally a
      `keras.Input`.
    blocks: A non-empty list of `Block`s.
    num_classes: If a positive int, add a 1x1 `logits` convolution with that
      many outputs (float32 under mixed precision); if 0 or None, return the
      features before it.
    is_training: True or False fixes BatchNorm's mode; None (the default)
      follows the Keras `training` argument of the model call.
    global_pool: If True, average over the spatial dimensions ('pool5').
    output_stride: None for the nominal stride, else the ratio of input to
      output resolution (a multiple of the stem's stride).
    include_root_block: If True, start with the stem (slim's root block,
      `conv1` and `pool1`, unless `stem` names another); if False, `inputs`
      should be the output of an activation-less convolution.
    spatial_squeeze: If True, logits are [batch, num_classes], not
      [batch, 1, 1, num_classes].
    reuse: Only None, slim's default. Keras shares weights by calling the
      same layer or model again, not through scopes, so True is an error
      that says so.
    scope: The network's scope name; defaults to 'resnet_v2'.
    root_depth: The outputs of the stem's convolution; None for the stem's
      own (64 for slim's root block). An addition to slim's arguments, for
      width multipliers.
    stem: The stem when `include_root_block` is True, a name of
      `stems.STEMS` (an addition to slim's arguments; see `stems`).
    feature_levels: None, or a dict that is filled with {stride:
      `FeatureLevel`}: the last feature map at each stride, the deepest one
      being the `postnorm` output (an addition to slim's arguments).

  Returns:
    net: The logits if `num_classes`, else the (pooled) features.
    end_points: A dict from slim scope paths to tensors: every conv, unit and
      block output, plus 'global_pool', '<scope>/logits',
      '<scope>/spatial_squeeze' and 'predictions' when they exist.

  Raises:
    ValueError: If the input is not 4-D, `reuse` is set, the stem is
      unknown, the blocks are malformed, or `output_stride` is invalid or
      cannot be reached.
  """
  if reuse:
    raise ValueError(
        'resnet_v2(reuse=True): Keras shares weights by calling the same '
        'model again, not by reusing scopes. Build the network once, '
        'model = keras.Model(inputs, net), and call model(other_inputs).')
  if len(inputs.shape) != 4:
    raise ValueError('resnet_v2 expects a 4-D input [batch, height, width, '
                     f'channels], got shape {tuple(inputs.shape)}.')
  root = stems.get_stem(stem if include_root_block else 'none')
  blocks = resnet_utils.check_blocks(blocks)
  end_points = {}
  with scopes.variable_scope(scope or 'resnet_v2') as sc:
    with arg_scope([layers.conv2d, units.bottleneck, units.basic,
                    resnet_utils.stack_blocks_dense],
                   outputs_collections=end_points), \
         arg_scope([layers.batch_norm], is_training=is_training):
      net = inputs
      if root.build is not None:
        net = root.build(net, root_depth or root.depth, feature_levels)
      net = resnet_utils.stack_blocks_dense(
          net, blocks, output_stride, input_stride=root.stride,
          feature_levels=feature_levels)
      net = layers.norm_activation(net, scope='postnorm')
      deepest = resnet_utils.unit_plan(blocks, output_stride,
                                       root.stride)[-1][-1][2]
      resnet_utils.record_level(feature_levels, deepest, sc + '/postnorm', net)
      if global_pool:
        net = keras.ops.mean(net, axis=[1, 2], keepdims=True)
        end_points['global_pool'] = net
      if num_classes:
        net = layers.conv2d(net, num_classes, [1, 1], activation_fn=None,
                            normalizer_fn=None, biases_initializer='zeros',
                            dtype='float32', weight_standardization=False,
                            scope='logits')
        if spatial_squeeze:
          net = keras.ops.squeeze(net, axis=[1, 2])
          end_points[sc + '/spatial_squeeze'] = net
        end_points['predictions'] = keras.ops.softmax(net)
  return net, end_points


resnet_v2.default_image_size = 224


# Where a block's stride goes, and which units get a projection shortcut
# (see `resnet_v2_block`).
STRIDE_UNITS = ('last', 'first')
PROJECTIONS = ('depth', 'first_unit', 'stride')


def _block(scope, unit_fn, unit, num_units, stride, stride_unit, projection):
  """A block of `num_units` copies of `unit`, with the layout options."""
  if stride_unit not in STRIDE_UNITS:
    raise ValueError(f'Block {scope!r}: stride_unit must be one of '
                     f'{STRIDE_UNITS}, got {stride_unit!r}.')
  if projection not in PROJECTIONS:
    raise ValueError(f'Block {scope!r}: projection must be one of '
                     f'{PROJECTIONS}, got {projection!r}.')
  strided = 0 if stride_unit == 'first' else num_units - 1
  units = []
  for index in range(num_units):
    args = dict(unit, stride=stride if index == strided else 1)
    if ((projection == 'first_unit' and index == 0)
        or (projection == 'stride' and args['stride'] > 1)):
      args['project'] = True
    units.append(args)
  return resnet_utils.Block(scope, unit_fn, units)


@add_arg_scope
def resnet_v2_block(scope, base_depth, num_units, stride, stride_unit='last',
                    projection='depth'):
  """Returns a block of bottleneck units of output depth 4 * base_depth.

  The families of ResNet v2 differ in two choices, both options here (and,
  through `arg_scope`, of every block that `parse_blocks` makes):

  - Where the stride goes. slim and Keras applications put it in a block's
    LAST unit, so that the next block starts at the lower resolution; BiT and
    timm put it in the FIRST unit, as He et al.'s code does. For the same
    weights the two are different networks (the units between the two
    places run at another resolution); slim's form keeps the activations
    of one more unit at the lower resolution, which saves memory.
  - Which units project their shortcut with a 1x1 convolution instead of
    passing the (subsampled) input: 'depth' (slim) those whose depth
    changes; 'first_unit' (Keras applications, timm) the first unit of
    every block as well; 'stride' (BiT) those whose depth changes or that
    stride. For the standard depths all three choose the same units.

  Args:
    scope: The block's scope name.
    base_depth: The bottleneck depth of each unit.
    num_units: The number of units.
    stride: The block's stride.
    stride_unit: 'last' (slim's) or 'first': the unit that carries the stride.
    projection: 'depth', 'first_unit' or 'stride', as above.

  Returns:
    A `Block`.

  Raises:
    ValueError: For a non-positive depth or unit count, or an unknown option.
  """
  base_depth = resnet_utils.check_positive_int(
      base_depth, f'Block {scope!r}', 'base_depth')
  num_units = resnet_utils.check_positive_int(
      num_units, f'Block {scope!r}', 'num_units')
  return _block(scope, units.bottleneck,
                {'depth': base_depth * 4, 'depth_bottleneck': base_depth},
                num_units, stride, stride_unit, projection)


@add_arg_scope
def resnet_v2_basic_block(scope, depth, num_units, stride, stride_unit='last',
                          projection='depth'):
  """Returns a block of basic units of output depth `depth`.

  Args:
    scope: The block's scope name.
    depth: The depth of each unit's convolutions and output.
    num_units: The number of units.
    stride: The block's stride.
    stride_unit: 'last' (slim's) or 'first' (see `resnet_v2_block`).
    projection: 'depth', 'first_unit' or 'stride' (see `resnet_v2_block`).

  Returns:
    A `Block`.

  Raises:
    ValueError: For a non-positive depth or unit count, or an unknown option.
  """
  depth = resnet_utils.check_positive_int(depth, f'Block {scope!r}', 'depth')
  num_units = resnet_utils.check_positive_int(
      num_units, f'Block {scope!r}', 'num_units')
  return _block(scope, units.basic, {'depth': depth}, num_units, stride,
                stride_unit, projection)


# The block builder of each kind of unit.
BLOCK_BUILDERS = {'bottleneck': resnet_v2_block, 'basic': resnet_v2_basic_block}

# depth -> (unit kind, ((base_depth, num_units, stride) per block)).
_DEPTHS = {}


def register_depth(depth, num_units, base_depths=(64, 128, 256, 512),
                   strides=(2, 2, 2, 1), unit='bottleneck'):
  """Registers a depth so `blocks_for_depth` and the flags know it.

  Args:
    depth: The name of the variant, e.g. 26 for resnet_v2_26.
    num_units: Units per block, e.g. (2, 2, 2, 2).
    base_depths: Per block, the bottleneck depth (output depth / 4) of
      bottleneck units, or the depth of basic units.
    strides: Stride of each block's last unit.
    unit: 'bottleneck' or 'basic'.

  Raises:
    ValueError: If the three sequences differ in length or hold non-positive
      values, or the unit kind is unknown.
  """
  if unit not in BLOCK_BUILDERS:
    raise ValueError(f'register_depth({depth}): unit must be one of '
                     f'{list(BLOCK_BUILDERS)}, got {unit!r}.')
  spec = tuple(zip(base_depths, num_units, strides))
  if not spec or not len(num_units) == len(base_depths) == len(strides):
    raise ValueError(
        f'register_depth({depth}): num_units {num_units}, base_depths '
        f'{base_depths} and strides {strides} must have one entry per block.')
  # Building the blocks checks every value and names a bad one.
  resnet_utils.check_blocks([BLOCK_BUILDERS[unit](f'block{i + 1}', *block)
                             for i, block in enumerate(spec)])
  _DEPTHS[depth] = (unit, spec)


def registered_depths():
  """Returns the registered depths, sorted."""
  return sorted(_DEPTHS)


def blocks_for_depth(depth):
  """Returns the blocks of a registered depth.

  Args:
    depth: A registered depth, e.g. 50.

  Returns:
    A list of `Block`s named 'block1', 'block2', ...

  Raises:
    ValueError: If the depth is not registered.
  """
  if depth not in _DEPTHS:
    raise ValueError(
        f'Unknown ResNet v2 depth {depth!r}; known depths are '
        f'{registered_depths()}. Register one with '
        'resnet_v2.register_depth(depth, num_units) or pass a block list.')
  unit, spec = _DEPTHS[depth]
  return [BLOCK_BUILDERS[unit](f'block{i + 1}', *block)
          for i, block in enumerate(spec)]


def cifar_blocks(depth):
  """The paper's CIFAR bottleneck ResNets: depth = 9n + 2 (164, 1001, ...).

  He et al. 2016, section 4: three stages of n bottleneck units of
  bottleneck depths 16, 32, 64 (outputs 64, 128, 256) at 32x32, 16x16 and
  8x8; the stride 2 between stages sits in each stage's last unit, as slim
  places it. Built after a 3x3 stem, not slim's root block (see
  `build_model(..., stem='cifar')`).

  Args:
    depth: 9n + 2 for a positive n: 3n units of 3 layers, the stem and the
      logits.

  Returns:
    A list of three `Block`s.

  Raises:
    ValueError: If depth is not 9n + 2.
  """
  if (isinstance(depth, bool) or not isinstance(depth, int) or depth < 11
      or (depth - 2) % 9):
    raise ValueError(f'A CIFAR ResNet v2 has depth 9n+2 (e.g. 164 or 1001), '
                     f'got {depth!r}.')
  n = (depth - 2) // 9
  return [resnet_v2_block('block1', 16, n, 2),
          resnet_v2_block('block2', 32, n, 2),
          resnet_v2_block('block3', 64, n, 1)]


register_depth(18, (2, 2, 2, 2), unit='basic')
register_depth(34, (3, 4, 6, 3), unit='basic')
register_depth(50, (3, 4, 6, 3))
register_depth(101, (3, 4, 23, 3))
register_depth(152, (3, 8, 36, 3))
register_depth(200, (3, 24, 36, 3))


def resnet_v2_18(inputs, num_classes=None, is_training=None, global_pool=True,
                 output_stride=None, spatial_squeeze=True, reuse=None,
                 scope='resnet_v2_18'):
  """ResNet-18 v2 (basic units). See `resnet_v2` for the arguments."""
  return resnet_v2(inputs, blocks_for_depth(18), num_classes,
                   is_training=is_training, global_pool=global_pool,
                   output_stride=output_stride, include_root_block=True,
                   spatial_squeeze=spatial_squeeze, reuse=reuse, scope=scope)


def resnet_v2_34(inputs, num_classes=None, is_training=None, global_pool=True,
                 output_stride=None, spatial_squeeze=True, reuse=None,
                 scope='resnet_v2_34'):
  """ResNet-34 v2 (basic units). See `resnet_v2` for the arguments."""
  return resnet_v2(inputs, blocks_for_depth(34), num_classes,
                   is_training=is_training, global_pool=global_pool,
                   output_stride=output_stride, include_root_block=True,
                   spatial_squeeze=spatial_squeeze, reuse=reuse, scope=scope)


def resnet_v2_50(inputs, num_classes=None, is_training=None, global_pool=True,
                 output_stride=None, spatial_squeeze=True, reuse=None,
                 scope='resnet_v2_50'):
  """ResNet-50 v2. See `resnet_v2` for the arguments and return values."""
  return resnet_v2(inputs, blocks_for_depth(50), num_classes,
                   is_training=is_training, global_pool=global_pool,
                   output_stride=output_stride, include_root_block=True,
                   spatial_squeeze=spatial_squeeze, reuse=reuse, scope=scope)


def resnet_v2_101(inputs, num_classes=None, is_training=None, global_pool=True,
                  output_stride=None, spatial_squeeze=True, reuse=None,
                  scope='resnet_v2_101'):
  """ResNet-101 v2. See `resnet_v2` for the arguments and return values."""
  return resnet_v2(inputs, blocks_for_depth(101), num_classes,
                   is_training=is_training, global_pool=global_pool,
                   output_stride=output_stride, include_root_block=True,
                   spatial_squeeze=spatial_squeeze, reuse=reuse, scope=scope)


def resnet_v2_152(inputs, num_classes=None, is_training=None, global_pool=True,
                  output_stride=None, spatial_squeeze=True, reuse=None,
                  scope='resnet_v2_152'):
  """ResNet-152 v2. See `resnet_v2` for the arguments and return values."""
  return resnet_v2(inputs, blocks_for_depth(152), num_classes,
                   is_training=is_training, global_pool=global_pool,
                   output_stride=output_stride, include_root_block=True,
                   spatial_squeeze=spatial_squeeze, reuse=reuse, scope=scope)


def resnet_v2_200(inputs, num_classes=None, is_training=None, global_pool=True,
                  output_stride=None, spatial_squeeze=True, reuse=None,
                  scope='resnet_v2_200'):
  """ResNet-200 v2. See `resnet_v2` for the arguments and return values."""
  return resnet_v2(inputs, blocks_for_depth(200), num_classes,
                   is_training=is_training, global_pool=global_pool,
                   output_stride=output_stride, include_root_block=True,
                   spatial_squeeze=spatial_squeeze, reuse=reuse, scope=scope)


for _net in (resnet_v2_18, resnet_v2_34, resnet_v2_50, resnet_v2_101,
             resnet_v2_152, resnet_v2_200):
  _net.default_image_size = resnet_v2.default_image_size
