"""The experiment configuration: every setting of a run, its flag and its check.

A `Config` is the single source of the command line: each field carries its
help text, its flag group and, where they apply, its allowed choices and
bounds (`dataclasses.field` metadata); `cli.py` derives one absl flag per
field from that. A `Config` checks itself when it is made, so an unusable
one never exists: the flags of a script, a test or a notebook are all
checked here and only here, before TensorFlow does any work.

A run directory remembers its run: the first training run saves its
configuration as `config.json` there (`save`), and a later command on that
directory takes every remembered field it does not set from it
(`merge_saved`), refusing to change the fields fixed for life.
"""

import dataclasses
import importlib
import inspect
import json
import os
import sys
import typing
from typing import Optional, Sequence

import resnet_v2
import tensorflow as tf

# Flag groups, in the order --helpfull shows them.
NETWORK = 'network'
DATA = 'data'
OPTIMISATION = 'optimisation'
DISTRIBUTION = 'distribution and speed'
OUTPUT = 'run and output'
GROUPS = (NETWORK, DATA, OPTIMISATION, DISTRIBUTION, OUTPUT)


class ConfigError(ValueError):
  """A configuration that cannot run; the message says what to change."""


def _field(default, group, help_text, choices=None, minimum=None, maximum=None,
           below=None, spellings=None, fixed=False, remembered=True):
  """A Config field with its flag's description.

  Args:
    default: The default value (a recipe overrides it).
    group: One of GROUPS.
    help_text: The flag's help.
    choices: The allowed values, if only some are.
    minimum: The smallest allowed value of a number (None: any, or none given).
    maximum: The largest allowed value of a number.
    below: A bound that a number must stay below.
    spellings: For a field whose flag takes words, {word: value}.
    fixed: True if a run directory keeps it for life (the network, the
      classes, the preprocessing): a later command may not change it.
    remembered: True if a later command on the same run directory takes it
      from the saved configuration when its flag is not given; False for
      what belongs to one command (--mode, --export_dir, ...).
  """
  return dataclasses.field(default=default, metadata={
      'group': group, 'help': help_text, 'choices': choices,
      'minimum': minimum, 'maximum': maximum, 'below': below,
      'spellings': spellings,
      'fixed': fixed, 'remembered': remembered})


def _depth_help():
  depths = ', '.join(str(d) for d in resnet_v2.registered_depths())
  return (f'A registered ResNet v2 depth ({depths}), or 9n+2 with '
          '--stem=cifar (the paper\'s CIFAR nets, e.g. 164 or 1001).')


@dataclasses.dataclass(frozen=True)
class Config:
  """One experiment. The metadata of each field is its flag's description."""
  # Network.
  depth: Optional[int] = _field(None, NETWORK, _depth_help(), fixed=True)
  blocks: Optional[str] = _field(
      None, NETWORK, "A custom block spec as text, e.g. '16x2/2, 32x2/2, 64x2' "
      "(BASExUNITS/STRIDE per block of bottleneck units; 'basic 64x2/2' for "
      'basic units); parsed without eval.', fixed=True)
  network: Optional[str] = _field(
      None, NETWORK, "A network defined in Python, 'module:function' "
      '(importable from the working directory or PYTHONPATH): a function of '
      'no arguments that returns a list of resnet_v2 Blocks, or a slim-style '
      'network function fn(inputs, num_classes, is_training=None, scope=None) '
      '-> (net, end_points) applied after the stem. Instead of --depth and '
      '--blocks.', fixed=True)
  stem: str = _field(
      'imagenet', NETWORK, "What comes before the blocks. imagenet: slim's "
      '7x7/2 conv1 + 3x3/2 pool1; cifar: one 3x3 conv at full resolution; '
      'none: nothing.', choices=resnet_v2.STEMS, fixed=True)
  normalization: str = _field(
      'batch_norm', NETWORK, "batch_norm (slim's), or group_norm: GroupNorm "
      'and Weight-Standardized convolutions everywhere, the form of Big '
      'Transfer (BiT), which does not depend on the per-replica batch.',
      choices=('batch_norm', 'group_norm'), fixed=True)
  group_norm_groups: int = _field(
      32, NETWORK, 'Groups of --normalization=group_norm; must divide every '
      'depth of the network.', minimum=1, fixed=True)
  width_multiplier: float = _field(
      1.0, NETWORK, 'Multiplies every depth of the stem and the units (2: '
      "BiT's R50x2; wide ResNets).", minimum=0.01, fixed=True)
  drop_path_rate: float = _field(
      0.0, NETWORK, "Stochastic depth: the last unit's probability of "
      'dropping its residual in training, rising linearly from the first '
      'unit (Huang et al. 2016); 0: off.', minimum=0, below=1, fixed=True)
  sync_batch_norm: bool = _field(
      False, NETWORK, 'BatchNorm statistics over all replicas instead of per '
      'replica.')
  init_checkpoint: Optional[str] = _field(
      None, NETWORK, 'Initialize from a tf-slim checkpoint or one of ours (when '
      'model_dir has none).', remembered=False)
  init_skip_logits: bool = _field(
      False, NETWORK, 'Do not load the logits from --init_checkpoint (another '
      'class count).', remembered=False)
  init_checkpoint_scope: Optional[str] = _field(
      None, NETWORK, "The network scope inside a tf-slim --init_checkpoint, "
      "e.g. 'resnet_v2_50' to initialize a --blocks network (scope "
      "'resnet_v2') from it (default: the network's own scope).",
      remembered=False)
  # Data.
  dataset: str = _field(
      'digits', DATA, "imagenet2012, cifar10, cifar100 (TFDS), digits "
      "(scikit-learn's 8x8 digits, no download), synthetic (generated, "
      'learnable: a colour and stripes per class; for speed and smoke tests), '
      'or a directory of class sub-folders (optionally in '
      'train/ and validation/).', fixed=True)
  data_dir: Optional[str] = _field(
      None, DATA, 'The TFDS data directory (default: ~/tensorflow_datasets).')
  manual_dir: Optional[str] = _field(
      None, DATA, 'Where ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
      'are (default: <data_dir>/downloads/manual).')
  num_classes: Optional[int] = _field(
      None, DATA, "Number of classes (default: the data set's).", minimum=1,
      fixed=True)
  image_size: Optional[int] = _field(
      None, DATA, "Training and eval image size (default: the data set's).",
      minimum=1, fixed=True)
  labels_offset: int = _field(
      0, DATA, "Added to the data set's labels, as tf-slim's --labels_offset: "
      '1 for the published tf-slim checkpoints, whose 1001 classes start with '
      "'background' (then --num_classes=1001 on 1000-class ImageNet).",
      minimum=0, fixed=True)
  eval_preprocessing: str = _field(
      'default', DATA, "default: the data set's own (for ImageNet-style data "
      'the central 87.5% square of the shorter side, resized; small images '
      "are only resized). slim_inception: tf-slim's Inception eval "
      "preprocessing (central 87.5% of height and width, TF1 bilinear "
      'resize), with which the published tf-slim checkpoints were evaluated. '
      'Used for evaluation and by the SavedModel.',
      choices=('default', 'slim_inception'), fixed=True)
  randaugment_ops: int = _field(
      0, DATA, "RandAugment (Cubuk et al. 2020) with Keras's layer: this many "
      'random operations per training image, e.g. 2 (0: off).', minimum=0)
  randaugment_factor: float = _field(
      0.5, DATA, 'The strength of the RandAugment operations, in [0, 1].',
      minimum=0, maximum=1)
  mixup_alpha: float = _field(
      0.0, DATA, "MixUp (Zhang et al. 2018) with Keras's layer: each training "
      'batch mixed with a permutation of itself, weights from Beta(alpha, '
      'alpha), e.g. 0.2 (0: off).', minimum=0)
  cutmix_alpha: float = _field(
      0.0, DATA, "CutMix (Yun et al. 2019) with Keras's layer, e.g. 1.0 (0: "
      'off). With --mixup_alpha too, each batch takes one of the two.',
      minimum=0)
  shuffle_buffer: int = _field(
      10_000, DATA, 'Examples in the shuffle buffer (0: no shuffling).',
      minimum=0)
  # Optimisation.
  train_steps: Optional[int] = _field(
      None, OPTIMISATION, 'Training length in steps (or use --train_epochs).',
      minimum=0)
  train_epochs: Optional[float] = _field(
      None, OPTIMISATION, 'Training length in epochs (default 90 if neither is '
      'given).', minimum=0)
  batch_size: int = _field(
      256, OPTIMISATION, 'GLOBAL batch size, over all replicas and workers.',
      minimum=1)
  base_lr: float = _field(
      0.1, OPTIMISATION, 'Learning rate per --lr_reference_batch images; scaled '
      'linearly with --batch_size.', minimum=0)
  lr_reference_batch: int = _field(
      256, OPTIMISATION, 'The batch size at which the learning rate is '
      '--base_lr.', minimum=1)
  lr_decay: str = _field(
      'cosine', OPTIMISATION, 'cosine (to 0 at the end), step (x0.1 at each '
      'boundary) or constant.', choices=('cosine', 'step', 'constant'))
  lr_boundary_epochs: Sequence[float] = _field(
      (30, 60, 80), OPTIMISATION, 'Step-decay boundaries in epochs.', minimum=0)
  lr_boundary_steps: Optional[Sequence[int]] = _field(
      None, OPTIMISATION, 'Step-decay boundaries in steps (overrides '
      '--lr_boundary_epochs).', minimum=0)
  warmup_epochs: float = _field(
      5.0, OPTIMISATION, 'Linear warm-up length in epochs.', minimum=0)
  warmup_steps: Optional[int] = _field(
      None, OPTIMISATION, 'Warm-up length in steps (overrides --warmup_epochs).',
      minimum=0)
  warmup_lr: Optional[float] = _field(
      None, OPTIMISATION, 'A constant warm-up rate instead of a linear ramp '
      '(e.g. 0.01 for ResNet-1001).', minimum=0)
  momentum: float = _field(0.9, OPTIMISATION, 'SGD momentum.', minimum=0,
                           below=1)
  weight_decay: float = _field(
      1e-4, OPTIMISATION, "slim's L2 weight decay on conv kernels (not biases "
      'or BatchNorm).', minimum=0)
  label_smoothing: float = _field(
      0.0, OPTIMISATION, 'Label smoothing (0: none).', minimum=0, below=1)
  ema_decay: float = _field(
      0.0, OPTIMISATION, 'Keep an exponential moving average of the weights '
      'with this decay (e.g. 0.9999), checkpointed, and evaluate and export '
      'it instead of the raw weights (0: off).', minimum=0, below=1,
      fixed=True)
  # Distribution and speed.
  strategy: str = _field(
      'one_device', DISTRIBUTION, 'one_device, mirrored (all local GPUs), '
      'multi_worker (TF_CONFIG or Slurm) or tpu.',
      choices=('one_device', 'mirrored', 'multi_worker', 'tpu'))
  tpu: Optional[str] = _field(
      None, DISTRIBUTION, "The TPU name or address for --strategy=tpu ('local' "
      'on a TPU VM).')
  num_gpus: int = _field(
      0, DISTRIBUTION, 'GPUs for --strategy=mirrored (0: all).', minimum=0)
  cpu_devices: int = _field(
      1, DISTRIBUTION, 'Split the CPU into this many logical devices (tests '
      'distribution on one host).', minimum=1)
  input_per_replica: bool = _field(
      False, DISTRIBUTION, 'One input pipeline per replica instead of per '
      'worker: the same example-to-replica assignment as that many '
      'single-replica workers (to compare runs).')
  precision: str = _field(
      'auto', DISTRIBUTION, 'auto, float32, mixed_bfloat16, or mixed_float16 '
      '(with loss scaling). auto: mixed_bfloat16 on TPUs, Ampere+ GPUs and '
      'CPUs with AVX512-BF16/AMX, mixed_float16 on older GPUs, else float32.',
      choices=('auto', 'float32', 'mixed_bfloat16', 'mixed_float16'))
  jit_compile: Optional[bool] = _field(
      None, DISTRIBUTION, 'auto, true or false: compile the forward and '
      'backward pass with XLA. auto: on GPUs, not on CPUs (slower there, '
      'measured).', spellings={'auto': None, 'true': True, 'false': False})
  recompute_grad: bool = _field(
      False, DISTRIBUTION, "Keep only each unit's input for the backward "
      'pass, which runs the unit again: much less memory for deep networks, '
      'up to a quarter more step time (the README\'s memory table). Fixed for '
      'a run: its checkpoints hold each unit as a model of its own.',
      fixed=True)
  steps_per_loop: int = _field(
      100, DISTRIBUTION, 'Steps per compiled call (strategy.run inside '
      'tf.function).', minimum=1)
  collective_timeout: float = _field(
      600.0, DISTRIBUTION, 'Seconds before a multi-worker collective gives up '
      '(0: never).', minimum=0)
  startup_timeout: float = _field(
      300.0, DISTRIBUTION, 'Seconds for all workers of a multi-worker cluster '
      'to connect before this one exits with an error (0: wait forever).',
      minimum=0)
  # Run and output.
  model_dir: str = _field(
      '/tmp/resnet_v2', OUTPUT, 'The run directory: checkpoints, summaries, '
      'metrics.jsonl and the run\'s config.json. Rerunning resumes; a later '
      'command on it needs only the flags it changes.', remembered=False)
  mode: str = _field(
      'train_and_eval', OUTPUT, 'train, eval, train_and_eval or export.',
      choices=('train', 'eval', 'train_and_eval', 'export'),
      remembered=False)
  export_dir: Optional[str] = _field(
      None, OUTPUT, 'Where the SavedModel goes (default: <model_dir>/export).',
      remembered=False)
  export_precision: str = _field(
      'training', OUTPUT, 'training: export with the precision the run trains '
      'in; float32: float32 weights and ops whatever that was (for TFLite and '
      'other converters, which refuse bfloat16 and float16).',
      choices=('training', 'float32'), remembered=False)
  log_every: int = _field(
      100, OUTPUT, 'Steps between progress lines and summaries.', minimum=1)
  checkpoint_every: int = _field(
      1000, OUTPUT, 'Steps between checkpoints.', minimum=1)
  keep_checkpoints: int = _field(
      3, OUTPUT, 'How many recent checkpoints to keep.', minimum=1)
  eval_every: int = _field(
      0, OUTPUT, 'Steps between evaluations in train_and_eval (0: only at the '
      'end).', minimum=0)
  seed: Optional[int] = _field(
      None, OUTPUT, 'Random seed of initialization, shuffling and '
      'augmentation.', minimum=0)
  deterministic: bool = _field(
      False, OUTPUT, 'Deterministic ops and input: a resumed run equals an '
      'uninterrupted one.')
  fail_at_step: Optional[int] = _field(
      None, OUTPUT, 'Testing only: make the loss NaN at this step.', minimum=1,
      remembered=False)

  def __post_init__(self):
    self.check()

  def check(self):
    """Raises ConfigError for a value, or values, that cannot run.

    This is the one place where settings are validated: every field against
    its choices and bounds, then the rules between fields, then the network
    (depth or block spec) with the library's own checks.
    """
    for field in dataclasses.fields(self):
      value, meta = getattr(self, field.name), field.metadata
      values = value if isinstance(value, (list, tuple)) else [value]
      if meta['choices'] and value not in meta['choices']:
        raise ConfigError(f'--{field.name}={value!r}; choose one of '
                          f'{", ".join(meta["choices"])}.')
      if meta['minimum'] is not None and any(
          v is not None and v < meta['minimum'] for v in values):
        raise ConfigError(f'--{field.name} must be at least '
                          f'{meta["minimum"]}, got {_flag_text(value)}.')
      if meta['maximum'] is not None and any(
          v is not None and v > meta['maximum'] for v in values):
        raise ConfigError(f'--{field.name} must be at most {meta["maximum"]}, '
                          f'got {_flag_text(value)}.')
      if meta['below'] is not None and any(
          v is not None and v >= meta['below'] for v in values):
        raise ConfigError(f'--{field.name} must be below {meta["below"]}, got '
                          f'{_flag_text(value)}.')
    if sum(v is not None for v in (self.depth, self.blocks, self.network)) != 1:
      raise ConfigError('Give exactly one of --depth, --blocks and --network.')
    if self.train_steps is not None and self.train_epochs is not None:
      raise ConfigError('Give at most one of --train_steps and --train_epochs.')
    if self.strategy == 'tpu' and not self.tpu:
      raise ConfigError("--strategy=tpu needs --tpu (a TPU name, or 'local' on "
                        'a TPU VM).')
    self.architecture()

  def architecture(self):
    """Returns what `resnet_v2.build_model` takes: a depth, blocks or a function.

    Returns:
      The depth (an int) for --depth, which the library resolves with the
      stem; the parsed `Block`s for --blocks; for --network, the blocks its
      function returns, or the network function itself.

    Raises:
      ConfigError: For an unknown depth, a malformed block spec or a
        --network that cannot be imported or does not give a network,
        naming the flag.
    """
    flag, value = next((name, getattr(self, name))
                       for name in ('depth', 'blocks', 'network')
                       if getattr(self, name) is not None)
    try:
      if flag == 'depth':
        resnet_v2.resolve_network(self.depth, self.stem)
        return self.depth
      if flag == 'blocks':
        return resnet_v2.parse_blocks(self.blocks)
      network = _python_network(self.network)
      resnet_v2.resolve_network(network, self.stem)
      return network
    except ValueError as e:
      raise ConfigError(f'--{flag}={value!r}: {e}') from None


def _python_network(spec):
  """The blocks or the network function that --network names.

  Args:
    spec: 'module:function'. The module is imported as Python would from the
      working directory (added to sys.path) or PYTHONPATH.

  Returns:
    The function's `Block`s if it takes no arguments, else the function.

  Raises:
    ValueError: Saying what is wrong and the expected form.
  """
  form = ("expected 'module:function', a function of no arguments returning "
          'a list of resnet_v2.Block, or a slim-style network function '
          'fn(inputs, num_classes, is_training=None, scope=None)')
  module_name, _, function_name = spec.partition(':')
  if not module_name or not function_name:
    raise ValueError(form + '.')
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
                     f'{form}.')
  required = [p for p in inspect.signature(function).parameters.values()
              if p.default is p.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  if required:
    return function
  blocks = function()
  try:
    return resnet_v2.resnet_utils.check_blocks(blocks)
  except ValueError as e:
    raise ValueError(f'{function_name}() did not return blocks: {e}') from None


def _flag_text(value):
  if isinstance(value, (list, tuple)):
    return ','.join(str(v) for v in value)
  return str(value)


def field_types():
  """{field name: its type without Optional}, for deriving flags."""
  types = {}
  for name, kind in typing.get_type_hints(Config).items():
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    types[name] = args[0] if typing.get_origin(kind) is typing.Union else kind
  return types


SAVED_CONFIG = 'config.json'


def _plain(value):
  """A value as JSON holds it: tuples become lists."""
  return list(value) if isinstance(value, tuple) else value


def _same(a, b):
  return _plain(a) == _plain(b)


def save(config, model_dir):
  """Writes `config` (every field) to model_dir/config.json, atomically.

  Through tf.io.gfile, so that a gs:// run directory works as a local one.
  """
  path = os.path.join(model_dir, SAVED_CONFIG)
  text = json.dumps({f.name: _plain(getattr(config, f.name))
                     for f in dataclasses.fields(config)}, indent=2) + '\n'
  tf.io.gfile.makedirs(model_dir)
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    f.write(text)
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)


def load_saved(model_dir):
  """The saved {field: value} of a run directory, or None if it has none.

  Raises:
    ConfigError: If the file is there but unreadable.
  """
  path = os.path.join(model_dir, SAVED_CONFIG)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except (tf.errors.OpError, ValueError) as e:
    raise ConfigError(f'{path} cannot be read ({e}); it records how this run '
                      'was made. Restore it, or use a new --model_dir.') from None


def merge_saved(values, given, saved, model_dir):
  """Fills in a command's values from a run directory's saved configuration.

  Args:
    values: {field: value} of the command (its flags and recipe defaults).
    given: The names of the fields set explicitly (on the command line).
    saved: What `load_saved` returned.
    model_dir: The run directory, for the message.

  Returns:
    `values` with every remembered field that is not given taken from
    `saved`.

  Raises:
    ConfigError: If a given value changes a field fixed for the run's life,
      naming the field and both values.
  """
  merged = dict(values)
  for field in dataclasses.fields(Config):
    name, meta = field.name, field.metadata
    if name not in saved:  # Saved by an older version.
      continue
    if name in given:
      if meta['fixed'] and not _same(values[name], saved[name]):
        raise ConfigError(
            f'--{name}={values[name]!r} differs from {saved[name]!r}, the value '
            f'the run in {model_dir} was made with (see its {SAVED_CONFIG}). '
            'A run directory holds one network, one set of classes and one '
            f'preprocessing: leave --{name} out, or use a new --model_dir.')
    elif meta['remembered']:
      merged[name] = (tuple(saved[name]) if isinstance(saved[name], list)
                      else saved[name])
  return merged
