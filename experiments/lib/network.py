"""The network of a run: what --network says, the model, its initial weights.

One text names the network, however it is spelled on the command line:
--depth=101 (a registered depth), --blocks='16x2/2, 32x2' (a block spec),
--network=bit_r50x1 (a pretrained name of `resnet_v2.list_models()`) or
--network=my_net:blocks (Python). `check` validates the text without side
effects, as `Config` does when it is made; `resolve` turns it into what
`resnet_v2` builds, importing a user's module once per run; `build` makes
the model and `load_init_checkpoint` initializes it.
"""

import dataclasses
import difflib
import importlib
import inspect
import os
import re
import sys
from typing import Any, Optional

from absl import logging
import resnet_v2
import tensorflow as tf

from experiments.lib import errors

_BLOCKS = re.compile(r'^\s*(\d|basic\b|bottleneck\b)|\d\s*x\s*\d')
# One word that starts with a letter (not a unit's): a name, even with '50x1'
# in it ('bit_r50x1x' is a mistyped name, not a block spec).
_NAME = re.compile(r'^(?!basic|bottleneck)[A-Za-z_][\w.-]*$')
_PYTHON_FORM = ("expected 'module:function' (a function of no arguments "
                'returning a list of resnet_v2.Block, or a slim-style network '
                'function fn(inputs, num_classes, is_training=None, '
                'scope=None)), a pretrained name (one of resnet_v2.'
                'list_models()), a depth or a block spec')


def kind(text):
  """'depth', 'name', 'python' or 'blocks': what a network text is."""
  text = text.strip()
  if text.isdigit():
    return 'depth'
  if text in resnet_v2.list_models():
    return 'name'
  if ':' in text:
    return 'python'
  if _NAME.match(text):
    return 'name'
  return 'blocks' if _BLOCKS.search(text) else 'name'


def spelling(text):
  """(flag, value): the flag that spells a network text, as a user writes it.

  Error messages and the saved config.json use it, so a run directory made
  with --blocks remembers 'blocks', as earlier versions wrote it.
  """
  what = kind(text)
  if what == 'depth':
    return 'depth', int(text)
  return ('blocks' if what == 'blocks' else 'network'), text


def check(text, stem=None, normalization=None, width_multiplier=1.0):
  """Validates a network text and the network flags that go with it.

  Cheap and without side effects (no user module is imported): the depth
  must be registered, a block spec must parse, a name must be known, and
  Python must be written 'module:function'. A pretrained name fixes its stem,
  normalization and width, so other values are refused.

  Args:
    text: The network text (--network, or what --depth or --blocks spell).
    stem: --stem, or None for the network's own.
    normalization: --normalization, or None for the network's own.
    width_multiplier: --width_multiplier.

  Raises:
    ValueError: Saying what is wrong and the expected form.
  """
  what = kind(text)
  if what == 'depth':
    resnet_v2.resolve_network(int(text), stem or 'imagenet')
  elif what == 'blocks':
    resnet_v2.parse_blocks(text)
  elif what == 'python':
    module_name, _, function_name = text.partition(':')
    if not module_name or not function_name:
      raise ValueError(_PYTHON_FORM + '.')
  elif text not in resnet_v2.list_models():
    close = difflib.get_close_matches(text, resnet_v2.list_models(), n=3)
    names = f'The names: {", ".join(resnet_v2.list_models())}.'
    if close:  # A mistyped name: say so first.
      raise ValueError(f'not a known pretrained name (did you mean '
                       f'{" or ".join(close)}?); {_PYTHON_FORM}. {names}')
    raise ValueError(f'{_PYTHON_FORM}; nor is it a known pretrained name. '
                     f'{names}')
  else:
    spec = resnet_v2.get_model_spec(text)
    for flag, value, own in (('stem', stem, spec.stem),
                             ('normalization', normalization,
                              spec.normalization)):
      if value not in (None, own):
        raise ValueError(f'{text} has the {flag} {own!r}, not --{flag}='
                         f'{value}: leave --{flag} out, or use --blocks for '
                         'another network.')
    if width_multiplier != 1:
      raise ValueError(f'{text} has its own width (x{spec.width}): leave '
                       '--width_multiplier out.')


@dataclasses.dataclass(frozen=True)
class Network:
  """A resolved network text.

  Attributes:
    architecture: What `resnet_v2.build_model` takes (a depth, checked
      blocks or a network function), or None for a pretrained name.
    spec: The `resnet_v2.ModelSpec` of a pretrained name, else None.
    stem: The stem it is built with.
    normalization: 'batch_norm' or 'group_norm'.
  """
  architecture: Any
  spec: Optional[resnet_v2.ModelSpec]
  stem: str
  normalization: str


def resolve(config):
  """What the config's network is, ready to build; imports user code once.

  Args:
    config: A `Config`.

  Returns:
    The `Network`.

  Raises:
    errors.FlagError: If a --network module cannot be imported or its
      function does not give a network, or a pretrained name wants images
      scaled otherwise than the scripts feed them, naming the flag.
  """
  text, what = config.network, kind(config.network)
  if what == 'name':
    spec = resnet_v2.get_model_spec(text)
    pixels = spec.preprocessing
    if pixels.mean != (127.5,) * 3 or pixels.std != (127.5,) * 3:
      raise errors.FlagError(
          f'--network={text!r} takes images as (x - {pixels.mean}) / '
          f'{pixels.std}; the experiment scripts feed [-1, 1], (x - 127.5) '
          '/ 127.5, as every family built in does. Use it from Python.')
    return Network(None, spec, spec.stem, spec.normalization)
  stem = config.stem or 'imagenet'
  normalization = config.normalization or 'batch_norm'
  try:
    if what == 'depth':
      architecture = int(text)
    elif what == 'blocks':
      architecture = resnet_v2.resnet_utils.check_blocks(
          resnet_v2.parse_blocks(text))
    else:
      architecture = _python_network(text)
    resnet_v2.resolve_network(architecture, stem)
  except ValueError as e:
    flag, value = spelling(text)
    raise errors.FlagError(f'--{flag}={value!r}: {e}') from None
  return Network(architecture, None, stem, normalization)


def _python_network(spec):
  """The blocks or the network function that 'module:function' names.

  The module is imported as Python would from the working directory (added
  to sys.path) or PYTHONPATH.

  Returns:
    The function's `Block`s if it takes no arguments, else the function.

  Raises:
    ValueError: Saying what is wrong and the expected form.
  """
  module_name, _, function_name = spec.partition(':')
  if os.getcwd() not in sys.path:
    sys.path.append(os.getcwd())
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f'cannot import {module_name!r} ({e}); run from its '
                     'directory or add it to PYTHONPATH.') from None
  function = getattr(module, function_name, None)
  if not callable(function):
    raise ValueError(f'{module_name} has no function {function_name!r}; '
                     f'{_PYTHON_FORM}.')
  required = [p for p in inspect.signature(function).parameters.values()
              if p.default is p.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  if required:
    return function
  try:
    return resnet_v2.resnet_utils.check_blocks(function())
  except ValueError as e:
    raise ValueError(f'{function_name}() did not return blocks: {e}') from None


def build(net, config, precision, num_classes, image_size):
  """Builds the classifier of a resolved network.

  Args:
    net: From `resolve`.
    config: The run's `Config`.
    precision: The resolved precision ('float32', 'mixed_bfloat16', ...).
    num_classes: Logits width.
    image_size: Input height and width.

  Returns:
    A `keras.Model` from images in [-1, 1] to float32 logits, with
    `--trainable` applied (the frozen layers not trainable).

  Raises:
    errors.FlagError: If the network cannot be built with these flags.
  """
  common = dict(input_shape=(image_size, image_size, 3),
                dtype_policy=precision,
                drop_path_rate=config.drop_path_rate,
                recompute_grad=config.recompute_grad)
  try:
    if net.spec is not None:
      model = resnet_v2.pretrained.build(
          net.spec, num_classes, weight_decay=config.weight_decay,
          sync_batch_norm=config.sync_batch_norm, **common)
    else:
      if net.normalization == 'group_norm':
        arg_sc = resnet_v2.bit_arg_scope(weight_decay=config.weight_decay,
                                         groups=config.group_norm_groups)
      else:
        arg_sc = resnet_v2.resnet_arg_scope(
            weight_decay=config.weight_decay,
            sync_batch_norm=config.sync_batch_norm)
      model = resnet_v2.build_model(
          net.architecture, num_classes, stem=net.stem, arg_sc=arg_sc,
          width_multiplier=config.width_multiplier, **common)
  except ValueError as e:  # E.g. depths that --group_norm_groups must divide.
    raise errors.FlagError(f'The network cannot be built: {e}') from None
  if config.trainable != 'all':
    _freeze(model, config.trainable, _last_block(net))
  return model


def _last_block(net):
  """The scope of the network's last block, or None if it is not known."""
  if net.spec is not None:
    return f'block{len(net.spec.num_units)}'
  if callable(net.architecture):
    return None
  blocks, _ = resnet_v2.resolve_network(net.architecture, net.stem)
  return blocks[-1].scope


def _freeze(model, trainable, last_block):
  """Makes the layers that --trainable leaves out non-trainable.

  A frozen layer's weights are not in `trainable_variables`, so the
  optimizer makes no slots for them, and a frozen BatchNorm normalizes with
  its moving statistics.
  """
  keep = [f'{model.name}.logits']
  if trainable == 'last_block':
    if last_block is None:
      raise errors.FlagError('--trainable=last_block needs a network of '
                             'blocks, not a network function.')
    keep += [f'{model.name}.{last_block}.', f'{model.name}.postnorm']
  for layer in model.layers:
    if layer.weights:
      layer.trainable = any(layer.name == k or layer.name.startswith(k)
                            for k in keep)


def for_export(model, net, config, precision, image_size):
  """The model to export: itself, or its float32 twin for --export_precision.

  A mixed-precision model keeps float32 variables but computes in bfloat16 or
  float16, which TFLite and other converters refuse; the twin is the same
  network built in float32 with the same weights.
  """
  if config.export_precision == 'training' or precision == 'float32':
    return model
  twin = build(net, config, 'float32', model.output.shape[-1], image_size)
  twin.set_weights(model.get_weights())
  return twin


def check_pretrained(text, init_checkpoint=None):
  """Validates --pretrained: a name with published weights, no other file.

  Raises:
    errors.FlagError: Saying which flag to change.
  """
  if init_checkpoint:
    raise errors.FlagError(
        'Give --pretrained (the published weights of a --network name) or '
        f'--init_checkpoint={init_checkpoint!r} (a file), not both.')
  if kind(text) != 'name':
    flag, value = spelling(text)
    raise errors.FlagError(
        f'--pretrained needs a pretrained --network name (one of '
        f'{", ".join(resnet_v2.list_models())}), not --{flag}={value}; for '
        'other networks give --init_checkpoint.')
  if not resnet_v2.get_model_spec(text).weights:
    raise errors.FlagError(
        f'--pretrained: {text} has no published weights '
        f'({resnet_v2.get_model_spec(text).weight_file}); leave --pretrained '
        'out, or give your own file as --init_checkpoint.')


def load_pretrained(model, net):
  """Initializes a pretrained name from its published weights (--pretrained),
  fetched into the cache once; Keras's file without top for a model of
  other classes. Returns the file's family, as `load_init_checkpoint`.

  Raises:
    errors.FlagError: If the file cannot be fetched (offline, unreachable,
      not the published file) or does not match the network, with the
      message of `weight_cache` or of the strict loader.
  """
  try:
    path = resnet_v2.pretrained.fetch_weights(net.spec, True,
                                              model.output.shape[-1])
    resnet_v2.pretrained.load(model, net.spec, path)
  except (resnet_v2.weight_cache.FetchError, ValueError) as e:
    raise errors.FlagError(f'--pretrained: {e}') from None
  logging.info('Initialized from the published %s weights %s.',
               net.spec.family, path)
  return net.spec.family


def load_init_checkpoint(model, net, config, saved_run=None):
  """Initializes the model from --init_checkpoint.

  From one of our checkpoints (or a run directory) only the model is read,
  not its optimizer state, which belongs to another run. With the config of
  the run that wrote it (`saved_run`, from its config.json), its network is
  built, restored and copied weight by weight, so another class count gets a
  fresh head (fine-tuning a run of ours); without, the checkpoint must fit
  the model exactly. For a pretrained name the file is its family's (any
  format, by content), its head loaded if it has the model's classes;
  otherwise it is a tf-slim checkpoint.

  Args:
    model: The run's model.
    net: Its resolved network.
    config: The run's `Config`.
    saved_run: The `Config` of the run that wrote a checkpoint of ours, if
      known.

  Returns:
    What was loaded: 'ours', 'tf-slim', or the name's family.

  Raises:
    errors.FlagError: If --init_checkpoint is not readable or does not match
      the model; the message lists the mismatched weights and the flags that
      fix the usual causes.
  """
  path = config.init_checkpoint
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path) or path
  try:
    weights = resnet_v2.open_weights(path)
  except ValueError as e:
    raise errors.FlagError(f'--init_checkpoint={config.init_checkpoint!r}: '
                           f'{e}') from None
  try:
    if '_CHECKPOINTABLE_OBJECT_GRAPH' in weights.shapes:
      if saved_run is None:
        tf.train.Checkpoint(model=model).read(
            path).assert_existing_objects_matched().expect_partial()
      else:
        _copy_from_run(model, saved_run, path)
      return 'ours'
    if net.spec is not None:
      resnet_v2.pretrained.load(model, net.spec, weights)
      return net.spec.family
    resnet_v2.load_slim_checkpoint(
        model, weights, skip_logits=config.init_skip_logits,
        checkpoint_scope=config.init_checkpoint_scope)
  except resnet_v2.weight_files.UnreadableWeightsError as e:
    raise errors.FlagError(f'--init_checkpoint: {e}') from None
  except IndexError as e:  # TF's reader, of a checkpoint of ours cut short.
    raise errors.FlagError('--init_checkpoint: ' + str(
        resnet_v2.weight_files.UnreadableWeightsError(path, e))) from None
  except (ValueError, AssertionError, tf.errors.OpError) as e:
    raise errors.FlagError(
        f'--init_checkpoint: {e}\n  On the command line: --init_skip_logits '
        'is skip_logits=True, --init_checkpoint_scope is checkpoint_scope=.'
    ) from None
  return 'tf-slim'


def _copy_from_run(model, saved_run, path):
  """Restores another run's network from its checkpoint and copies its
  weights into `model` by path, strictly, but for a head of another size.

  Raises:
    ValueError: Listing the weights that do not match.
  """
  twin = build(resolve(saved_run), dataclasses.replace(saved_run,
                                                       trainable='all'),
               'float32', saved_run.num_classes, saved_run.image_size)
  tf.train.Checkpoint(model=twin).read(
      path).assert_existing_objects_matched().expect_partial()
  theirs = {w.path: w for w in twin.weights}
  logits = f'{model.name}/logits/'
  missing = [w.path for w in model.weights if w.path not in theirs]
  misshaped = [w.path for w in model.weights if w.path in theirs
               and tuple(theirs[w.path].shape) != tuple(w.shape)
               and not w.path.startswith(logits)]
  unexpected = sorted(set(theirs) - {w.path for w in model.weights})
  if missing or misshaped or unexpected:
    raise ValueError(
        f'the network of the run that wrote {path} ({saved_run.network}) is '
        'not this one: missing there: '
        f'{errors.shortlist(missing) or "none"}; shaped otherwise: '
        f'{errors.shortlist(misshaped) or "none"}; only there: '
        f'{errors.shortlist(unexpected) or "none"}.')
  fresh = False
  for weight in model.weights:
    source = theirs[weight.path]
    if tuple(source.shape) == tuple(weight.shape):
      weight.assign(source)
    else:
      fresh = True
  if fresh:
    logging.info('A fresh head of %d classes (the run in %s had %d).',
                 model.output.shape[-1], path, saved_run.num_classes)


def zero_logits(model):
  """Sets the logits' kernel and bias to zero (a fresh head, as BiT starts)."""
  for weight in model.get_layer(f'{model.name}.logits').weights:
    weight.assign(tf.zeros_like(weight))
  logging.info('The logits start at zero.')
