"""The command line of the experiment scripts: absl flags -> `Config` -> run.

Each script calls `define_flags(Config(...its recipe...))` at import, so its
recipe is the flags' defaults (shown by --helpfull), then `main()`.
"""

import dataclasses
import sys

from absl import app
from absl import flags
from absl import logging

from experiments.config import Config
from experiments.config import ConfigError

FLAGS = flags.FLAGS

_HELP = {
    'dataset': ("imagenet2012, cifar10, cifar100 (TFDS), digits (scikit-learn's "
                '8x8 digits, no download), synthetic (random images, for speed '
                'tests), or a directory of class sub-folders (optionally in '
                'train/ and validation/).'),
    'data_dir': 'The TFDS data directory (default: ~/tensorflow_datasets).',
    'manual_dir': ('Where ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
                   'are (default: <data_dir>/downloads/manual).'),
    'num_classes': 'Number of classes (default: the data set\'s).',
    'image_size': 'Training and eval image size (default: the data set\'s).',
    'shuffle_buffer': ('Examples in the shuffle buffer; the buffer is part of '
                       'single-worker checkpoints.'),
    'depth': 'A registered ResNet v2 depth (50, 101, 152, 200), or 9n+2 with --stem=cifar.',
    'blocks': ("A custom block spec as text, e.g. '16x2/2, 32x2/2, 64x2' "
               '(BASExUNITS/STRIDE per block); parsed without eval.'),
    'stem': ("'imagenet': slim's 7x7/2 conv1 + 3x3/2 pool1; 'cifar': one 3x3 "
             'conv, full resolution.'),
    'sync_batch_norm': 'BatchNorm statistics over all replicas instead of per replica.',
    'model_dir': 'Checkpoints, summaries, metrics.jsonl; rerunning resumes from it.',
    'mode': 'train, eval, train_and_eval or export.',
    'train_steps': 'Training length in steps (or use --train_epochs).',
    'train_epochs': 'Training length in epochs (default 90 if neither is given).',
    'batch_size': 'GLOBAL batch size, over all replicas and workers.',
    'steps_per_loop': 'Steps per compiled call (strategy.run inside tf.function).',
    'log_every': 'Steps between progress lines and summaries.',
    'checkpoint_every': 'Steps between checkpoints.',
    'keep_checkpoints': 'How many recent checkpoints to keep.',
    'eval_every': 'Steps between evaluations in train_and_eval (0: only at the end).',
    'strategy': 'one_device, mirrored (all local GPUs), multi_worker (TF_CONFIG or Slurm) or tpu.',
    'tpu': "The TPU name or address for --strategy=tpu ('local' on a TPU VM).",
    'num_gpus': 'GPUs for --strategy=mirrored (0: all).',
    'cpu_devices': 'Split the CPU into this many logical devices (tests distribution on one host).',
    'input_per_replica': ('One input pipeline per replica instead of per worker: '
                          'the same example-to-replica assignment as that many '
                          'single-replica workers (to compare runs).'),
    'precision': ('auto, float32, mixed_bfloat16, or mixed_float16 (with loss '
                  'scaling). auto: mixed_bfloat16 on TPUs, Ampere+ GPUs and CPUs '
                  'with AVX512-BF16/AMX, mixed_float16 on older GPUs, else float32.'),
    'jit_compile': ('auto, true or false: compile the forward and backward pass '
                    'with XLA. auto: on GPUs, not on CPUs (slower there, measured).'),
    'collective_timeout': 'Seconds before a multi-worker collective gives up (0: never).',
    'startup_timeout': ('Seconds for all workers of a multi-worker cluster to '
                        'connect before this one exits with an error (0: wait forever).'),
    'base_lr': 'Learning rate per --lr_reference_batch images; scaled linearly with --batch_size.',
    'lr_reference_batch': 'The batch size at which the learning rate is --base_lr.',
    'lr_decay': 'cosine (to 0 at the end), step (x0.1 at each boundary) or constant.',
    'lr_boundary_epochs': 'Step-decay boundaries in epochs.',
    'lr_boundary_steps': 'Step-decay boundaries in steps (overrides --lr_boundary_epochs).',
    'warmup_epochs': 'Linear warm-up length in epochs.',
    'warmup_steps': 'Warm-up length in steps (overrides --warmup_epochs).',
    'warmup_lr': 'A constant warm-up rate instead of a linear ramp (e.g. 0.01 for ResNet-1001).',
    'momentum': 'SGD momentum.',
    'weight_decay': "slim's L2 weight decay on conv kernels (not biases or BatchNorm).",
    'label_smoothing': 'Label smoothing (0: none).',
    'init_checkpoint': 'Initialize from a tf-slim checkpoint or one of ours (when model_dir has none).',
    'init_skip_logits': 'Do not load the logits from --init_checkpoint (another class count).',
    'export_dir': 'Where the SavedModel goes (default: <model_dir>/export).',
    'seed': 'Random seed of initialization, shuffling and augmentation.',
    'deterministic': 'Deterministic ops and input: a resumed run equals an uninterrupted one.',
    'fail_at_step': 'Testing only: make the loss NaN at this step.',
}


def define_flags(defaults):
  """Defines one flag per `Config` field, with this script's recipe as defaults.

  Args:
    defaults: A `Config` holding the script's recipe.
  """
  for field in dataclasses.fields(Config):
    name, value = field.name, getattr(defaults, field.name)
    kind = field.type if isinstance(field.type, type) else None
    help_text = _HELP[name]
    if name == 'jit_compile':
      flags.DEFINE_enum(name, {None: 'auto', True: 'true', False: 'false'}[value],
                        ['auto', 'true', 'false'], help_text)
    elif name in ('lr_boundary_epochs',):
      flags.DEFINE_list(name, [str(v) for v in value], help_text)
    elif name in ('lr_boundary_steps',):
      flags.DEFINE_list(name, value and [str(v) for v in value], help_text)
    elif kind is bool:
      flags.DEFINE_bool(name, value, help_text)
    elif kind is int or name in ('num_classes', 'image_size', 'depth',
                                 'train_steps', 'warmup_steps', 'seed',
                                 'fail_at_step'):
      flags.DEFINE_integer(name, value, help_text)
    elif kind is float or name in ('train_epochs', 'warmup_lr'):
      flags.DEFINE_float(name, value, help_text)
    else:
      flags.DEFINE_string(name, value, help_text)


def config_from_flags():
  """Returns the `Config` given by the parsed flags."""
  values = {field.name: FLAGS[field.name].value for field in dataclasses.fields(Config)}
  values['lr_boundary_epochs'] = [float(v) for v in values['lr_boundary_epochs']]
  values['jit_compile'] = {'auto': None, 'true': True, 'false': False}[values['jit_compile']]
  if values['lr_boundary_steps'] is not None:
    values['lr_boundary_steps'] = [int(v) for v in values['lr_boundary_steps']]
  # A flag given on the command line replaces the recipe's default for its
  # alternative (--blocks for --depth, --train_steps for --train_epochs).
  for given, replaced in (('blocks', 'depth'), ('depth', 'blocks'),
                          ('train_steps', 'train_epochs'),
                          ('train_epochs', 'train_steps')):
    if FLAGS[given].present and not FLAGS[replaced].present:
      values[replaced] = None
  return Config(**values)


def run(config):
  """Runs `config`; clean error messages, no tracebacks, for expected errors.

  Returns:
    The run's summary (see `train.run`).
  """
  # Imported here so that --helpfull does not wait for TensorFlow.
  from experiments import datasets  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  try:
    summary = train.run(config)
  except (ConfigError, datasets.DataError, train.NonFiniteLossError) as e:
    logging.error('%s', e)
    sys.exit(f'error: {e}')
  logging.info('Done: %s', {k: v for k, v in summary.items() if v is not None})
  return summary


def main(argv):
  """An absl main that runs the experiment the flags describe."""
  del argv
  run(config_from_flags())


def run_main():
  app.run(main)
