"""Named pretrained ResNet v2s of every family, and `create_model`.

    model = resnet_v2.create_model('bit_r50x1', num_classes=10,
                                   pretrained=True)
    resnet_v2.list_models()   # ['bit_r101x1', ..., 'timm_resnetv2_50x1_bit']

Each name is a network in its family's layout, built by `build_model` (so
with slim's scopes, end points and `feature_info`), with what is needed to
use its published weights: the files (URLs, the MD5s Keras publishes,
fetched into a cache by `weight_cache`), how they name the weights
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
from resnet_v2 import weight_cache
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
    weights: The published files (`weight_cache.PublishedFile`), the
      default first; empty where none is published.
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
  weights: Tuple[weight_cache.PublishedFile, ...] = ()


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


def published_file(spec, pretrained=True, num_classes=None):
  """The published file that `create_model(..., pretrained=...)` loads.

  Of the files with the asked tag, the one whose head has `num_classes`;
  else one without a head (Keras's `_notop`, smaller, and the model gets a
  fresh head anyway); else the first, whose head is then replaced.

  Args:
    spec: A `ModelSpec`.
    pretrained: True for the spec's default weights (its first file's tag),
      or a tag: 'BiT-S' or 'BiT-M-ILSVRC2012' for a BiT name.
    num_classes: The model's classes; None for the file's.

  Returns:
    A `weight_cache.PublishedFile`.

  Raises:
    ValueError: If the name has no published weights, or none of that tag.
  """
  if not spec.weights:
    raise ValueError(f'{spec.name} has no published weights '
                     f'({spec.weight_file}): build it without pretrained, or '
                     'load your own file with checkpoint_path=.')
  tag = spec.weights[0].tag if pretrained is True else pretrained
  files = [f for f in spec.weights if f.tag == tag]
  if not files:
    tags = ', '.join(dict.fromkeys(f.tag for f in spec.weights))
    raise ValueError(f'{spec.name} has no published weights {tag!r}; its '
                     f'weights are {tags} (pretrained=True: the first).')
  if num_classes is None:
    return files[0]
  fitting = [f for f in files if f.num_classes == num_classes]
  headless = [f for f in files if f.num_classes is None]
  return (fitting or headless or files)[0]


def fetch_weights(spec, pretrained=True, num_classes=None):
  """The local path of a spec's published file, fetched into the cache once
  (`weight_cache.fetch`: $RESNET_V2_HOME, $RESNET_V2_OFFLINE,
  $RESNET_V2_MIRROR). Arguments as `published_file`'s.

  Raises:
    ValueError: As `published_file`.
    weight_cache.FetchError: If the file cannot be fetched or is not the
      published one.
  """
  return weight_cache.fetch(published_file(spec, pretrained, num_classes))


def create_model(name, num_classes=None, input_shape=None,
                 checkpoint_path=None, pretrained=False, **build_kwargs):
  """A named pretrained network, with its published weights if asked.

  timm's convention: `create_model('timm_resnetv2_50', num_classes=10,
  pretrained=True)` builds the network in its family's layout, fetches its
  published file into the cache (once) and loads it; `checkpoint_path=`
  loads a file of yours instead, whatever its format (a tf-slim checkpoint,
  a Keras HDF5 file with or without top, a BiT .npz, a timm .safetensors).

  Args:
    name: One of `list_models()`.
    num_classes: The head's classes; None for the file's (or, without a
      file, the published head's). A different count gets a fresh head.
    input_shape: The image shape; None for the name's default size.
    checkpoint_path: A weight file; None for random weights or `pretrained`.
    pretrained: True for the published weights (`spec.weights[0]`), or the
      tag of other published weights of the name (BiT: 'BiT-S',
      'BiT-M-ILSVRC2012'); False for none.
    **build_kwargs: As for `build` (weight_decay, dtype_policy, ...).

  Returns:
    A `keras.Model`; `model.spec` is its `ModelSpec`.

  Raises:
    ValueError: For an unknown name or tag, a name without published
      weights, an unreadable file or one that does not match the network.
    weight_cache.FetchError: If the published file cannot be fetched, or
      is not the published one.
  """
  spec = get_model_spec(name)
  if pretrained:
    if checkpoint_path is not None:
      raise ValueError('Give create_model pretrained= (the published '
                       'weights) or checkpoint_path= (a file), not both.')
    checkpoint_path = fetch_weights(spec, pretrained, num_classes)
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


_SLIM = 'http://download.tensorflow.org/models/'
_KERAS = 'https://storage.googleapis.com/tensorflow/keras-applications/resnet/'
# keras/src/applications/resnet.py's WEIGHTS_HASHES: (with top, _notop).
_KERAS_MD5 = {50: ('3ef43a0b657b3be2300d5770ece849e0',
                   'fac2f116257151a9d068a22e544a4917'),
              101: ('6343647c601c52e1368623803854d971',
                    'c0ed64b8031c3730f411d2eb4eea35b5'),
              152: ('a49b44d1979771252814e80f8ec446f9',
                    'ed17cf2e0169df9d443503ef94b23b33')}
_BIT = 'https://storage.googleapis.com/bit_models/'


def _timm_hub(model, tag):
  """timm's file on the Hugging Face hub: repo timm/<model>.<tag> (timm's
  `resnetv2.py` default_cfgs, hf_hub_id='timm/'), 1000 classes."""
  return (weight_cache.PublishedFile(
      f'https://huggingface.co/timm/{model}.{tag}/resolve/main/'
      'model.safetensors', tag, 1000),)


def _register_slim_and_keras():
  """The published networks of tf-slim and Keras applications."""
  slim = Preprocessing(299, 299, 'slim_inception')
  slim_top1 = {50: '75.6', 101: '77.0', 152: '77.8', 200: '79.9*'}
  for depth in (50, 101, 152, 200):
    archive = f'resnet_v2_{depth}_2017_04_14.tar.gz'
    published = (weight_cache.PublishedFile(
        f'{_SLIM}{archive}', 'imagenet', 1001,
        member=f'resnet_v2_{depth}.ckpt'),) if depth != 200 else ()
    register_model(ModelSpec(
        f'resnet_v2_{depth}', 'tf-slim', _UNITS[depth], 1, 'last', 'depth',
        'imagenet', 'batch_norm', {}, 1001, 'imagenet+background', 1, False,
        slim, f'{archive} (resnet_v2_{depth}.ckpt)' if published else
        'none: tf-slim publishes no resnet_v2_200 checkpoint',
        f'{slim_top1[depth]} (tf-slim README; * from the paper)',
        published))
  keras_top1 = {50: '76.0', 101: '77.2', 152: '78.0'}
  for depth in (50, 101, 152):
    name = f'resnet{depth}v2_weights_tf_dim_ordering_tf_kernels'
    published = tuple(
        weight_cache.PublishedFile(f'{_KERAS}{name}{suffix}.h5', 'imagenet',
                                   classes, md5)
        for suffix, classes, md5 in zip(('', '_notop'), (1000, None),
                                        _KERAS_MD5[depth]))
    register_model(ModelSpec(
        f'keras_resnet{depth}v2', 'keras', _UNITS[depth], 1, 'last',
        'first_unit', 'imagenet_zero_pad', 'batch_norm',
        {'batch_norm_epsilon': 1.001e-5, 'batch_norm_decay': 0.99}, 1000,
        'imagenet', 0, False, Preprocessing(224, 224, 'central_crop'),
        f'{name}[_notop].h5',
        f'{keras_top1[depth]} (keras.io applications table)', published))


def _register_bit_and_timm():
  """The published networks of BiT and timm (timm's BiT among them)."""
  bit = {'groups': 32, 'group_norm_epsilon': 1e-5,
         'standardization_epsilon': 1e-10, 'conv_biases': False}
  bit_top1 = {(50, 1): '80.4', (50, 3): '84.0', (101, 1): '82.3',
              (101, 3): '84.4', (152, 2): '84.5', (152, 4): '84.9'}
  for (depth, width), top1 in bit_top1.items():
    size = f'R{depth}x{width}'
    published = tuple(
        weight_cache.PublishedFile(f'{_BIT}{file}.npz', tag, classes)
        for file, tag, classes in (
            (f'BiT-M-{size}', 'BiT-M', 21843), (f'BiT-S-{size}', 'BiT-S', 1000),
            (f'BiT-M-{size}-ILSVRC2012', 'BiT-M-ILSVRC2012', 1000)))
    register_model(ModelSpec(
        f'bit_r{depth}x{width}', 'bit', _UNITS[depth], width, 'first',
        'stride', 'imagenet_zero_pad', 'group_norm', bit, 21843,
        'imagenet21k', 0, True, Preprocessing(224, 480, 'resize'),
        f'BiT-M-R{depth}x{width}.npz (ImageNet-21k), BiT-S-R{depth}x{width}'
        f'.npz, BiT-M-R{depth}x{width}-ILSVRC2012.npz (ImageNet-1k)',
        f'{top1} for BiT-M-R{depth}x{width}-ILSVRC2012 at 448-480 px (timm\'s'
        ' measurement of these weights)', published))
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
        f'{top1} (timm results-imagenet.csv)',
        _timm_hub(f'resnetv2_{depth}', 'a1h_in1k')))
  register_model(ModelSpec(
      'timm_resnetv2_50x1_bit', 'timm', _UNITS[50], 1, 'first', 'first_unit',
      'imagenet_zero_pad', 'group_norm',
      dict(bit, standardization_epsilon=1e-8),
      1000, 'imagenet', 0, True,
      Preprocessing(224, 224, 'central_crop', 0.875, 'bicubic'),
      'resnetv2_50x1_bit.goog_distilled_in1k model.safetensors',
      '82.82 at 224 (timm results-imagenet.csv)',
      _timm_hub('resnetv2_50x1_bit', 'goog_distilled_in1k')))


_register_slim_and_keras()
_register_bit_and_timm()
