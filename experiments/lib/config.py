"""The experiment configuration: every setting of a run, its flag and its check.

A `Config` is the single source of the command line: each field carries its
help text, its flag group and, where they apply, its allowed choices and
bounds (`dataclasses.field` metadata); `cli.py` derives one absl flag per
field from that. A `Config` checks itself when it is made, so an unusable
one never exists: the flags of a script, a test or a notebook are all
checked here, before TensorFlow does any work. What a run directory
remembers of its config is `saved_config`'s; what a network text means is
`network`'s.
"""

import dataclasses
import typing
from typing import Optional, Sequence

import resnet_v2

from experiments.lib import network as network_lib
from experiments.lib.errors import FlagError

# Flag groups, in the order --helpfull shows them.
NETWORK = 'network'
DATA = 'data'
OPTIMISATION = 'optimisation'
DISTRIBUTION = 'distribution and speed'
OUTPUT = 'run and output'
GROUPS = (NETWORK, DATA, OPTIMISATION, DISTRIBUTION, OUTPUT)


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
      'spellings': spellings, 'fixed': fixed, 'remembered': remembered})


@dataclasses.dataclass(frozen=True)
class Config:
  """One experiment. The metadata of each field is its flag's description."""
  # Network.
  network: Optional[str] = _field(
      None, NETWORK, 'The network: --depth=N (a registered ResNet v2 depth, '
      'or 9n+2 with --stem=cifar, the paper\'s CIFAR nets), --blocks=SPEC (a '
      "block spec as text, e.g. '16x2/2, 32x2/2, 64x2'; 'basic 64x2/2' for "
      'basic units), a pretrained network by name (resnet_v2.list_models(): '
      "resnet_v2_50, keras_resnet50v2, bit_r50x1, timm_resnetv2_50, ...), or "
      "'module:function' (importable): a function of no arguments returning "
      'resnet_v2 Blocks, or a slim-style fn(inputs, num_classes, '
      'is_training=None, scope=None) -> (net, end_points) after the stem.',
      fixed=True)
  stem: Optional[str] = _field(
      None, NETWORK, "What comes before the blocks (default: the network's "
      "own; imagenet for a depth or blocks). imagenet: slim's 7x7/2 conv1 + "
      '3x3/2 pool1; imagenet_zero_pad, imagenet_symmetric: the same with '
      'pool1 padded as Keras applications and BiT, or as PyTorch, pad it; '
      'cifar: one 3x3 conv at full resolution; none: nothing.',
      choices=tuple(resnet_v2.STEMS), fixed=True)
  normalization: Optional[str] = _field(
      None, NETWORK, "batch_norm (slim's), or group_norm: GroupNorm and "
      'Weight-Standardized convolutions everywhere, the form of Big Transfer '
      "(BiT), which does not depend on the per-replica batch (default: the "
      "network's own; batch_norm for a depth or blocks).",
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
      False, NETWORK, 'BatchNorm statistics over all replicas, not per replica.')
  init_checkpoint: Optional[str] = _field(
      None, NETWORK, 'Initialize from weights (when model_dir has no '
      'checkpoint of its own): a tf-slim checkpoint, a run directory or '
      'checkpoint of ours, or for a pretrained --network its weight file '
      '(Keras .h5, BiT .npz, timm .safetensors), recognized by content.',
      remembered=False)
  pretrained: bool = _field(
      False, NETWORK, 'Initialize a pretrained --network name from its '
      "published weights (when model_dir has no checkpoint of its own), "
      'fetched once into $RESNET_V2_HOME (default ~/.cache/resnet_v2); '
      'RESNET_V2_OFFLINE=1 never downloads, RESNET_V2_MIRROR=BASE fetches '
      'from a mirror. Instead of --init_checkpoint.', remembered=False)
  init_skip_logits: bool = _field(
      False, NETWORK, 'Do not load the logits from --init_checkpoint (another '
      'class count).', remembered=False)
  init_checkpoint_scope: Optional[str] = _field(
      None, NETWORK, "The network scope inside a tf-slim --init_checkpoint, "
      "e.g. 'resnet_v2_50' to initialize a --blocks network (scope "
      "'resnet_v2') from it (default: the network's own scope).",
      remembered=False)
  trainable: str = _field(
      'all', NETWORK, 'What trains. all: every weight; head: only the logits '
      '(a linear probe: the rest frozen, BatchNorm in inference mode); '
      'last_block: the last block, postnorm and the logits.',
      choices=('all', 'head', 'last_block'), fixed=True)
  zero_head: bool = _field(
      False, NETWORK, 'Start the logits at zero, not from --init_checkpoint '
      "or the initializer: a new task's head, as BiT fine-tunes.")
  # Data.
  dataset: str = _field(
      'digits', DATA, "imagenet2012, cifar10, cifar100 (TFDS), digits "
      "(scikit-learn's 8x8, no download), synthetic (generated, learnable: a "
      'colour and stripes per class), a directory of TFRecord shards '
      '(train-*-of-*, validation-*-of-*: tf-slim\'s and the TPU\'s ImageNet) '
      'or of class sub-folders (optionally in train/ and validation/).',
      fixed=True)
  data_dir: Optional[str] = _field(
      None, DATA, 'The TFDS data directory (default: ~/tensorflow_datasets).')
  manual_dir: Optional[str] = _field(
      None, DATA, 'Where ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
      'are (default: <data_dir>/downloads/manual).')
  num_classes: Optional[int] = _field(
      None, DATA, "Number of classes (default: the data set's).", minimum=1,
      fixed=True)
  image_size: Optional[int] = _field(
      None, DATA, "Training and eval image size (default: a pretrained "
      "network's own, else the data set's).",
      minimum=1, fixed=True)
  labels_offset: Optional[int] = _field(
      None, DATA, "Added to the data set's labels, as tf-slim's "
      '--labels_offset (default: for a network by name on ImageNet, what '
      "matches its classes: 1 for a tf-slim network (1001 classes, "
      "'background' first) on imagenet2012, -1 for a 1000-class network on "
      "tf-slim's shards (labels 1..1000); else 0).", fixed=True)
  eval_preprocessing: Optional[str] = _field(
      None, DATA, "Evaluation and SavedModel preprocessing (default: a "
      "pretrained name's own, else the data set's: the central 87.5% square "
      'of the shorter side for ImageNet-style data, a resize for small '
      "images). slim_inception: tf-slim's (central 87.5% of height and "
      'width, TF1 bilinear resize), as the published tf-slim checkpoints were '
      'evaluated. central_crop: the central --eval_crop_fraction square of '
      "the shorter side (Keras's, timm's). resize: the whole image (BiT's).",
      choices=('default', 'slim_inception', 'central_crop', 'resize'),
      fixed=True)
  eval_crop_fraction: Optional[float] = _field(
      None, DATA, 'The side fraction that --eval_preprocessing=central_crop '
      "keeps (default: the network's own, else 0.875).", minimum=0.01,
      maximum=1, fixed=True)
  resize_method: Optional[str] = _field(
      None, DATA, 'Interpolation of the evaluation and serving resize '
      "(default: the network's own, else bilinear).",
      choices=('bilinear', 'bicubic'), fixed=True)
  train_preprocessing: str = _field(
      'default', DATA, "default: the data set's own augmentation (Inception "
      'crops and flips, or CIFAR-style pad and crop). resize_crop: the whole '
      'image resized to --train_resize, then a random --image_size crop and '
      'a flip (BiT-HyperRule).', choices=('default', 'resize_crop'))
  train_resize: Optional[int] = _field(
      None, DATA, 'The size images are resized to before the random crop of '
      '--train_preprocessing=resize_crop.', minimum=1)
  random_flip: Optional[bool] = _field(
      None, DATA, 'auto, true or false: random left-right flips of the '
      "training images, in every --train_preprocessing. auto: the data set's "
      'own (on for photos and class folders, off for digits); false for '
      'images whose mirror is another class (text, digits, arrows).',
      spellings={'auto': None, 'true': True, 'false': False})
  examples_per_class: Optional[int] = _field(
      None, DATA, 'Train on this many examples of each class, chosen with '
      '--seed from the training split (few-shot transfer; default: all).',
      minimum=1, fixed=True)
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
  batch_split: int = _field(
      1, OPTIMISATION, 'Micro-batching: each replica computes its share of '
      'the batch in this many parts and adds their gradients into one step '
      '(less memory, the same gradients for GroupNorm networks; BatchNorm '
      'normalizes each part by its own statistics).', minimum=1)
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
      'train_and_eval', OUTPUT, 'train, eval, train_and_eval, export, '
      'linear_eval: few-shot linear evaluation of the frozen network (a '
      'ridge-regression head on the features of --linear_eval_shots '
      'training examples per class, as BiT and big_vision report it), or '
      'continuous_eval: evaluate each new checkpoint of --model_dir while '
      'another process trains in it, until the final step (or '
      '--eval_timeout); TF_CONFIG\'s evaluator task.',
      choices=('train', 'eval', 'train_and_eval', 'export', 'linear_eval',
               'continuous_eval'),
      remembered=False)
  linear_eval_shots: Sequence[int] = _field(
      (1, 5, 10), OUTPUT, 'Training examples per class of --mode=linear_eval '
      '(one result for each).', minimum=1, remembered=False)
  linear_eval_l2: float = _field(
      1024.0, OUTPUT, "The ridge penalty of --mode=linear_eval (big_vision's "
      '2^10 on whitened features).', minimum=0, remembered=False)
  linear_eval_seeds: int = _field(
      3, OUTPUT, 'Draws of the examples per class of --mode=linear_eval, '
      'averaged.', minimum=1, remembered=False)
  export_dir: Optional[str] = _field(
      None, OUTPUT, 'Where the SavedModel goes (default: <model_dir>/export).',
      remembered=False)
  export_precision: str = _field(
      'float32', OUTPUT, 'float32: float32 ops whatever the run trained in '
      '(nothing is lost: the weights are float32 variables; TFLite, ONNX and '
      'other converters refuse the bfloat16 and float16 ops of mixed '
      "precision). training: the run's own precision, for hardware that "
      'computes it natively.',
      choices=('float32', 'training'), remembered=False)
  export_tflite: str = _field(
      'none', OUTPUT, 'Also a TFLite model of serve_images in the export: '
      'float32 (model.tflite) or int8 (model_int8.tflite: full-integer ops, '
      "calibrated on 256 of the run's training images through the evaluation "
      'preprocessing; float pixels in, probabilities out).',
      choices=('none', 'float32', 'int8'), remembered=False)
  log_every: int = _field(
      100, OUTPUT, 'Steps between progress lines and summaries.', minimum=1)
  checkpoint_every: int = _field(
      1000, OUTPUT, 'Steps between checkpoints.', minimum=1)
  keep_checkpoints: int = _field(
      3, OUTPUT, 'How many recent checkpoints to keep.', minimum=1)
  eval_every: int = _field(
      0, OUTPUT, 'Steps between evaluations in train_and_eval (0: only at the '
      'end).', minimum=0)
  eval_timeout: float = _field(
      0.0, OUTPUT, 'Seconds --mode=continuous_eval waits for a new checkpoint '
      "before it stops (0: until it has evaluated the run's final step).",
      minimum=0, remembered=False)
  export_best: bool = _field(
      False, OUTPUT, '--mode=continuous_eval keeps a SavedModel of the best '
      'top-1 so far in <model_dir>/best_export (its resnet_v2_export.json '
      'names the step and the top-1).', remembered=False)
  seed: Optional[int] = _field(
      None, OUTPUT, 'Random seed of initialization, shuffling and '
      'augmentation.', minimum=0)
  deterministic: bool = _field(
      False, OUTPUT, 'Deterministic ops and input: a resumed run equals an '
      'uninterrupted one.')
  fail_at_step: Optional[int] = _field(
      None, OUTPUT, 'Testing only: make the loss NaN at this step.', minimum=1,
      remembered=False)

  # Python spellings of `network`, as the flags --depth and --blocks:
  # Config(depth=50) is Config(network='50').
  depth: dataclasses.InitVar[Optional[int]] = None
  blocks: dataclasses.InitVar[Optional[str]] = None

  def __post_init__(self, depth, blocks):
    spelled = [value for value in (depth, blocks) if value is not None]
    if len(spelled) + (self.network is not None) > 1:
      raise FlagError('Give exactly one of --depth, --blocks and --network.')
    if spelled:
      object.__setattr__(self, 'network', str(spelled[0]))
    self.check()

  def check(self):
    """Raises FlagError for a value, or values, that cannot run.

    Every field against its choices and bounds, then the rules between
    fields, then the network text (`network.check`).
    """
    for field in dataclasses.fields(self):
      value, meta = getattr(self, field.name), field.metadata
      values = value if isinstance(value, (list, tuple)) else [value]
      if (meta['choices'] and value is not None
          and value not in meta['choices']):
        raise FlagError(f'--{field.name}={value!r}; choose one of '
                        f'{", ".join(meta["choices"])}.')
      for bound, fails, says in (('minimum', lambda v, b: v < b, 'at least'),
                                 ('maximum', lambda v, b: v > b, 'at most'),
                                 ('below', lambda v, b: v >= b, 'below')):
        if meta[bound] is not None and any(
            v is not None and fails(v, meta[bound]) for v in values):
          raise FlagError(f'--{field.name} must be {says} {meta[bound]}, got '
                          f'{flag_text(value)}.')
    if self.network is None:
      raise FlagError('Give exactly one of --depth, --blocks and --network.')
    if self.train_steps is not None and self.train_epochs is not None:
      raise FlagError('Give at most one of --train_steps and --train_epochs.')
    if self.strategy == 'tpu' and not self.tpu:
      raise FlagError("--strategy=tpu needs --tpu (a TPU name, or 'local' on "
                      'a TPU VM).')
    if self.batch_size % self.batch_split:
      raise FlagError(f'--batch_size={self.batch_size} does not split into '
                      f'--batch_split={self.batch_split} equal parts.')
    for name in ('lr_boundary_epochs', 'lr_boundary_steps'):
      boundaries = list(getattr(self, name) or ())
      if boundaries != sorted(boundaries):
        raise FlagError(f'--{name}={flag_text(boundaries)} must be '
                        'increasing.')
    if self.train_preprocessing == 'resize_crop' and self.train_resize is None:
      raise FlagError('--train_preprocessing=resize_crop needs --train_resize '
                      '(the size before the random crop).')
    if (self.train_preprocessing == 'resize_crop' and self.image_size
        and self.train_resize < self.image_size):
      raise FlagError(
          f'--train_resize={self.train_resize} is below --image_size='
          f'{self.image_size}: resize_crop crops --image_size out of the image '
          'resized to --train_resize. Raise --train_resize (BiT: 160 for 128).')
    try:
      network_lib.check(self.network, self.stem, self.normalization,
                        self.width_multiplier)
    except ValueError as e:
      flag, value = network_lib.spelling(self.network)
      raise FlagError(f'--{flag}={value!r}: {e}') from None
    if self.pretrained:
      network_lib.check_pretrained(self.network, self.init_checkpoint)
    if self.export_tflite != 'none' and self.export_precision == 'training':
      raise FlagError("--export_tflite needs --export_precision=float32 "
                      "(TFLite refuses bfloat16 and float16 ops).")


def flag_text(value):
  """A value as a flag takes it: 'none', 'true', '1,2,3', ..."""
  if value is None:
    return 'none'
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (list, tuple)):
    return ','.join(str(v) for v in value)
  return str(value)


def field_types():
  """{field name: its type without Optional}, for deriving flags."""
  types = {}
  for name, kind in typing.get_type_hints(Config).items():
    if isinstance(kind, dataclasses.InitVar):
      continue
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    types[name] = args[0] if typing.get_origin(kind) is typing.Union else kind
  return types
