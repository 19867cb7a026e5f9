"""The network of an experiment: ImageNet-style root block or a CIFAR stem."""

import keras

import resnet_v2


def cifar_blocks(depth):
  """The paper's CIFAR bottleneck ResNets: depth = 9n + 2 (164, 1001, ...).

  Three stages of n bottleneck units of widths 16, 32, 64 (outputs 64, 128,
  256); the stride 2 between stages sits in each stage's last unit.

  Args:
    depth: 9n + 2 for a positive n.

  Returns:
    A list of three `Block`s.

  Raises:
    ValueError: If depth is not 9n + 2.
  """
  if depth < 11 or (depth - 2) % 9:
    raise ValueError(f'A CIFAR ResNet v2 has depth 9n+2 (e.g. 164 or 1001), '
                     f'got {depth}.')
  n = (depth - 2) // 9
  return resnet_v2.parse_blocks(f'16x{n}/2, 32x{n}/2, 64x{n}')


def build(blocks, num_classes, image_size, stem='imagenet', weight_decay=1e-4,
          sync_batch_norm=False, dtype_policy=None, scope='resnet_v2'):
  """Builds the classifier as a `keras.Model`.

  Args:
    blocks: A list of `Block`s.
    num_classes: Logits width.
    image_size: Input height and width.
    stem: 'imagenet' for slim's root block (7x7/2 conv1 + 3x3/2 pool1), or
      'cifar' for the paper's CIFAR stem: one 3x3 conv with 16 outputs, no
      BatchNorm or ReLU (the first unit's preact applies them).
    weight_decay: Slim-style L2 weight decay on conv kernels.
    sync_batch_norm: Compute BatchNorm statistics over all replicas.
    dtype_policy: A Keras dtype policy, or None for float32.
    scope: The network scope (weight path prefix).

  Returns:
    A `keras.Model` from images to float32 logits.

  Raises:
    ValueError: For an unknown stem or bad blocks.
  """
  if stem not in ('imagenet', 'cifar'):
    raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}.")
  arg_sc = resnet_v2.resnet_arg_scope(weight_decay=weight_decay)
  with resnet_v2.using_dtype_policy(dtype_policy or 'float32'):
    inputs = keras.Input((image_size, image_size, 3), name='images')
    with resnet_v2.arg_scope(arg_sc), resnet_v2.arg_scope(
        [resnet_v2.batch_norm], synchronized=sync_batch_norm):
      net = inputs
      with resnet_v2.variable_scope(scope):
        if stem == 'cifar':
          net = resnet_v2.conv2d(net, 16, 3, activation_fn=None,
                                 normalizer_fn=None, scope='conv1')
      # resnet_v2 re-enters the same scope, so weights stay under it.
      logits, _ = resnet_v2.resnet_v2(net, blocks, num_classes,
                                      include_root_block=stem == 'imagenet',
                                      scope=scope)
    return keras.Model(inputs, logits, name=scope)
