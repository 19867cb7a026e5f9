"""The experiment configuration: every setting of a run, its flag and its check.

A `Config` is the single source of the command line: each field carries its
help text, its flag group and, where they apply, its allowed choices and
lower bound (`dataclasses.field` metadata); `cli.py` derives one absl flag
per field from that. A `Config` checks itself when it is made, so an
unusable one never exists: the flags of a script, a test or a notebook are
all checked here and only here, before TensorFlow does any work.
"""

import dataclasses
import typing
from typing import Optional, Sequence

import resnet_v2

# Flag groups, in the order --helpfull shows them.
NETWORK = 'network'
DATA = 'data'
OPTIMISATION = 'optimisation'
DISTRIBUTION = 'distribution and speed'
OUTPUT = 'run and output'
GROUPS = (NETWORK, DATA, OPTIMISATION, DISTRIBUTION, OUTPUT)


class ConfigError(ValueError):
  """A configuration that cannot run; the message says what to change."""


def _field(default, group, help_text, choices=None, minimum=None, below=None,
           spellings=None):
  """A Config field with its flag's description.

  Args:
    default: The default value (a recipe overrides it).
    group: One of GROUPS.
    help_text: The flag's help.
    choices: The allowed values, if only some are.
    minimum: The smallest allowed value of a number (None: any, or none given).
    below: A bound that a number must stay below.
    spellings: For a field whose flag takes words, {word: value}.
  """
  return dataclasses.field(default=default, metadata={
      'group': group, 'help': help_text, 'choices': choices,
      'minimum': minimum, 'below': below, 'spellings': spellings})


def _depth_help():
  depths = ', '.join(str(d) for d in resnet_v2.registered_depths())
  return (f'A registered ResNet v2 depth ({depths}), or 9n+2 with '
          '--stem=cifar (the paper\'s CIFAR nets, e.g. 164 or 1001).')


@dataclasses.dataclass(frozen=True)
class Config:
  """One experiment. The metadata of each field is its flag's description."""
  # Network.
  depth: Optional[int] = _field(None, NETWORK, _depth_help())
  blocks: Optional[str] = _field(
      None, NETWORK, "A custom block spec as text, e.g. '16x2/2, 32x2/2, 64x2' "
      '(BASExUNITS/STRIDE per block); parsed without eval.')
  stem: str = _field(
      'imagenet', NETWORK, "What comes before the blocks. imagenet: slim's "
      '7x7/2 conv1 + 3x3/2 pool1; cifar: one 3x3 conv at full resolution; '
      'none: nothing.', choices=resnet_v2.STEMS)
  sync_batch_norm: bool = _field(
      False, NETWORK, 'BatchNorm statistics over all replicas instead of per '
      'replica.')
  init_checkpoint: Optional[str] = _field(
      None, NETWORK, 'Initialize from a tf-slim checkpoint or one of ours (when '
      'model_dir has none).')
  init_skip_logits: bool = _field(
      False, NETWORK, 'Do not load the logits from --init_checkpoint (another '
      'class count).')
  init_checkpoint_scope: Optional[str] = _field(
      None, NETWORK, "The network scope inside a tf-slim --init_checkpoint, "
      "e.g. 'resnet_v2_50' to initialize a --blocks network (scope "
      "'resnet_v2') from it (default: the network's own scope).")
  # Data.
  dataset: str = _field(
      'digits', DATA, "imagenet2012, cifar10, cifar100 (TFDS), digits "
      "(scikit-learn's 8x8 digits, no download), synthetic (random images, "
      'for speed tests), or a directory of class sub-folders (optionally in '
      'train/ and validation/).')
  data_dir: Optional[str] = _field(
      None, DATA, 'The TFDS data directory (default: ~/tensorflow_datasets).')
  manual_dir: Optional[str] = _field(
      None, DATA, 'Where ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
      'are (default: <data_dir>/downloads/manual).')
  num_classes: Optional[int] = _field(
      None, DATA, "Number of classes (default: the data set's).", minimum=1)
  image_size: Optional[int] = _field(
      None, DATA, "Training and eval image size (default: the data set's).",
      minimum=1)
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
      '/tmp/resnet_v2', OUTPUT, 'Checkpoints, summaries, metrics.jsonl; '
      'rerunning resumes from it.')
  mode: str = _field(
      'train_and_eval', OUTPUT, 'train, eval, train_and_eval or export.',
      choices=('train', 'eval', 'train_and_eval', 'export'))
  export_dir: Optional[str] = _field(
      None, OUTPUT, 'Where the SavedModel goes (default: <model_dir>/export).')
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
      None, OUTPUT, 'Testing only: make the loss NaN at this step.', minimum=1)

  def __post_init__(self):
    self.check()

  def check(self):
    """Raises ConfigError for a value, or values, that cannot run.

    This is the one place where settings are validated: every field against
    its choices and lower bound, then the rules between fields, then the
    network (depth or block spec) with the library's own checks.
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
      if meta['below'] is not None and any(
          v is not None and v >= meta['below'] for v in values):
        raise ConfigError(f'--{field.name} must be below {meta["below"]}, got '
                          f'{_flag_text(value)}.')
    if (self.depth is None) == (self.blocks is None):
      raise ConfigError('Give exactly one of --depth and --blocks.')
    if self.train_steps is not None and self.train_epochs is not None:
      raise ConfigError('Give at most one of --train_steps and --train_epochs.')
    if self.strategy == 'tpu' and not self.tpu:
      raise ConfigError("--strategy=tpu needs --tpu (a TPU name, or 'local' on "
                        'a TPU VM).')
    self.network()

  def network(self):
    """Returns what `resnet_v2.build_model` takes: the depth or the blocks.

    Returns:
      The depth (an int) for --depth, which the library resolves with the
      stem; the parsed `Block`s for --blocks.

    Raises:
      ConfigError: For an unknown depth or a malformed block spec, naming the
        flag.
    """
    try:
      if self.blocks is None:
        resnet_v2.resolve_network(self.depth, self.stem)
        return self.depth
      return resnet_v2.parse_blocks(self.blocks)
    except ValueError as e:
      flag = ('--depth' if self.blocks is None else '--blocks',
              self.depth if self.blocks is None else self.blocks)
      raise ConfigError(f'{flag[0]}={flag[1]!r}: {e}') from None


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
