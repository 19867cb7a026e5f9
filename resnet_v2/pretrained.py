"""Named pretrained ResNet v2s of every family, and `create_model`.

    model = resnet_v2.create_model('bit_r50x1', num_classes=10,
                                   checkpoint_path='BiT-M-R50x1.npz')
    resnet_v2.list_models()   # ['bit_r101x1', ..., 'timm_resnetv2_50x1_bit']

Each name is a network in its family's layout, built by `build_model` (so
with slim's scopes, end points and `feature_info`), with what is needed to
use its published weights: the file and how it names the weights
(`weight_names`), the classes and their order, and the preprocessing its
source evaluated with. The families differ in:

- where a block strides: slim and Keras in its last unit, BiT and timm in
  its first (`stride_unit`);
- which units project the shortcut: slim those whose depth changes, Keras
  and timm also every block's first, BiT also those that stride
  (`projection`);
- conv biases: slim and Keras have them, BiT and timm only on the head
  (`conv_biases`);
- the stem's pooling (`stems`): slim 'SAME', Keras and BiT zero-padded,
  timm -inf-padded (its BiT models zero-padded);
- normalization: BatchNorm with eps 1e-5 (slim, timm) or 1.001e-5 (Keras);
  GroupNorm with 32 groups and Weight Standardization with eps 1e-10 (BiT)
  or 1e-8 (timm's BiT models).

All take images in [-1, 1] (timm: mean and std 0.5 of [0, 1], the same).

Loading is strict (`checkpoints.load_weights`). The head is loaded when the
model has the file's class count; otherwise (or for a file without one) the
model gets a fresh head, zeros for BiT as BiT fine-tunes, and one log line
says so.
"""

import dataclasses
from typing import Tuple

from absl import logging

from resnet_v2 import arg_scopes
from resnet_v2 import checkpoints
from resnet_v2 import models
from resnet_v2 import nets
from resnet_v2 import weight_files
from resnet_v2 import weight_names


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How a network's source fed it images.

  Attributes:
    image_size: The default training and evaluation size.
    test_size: The size its source's published accuracy was measured at.
    eval: 'slim_inception' (tf-slim's: central 87.5% of height and width, TF1
      bilinear resize), 'central_crop' (the central `crop_fraction` square of
      the shorter side, resized) or 'resize' (the whole image, resized).
    crop_fraction: The kept side fraction of 'central_crop'.
    resize_method: 'bilinear' or 'bicubic'.
    mean, std: Pixels are (x - mean) / std for x in [0, 255].
  """
  image_size: int
  test_size: int
  eval: str
  crop_fraction: float = 0.875
  resize_method: str = 'bilinear'
  mean: Tuple[float, float, float] = (127.5, 127.5, 127.5)
  std: Tuple[float, float, float] = (127.5, 127.5, 127.5)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A named network and its published weights.

  Attributes:
    name: Its name, also its scope and the model's name.
    family: Who published it: 'tf-slim', 'keras', 'bit' or 'timm'.
    num_units: Bottleneck units per block.
    width: The width multiplier of every depth (BiT's x1..x4).
    stride_unit, projection: The block layout (`nets.resnet_v2_block`).
    stem: A name of `stems.STEMS`.
    normalization: 'batch_norm' or 'group_norm' (with Weight
      Standardization).
    layer_options: Further arguments of the arg scope (`resnet_arg_scope` or
      `bit_arg_scope`): epsilons, BatchNorm decay, conv biases.
    num_classes: The classes of the published head.
    labels: Which classes, in which order: 'imagenet' (the 1000 ILSVRC-2012
      synsets, sorted, as TFDS's imagenet2012), 'imagenet+background' (1001,
      'background' first) or 'imagenet21k' (21843 ImageNet-21k classes).
    labels_offset: What to add to TFDS imagenet2012 labels (1 for
      'imagenet+background').
    zero_head: Whether a fresh head starts at zero (BiT) rather than the
      arg scope's initializer.
    preprocessing: Its `Preprocessing`.
    weight_file: The published file(s), for messages and the README.
    published_top1: What its source reports, and where.
  """
  name: str
  family: str
  num_units: Tuple[int, ...]
  width: int
  stride_unit: str
  projection: str
  stem: str
  normalization: str
  layer_options: dict
  num_classes: int
  labels: str
  labels_offset: int
  zero_head: bool
  preprocessing: Preprocessing
  weight_file: str
  published_top1: str


_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
          200: (3, 24, 36, 3)}
_MODELS = {}


def register_model(spec):
  """Adds a `ModelSpec` to the names `create_model` knows."""
  if spec.name in _MODELS:
    raise ValueError(f'A model named {spec.name!r} exists already.')
  _MODELS[spec.name] = spec


def list_models():
  """The names `create_model` takes, sorted."""
  return sorted(_MODELS)


def get_model_spec(name):
  """The `ModelSpec` of a name.

  Raises:
    ValueError: For an unknown name, listing the known ones.
  """
  if name not in _MODELS:
    raise ValueError(f'Unknown model {name!r}; known models are '
                     f'{", ".join(list_models())}.')
  return _MODELS[name]


def blocks(spec):
  """The blocks of a spec's network, before its width multiplier."""
  strides = (2, 2, 2, 1) if spec.stride_unit == 'last' else (1, 2, 2, 2)
  return [nets.resnet_v2_block(f'block{i + 1}', base, units, stride,
                               stride_unit=spec.stride_unit,
                               projection=spec.projection)
          for i, (base, units, stride) in enumerate(
              zip((64, 128, 256, 512), spec.num_units, strides))]


def arg_scope(spec, weight_decay=0.0, sync_batch_norm=False):
  """The arg scope that gives a spec's layers: its normalization, epsilons,
  BatchNorm decay and conv biases, with the given weight decay."""
  if spec.normalization == 'group_norm':
    return arg_scopes.bit_arg_scope(weight_decay=weight_decay,
                                    **spec.layer_options)
  return arg_scopes.resnet_arg_scope(weight_decay=weight_decay,
                                     sync_batch_norm=sync_batch_norm,
                                     **spec.layer_options)


def build(spec, num_classes=None, input_shape=None, weight_decay=0.0,
          sync_batch_norm=False, **build_kwargs):
  """Builds a spec's network, its weights not loaded (see `create_model`).

  Args:
    spec: A `ModelSpec`.
    num_classes: The head's classes; None for the published head's.
    input_shape: The image shape; None for the spec's default size.
    weight_decay: slim-style L2 on convolution kernels (0: none).
    sync_batch_norm: Synchronized BatchNorm (BatchNorm networks).
    **build_kwargs: Further `build_model` arguments (dtype_policy,
      drop_path_rate, recompute_grad, output_stride, ...).

  Returns:
    A `keras.Model` named `spec.name`.
  """
  size = spec.preprocessing.image_size
  return models.build_model(
      blocks(spec), spec.num_classes if num_classes is None else num_classes,
      input_shape=input_shape or (size, size, 3), scope=spec.name,
      arg_sc=arg_scope(spec, weight_decay, sync_batch_norm), stem=spec.stem,
      width_multiplier=spec.width, **build_kwargs)


def load(model, spec, path, zero_head=None):
  """Loads a spec's published weight file into a model built by `build`.

  The head is loaded when the model has the file's class count; otherwise,
  or if the file has no head (Keras's `_notop` files), the model's head is
  left fresh, set to zeros if `zero_head` (default: the spec's), and one log
  line says so.

  Args:
    model: From `build(spec, ...)`.
    spec: Its `ModelSpec`.
    path: The weight file (any of the formats, recognized by content), or
      a `weight_files.WeightFile`.
    zero_head: Zero a fresh head (True), keep its initial values (False),
      or the spec's choice (None).

  Returns:
    True if the file's head was loaded.

  Raises:
    ValueError: If the file cannot be read or does not match the network
      (listing the differences).
  """
  try:
    weights = (path if isinstance(path, weight_files.WeightFile)
               else weight_files.open_weights(path))
  except ValueError as e:
    raise ValueError(f'{spec.name}: {e} Its published weights are '
                     f'{spec.weight_file}.') from None
  classes = model.output.shape[-1] if len(model.output.shape) == 2 else None
  file_classes = _head_classes(spec, weights)
  with_head = classes is not None and classes == file_classes
  checkpoints.load_weights(model, weights, spec.family,
                           skip_logits=not with_head, scope=spec.name)
  if classes is not None and not with_head:
    zero = spec.zero_head if zero_head is None else zero_head
    if zero:
      logits = model.get_layer(f'{spec.name}.logits')
      for weight in logits.weights:
        weight.assign(weight * 0)
    logging.info('%s: a fresh head of %d classes (%s; %s), the rest from %s.',
                 spec.name, classes, 'zeros' if zero else 'initialized',
                 f'the file has {file_classes}' if file_classes
                 else 'the file has none', weights.path)
  return with_head


def create_model(name, num_classes=None, input_shape=None,
                 checkpoint_path=None, **build_kwargs):
  """A named pretrained network, with its published weights if given.

  timm's convention: `create_model('timm_resnetv2_50', num_classes=10,
  checkpoint_path='model.safetensors')` builds the network in its family's
  layout and loads the file, whatever its format (a tf-slim checkpoint, a
  Keras HDF5 file with or without top, a BiT .npz, a timm .safetensors).

  Args:
    name: One of `list_models()`.
    num_classes: The head's classes; None for the file's (or, without a
      file, the published head's). A different count gets a fresh head.
    input_shape: The image shape; None for the name's default size.
    checkpoint_path: The weight file; None for random weights.
    **build_kwargs: As for `build` (weight_decay, dtype_policy, ...).

  Returns:
    A `keras.Model`; `model.spec` is its `ModelSpec`.

  Raises:
    ValueError: For an unknown name, an unreadable file or one that does not
      match the network.
  """
  spec = get_model_spec(name)
  if num_classes is None and checkpoint_path is not None:
    num_classes = _head_classes(
        spec, weight_files.open_weights(checkpoint_path)) or spec.num_classes
  model = build(spec, num_classes, input_shape, **build_kwargs)
  if checkpoint_path is not None:
    load(model, spec, checkpoint_path)
  model.spec = spec
  return model


def _head_classes(spec, weights):
  """The class count of a `WeightFile`'s head, or None if it has none."""
  key, layout = weight_names.key_of(spec.family, 'logits/kernel')
  shape = weights.shapes.get(weight_names.prefix(spec.family, spec.name) + key)
  if shape is None:
    return None
  return weight_names.shape_to_ours(layout, shape)[-1]


def _register_all():
  """The published networks of the four families."""
  slim = Preprocessing(299, 299, 'slim_inception')
  slim_top1 = {50: '75.6', 101: '77.0', 152: '77.8', 200: '79.9*'}
  for depth in (50, 101, 152, 200):
    register_model(ModelSpec(
        f'resnet_v2_{depth}', 'tf-slim', _UNITS[depth], 1, 'last', 'depth',
        'imagenet', 'batch_norm', {}, 1001, 'imagenet+background', 1, False,
        slim, f'resnet_v2_{depth}_2017_04_14.tar.gz (resnet_v2_{depth}.ckpt)',
        f'{slim_top1[depth]} (tf-slim README; * from the paper)'))
  keras_top1 = {50: '76.0', 101: '77.2', 152: '78.0'}
  for depth in (50, 101, 152):
    register_model(ModelSpec(
        f'keras_resnet{depth}v2', 'keras', _UNITS[depth], 1, 'last',
        'first_unit', 'imagenet_zero_pad', 'batch_norm',
        {'batch_norm_epsilon': 1.001e-5, 'batch_norm_decay': 0.99}, 1000,
        'imagenet', 0, False, Preprocessing(224, 224, 'central_crop'),
        f'resnet{depth}v2_weights_tf_dim_ordering_tf_kernels[_notop].h5',
        f'{keras_top1[depth]} (keras.io applications table)'))
  bit = {'groups': 32, 'group_norm_epsilon': 1e-5,
         'standardization_epsilon': 1e-10, 'conv_biases': False}
  bit_top1 = {(50, 1): '80.4', (50, 3): '84.0', (101, 1): '82.3',
              (101, 3): '84.4', (152, 2): '84.5', (152, 4): '84.9'}
  for (depth, width), top1 in bit_top1.items():
    register_model(ModelSpec(
        f'bit_r{depth}x{width}', 'bit', _UNITS[depth], width, 'first',
        'stride', 'imagenet_zero_pad', 'group_norm', bit, 21843,
        'imagenet21k', 0, True, Preprocessing(224, 480, 'resize'),
        f'BiT-M-R{depth}x{width}.npz (ImageNet-21k), BiT-S-R{depth}x{width}'
        f'.npz, BiT-M-R{depth}x{width}-ILSVRC2012.npz (ImageNet-1k)',
        f'{top1} for BiT-M-R{depth}x{width}-ILSVRC2012 at 448-480 px (timm\'s'
        ' measurement of these weights)'))
  timm_bn = {'batch_norm_epsilon': 1e-5, 'batch_norm_decay': 0.9,
             'conv_biases': False}
  timm = Preprocessing(224, 288, 'central_crop', 0.95, 'bicubic')
  for depth, top1 in ((50, '80.41 at 224, 81.41 at 288'),
                      (101, '82.04 at 224, 83.00 at 288')):
    register_model(ModelSpec(
        f'timm_resnetv2_{depth}', 'timm', _UNITS[depth], 1, 'first',
        'first_unit', 'imagenet_symmetric', 'batch_norm', timm_bn, 1000,
        'imagenet', 0, False, timm,
        f'resnetv2_{depth}.a1h_in1k model.safetensors',
        f'{top1} (timm results-imagenet.csv)'))
  register_model(ModelSpec(
      'timm_resnetv2_50x1_bit', 'timm', _UNITS[50], 1, 'first', 'first_unit',
      'imagenet_zero_pad', 'group_norm',
      dict(bit, standardization_epsilon=1e-8),
      1000, 'imagenet', 0, True,
      Preprocessing(224, 224, 'central_crop', 0.875, 'bicubic'),
      'resnetv2_50x1_bit.goog_distilled_in1k model.safetensors',
      '82.82 at 224 (timm results-imagenet.csv)'))


_register_all()
