"""The command line of the recipes: `Config` fields -> absl flags -> `Config`.

Each recipe calls `define_flags(Config(...its recipe...))` at import, so its
recipe is the flags' defaults, then `run_main()`. Everything about a flag
(type, help, group, choices, bounds) comes from its `Config` field; this
module only translates.
"""

import dataclasses
import json
import signal
import sys
import textwrap

from experiments.lib import tf_log

# Before TensorFlow is imported (by config, below).
tf_log.configure(tf_log.level_in(sys.argv))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging

from experiments.lib import config as config_lib
from experiments.lib import errors
from experiments.lib import network as network_lib
from experiments.lib import saved_config
from experiments.lib.config import Config

FLAGS = flags.FLAGS

# The flags that spell the `network` field, --network among them.
_NETWORK_FLAGS = ('depth', 'blocks', 'network')


def _group(group):
  # absl groups --helpfull by the module that defined a flag, sorted by name;
  # naming that "module" after the flag's purpose (numbered, for the order)
  # groups the flags by purpose.
  index = config_lib.GROUPS.index(group)
  return f'resnet-v2 flags {index + 1}/{len(config_lib.GROUPS)}: {group}'


# A setting of the process, not of the run: not a Config field.
flags.DEFINE_enum(
    'tf_log_level', tf_log.DEFAULT, list(tf_log.LEVELS),
    "TensorFlow's own log lines, C++ and Python: 0 all (INFO: sharding "
    'callbacks, SavedModel fingerprints, ...), 1 warnings and errors, 2 '
    'errors, 3 none. Default: TF_CPP_MIN_LOG_LEVEL, else 2.',
    module_name=_group(config_lib.OUTPUT))


def define_flags(defaults):
  """Defines one flag per `Config` field, with this recipe's values as defaults.

  Args:
    defaults: A `Config` holding the recipe.
  """
  types = config_lib.field_types()
  for field in dataclasses.fields(Config):
    name, value = field.name, getattr(defaults, field.name)
    kind, spellings = types[name], field.metadata['spellings']
    common = dict(help=field.metadata['help'],
                  module_name=_group(field.metadata['group']))
    if name == 'network':
      _define_network_flags(value, common['module_name'])
    elif spellings:
      word = next(w for w, v in spellings.items() if v == value)
      flags.DEFINE_enum(name, word, list(spellings), **common)
    elif kind is bool:
      flags.DEFINE_bool(name, value, **common)
    elif kind is int:
      flags.DEFINE_integer(name, value, **common)
    elif kind is float:
      flags.DEFINE_float(name, value, **common)
    elif kind is str:
      flags.DEFINE_string(name, value, **common)
    else:  # A sequence: a comma-separated list.
      flags.DEFINE_list(name, None if value is None else [str(v) for v in value],
                        **common)


def _define_network_flags(default, module_name):
  """--depth, --blocks and --network: three spellings of one field.

  The recipe's network is the default of the flag that spells it.
  """
  spelled, value = network_lib.spelling(default) if default else (None, None)
  help_text = next(f.metadata['help'] for f in dataclasses.fields(Config)
                   if f.name == 'network')
  flags.DEFINE_integer(
      'depth', value if spelled == 'depth' else None,
      'The network as a registered ResNet v2 depth (18, 34, 50, 101, 152, '
      "200, ...), or 9n+2 with --stem=cifar (the paper's CIFAR nets, e.g. "
      '164 or 1001). One of --depth, --blocks and --network.',
      module_name=module_name)
  flags.DEFINE_string(
      'blocks', value if spelled == 'blocks' else None,
      "The network as a block spec, e.g. '16x2/2, 32x2/2, 64x2' "
      "(BASExUNITS/STRIDE per block of bottleneck units; 'basic 64x2/2' for "
      'basic units); parsed without eval.', module_name=module_name)
  flags.DEFINE_string(
      'network', value if spelled == 'network' else None,
      help_text, module_name=module_name)


def _network(given):
  """The network text of the parsed flags: the given spelling, or the
  recipe's default (None if neither)."""
  named = [flag for flag in _NETWORK_FLAGS if flag in given]
  if len(named) > 1:
    raise errors.FlagError('Give exactly one of --depth, --blocks and '
                           '--network.')
  for flag in named or _NETWORK_FLAGS:
    if FLAGS[flag].value is not None:
      return str(FLAGS[flag].value)
  return None


def config_from_flags():
  """Returns the `Config` given by the parsed flags.

  On a run directory that remembers its run (config.json), a flag that is
  not given takes the saved value instead of the recipe's default.

  Raises:
    errors.UserError: For a value that does not parse or does not pass
      `Config.check`, or a run directory whose config.json is unreadable.
  """
  types = config_lib.field_types()
  network_flags = {name for name in _NETWORK_FLAGS if FLAGS[name].present}
  given = {f.name for f in dataclasses.fields(Config)
           if f.name != 'network' and FLAGS[f.name].present}
  given |= {'network'} if network_flags else set()
  values = {}
  for field in dataclasses.fields(Config):
    if field.name == 'network':
      values['network'] = _network(network_flags)
      continue
    value, spellings = FLAGS[field.name].value, field.metadata['spellings']
    if spellings:
      value = spellings[value]
    elif value is not None and isinstance(value, list):
      element = _element_type(types[field.name])
      try:
        value = tuple(element(v) for v in value)
      except ValueError:
        raise errors.FlagError(
            f'--{field.name}={",".join(value)}: expected a comma-separated '
            f'list of {element.__name__} values.') from None
    values[field.name] = value
  saved = saved_config.load(values['model_dir'])
  if saved is not None:
    values = saved_config.merge(values, given, saved, values['model_dir'])
  # A pretrained network given by name brings its own stem and normalization
  # instead of the recipe's.
  if 'network' in given and network_lib.kind(values['network']) == 'name':
    for name in ('stem', 'normalization'):
      if name not in given:
        values[name] = None
  # A given length replaces the recipe's (or the saved) other kind of length.
  for length, other in (('train_steps', 'train_epochs'),
                        ('train_epochs', 'train_steps')):
    if length in given and other not in given:
      values[other] = None
  return Config(**values)


def explicit_fields():
  """The fields set on the command line or remembered by --model_dir's
  config.json: what a recipe that picks values for its data leaves alone."""
  given = {f.name for f in dataclasses.fields(Config)
           if f.name != 'network' and FLAGS[f.name].present}
  saved = saved_config.load(FLAGS['model_dir'].value) or {}
  return given | set(saved)


flag_text = config_lib.flag_text


def _element_type(kind):
  """The element type of a Sequence[...] field type (float if unstated)."""
  args = getattr(kind, '__args__', None)
  return args[0] if args else float


def run(config):
  """Runs `config`; a one-paragraph error, no traceback, for expected errors.

  Returns:
    The run's summary (see `train.run`).
  """
  # Imported here, after the flags are checked, so that a bad flag is
  # reported without waiting for TensorFlow to start.
  from experiments.lib import train  # pylint: disable=g-import-not-at-top
  try:
    summary = train.run(config)
  except errors.UserError as e:
    _exit_with(e)
  except KeyboardInterrupt:  # Ctrl-C outside the training loop.
    logging.error('Interrupted by Ctrl-C; checkpoints are saved only from '
                  'inside the training loop.')
    sys.exit(128 + signal.SIGINT)
  logging.info('Done: %s', json.dumps(
      {k: v for k, v in summary.items() if v is not None},
      default=_json_number))
  return summary


def _json_number(value):
  """NumPy scalars as plain numbers in the final summary."""
  return value.item() if hasattr(value, 'item') else str(value)


def _exit_with(error):
  logging.error('%s', error)
  sys.exit(f'error: {error}')


def user_errors(fn, *args):
  """fn(*args), or a clean exit with the message of a mistake a user made."""
  try:
    return fn(*args)
  except errors.UserError as e:
    _exit_with(e)


def parsed_config():
  """The `Config` of the parsed flags, or a clean exit naming the bad flag."""
  return user_errors(config_from_flags)


def main(argv):
  """An absl main that runs the experiment the flags describe."""
  del argv
  run(parsed_config())


_HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort')


def help_text(doc, script_flags=()):
  """The recipe's --help: its docstring, then its flags grouped by purpose.

  absl's own --help lists only the flags of the main module, and
  --helpfull lists absl's and TensorFlow's flags first; this lists the
  project's, by group, with their defaults (the recipe's).

  Args:
    doc: The recipe's docstring.
    script_flags: Names of flags the recipe defines itself.
  """
  wrap = lambda text: textwrap.fill(text, 80, initial_indent='    ',
                                    subsequent_indent='    ')
  lines = [doc.strip(), '']
  groups = {group: [] for group in config_lib.GROUPS}
  for field in dataclasses.fields(Config):
    names = _NETWORK_FLAGS if field.name == 'network' else [field.name]
    groups[field.metadata['group']].extend(names)
  groups[config_lib.OUTPUT].append('tf_log_level')
  groups['this script'] = list(script_flags)
  for group, names in groups.items():
    if names:
      lines.append(f'{group}:')
    for name in names:
      flag = FLAGS[name]
      lines += [f'  --{name}  (default: {config_lib.flag_text(flag.default)})',
                wrap(flag.help), '']
  lines.append('absl, logging and TensorFlow flags: --helpfull')
  return '\n'.join(lines)


def run_main(doc, main_fn=main, script_flags=()):
  """Runs a recipe's absl main, answering --help with `help_text` first.

  Args:
    doc: The recipe's docstring (a console script's __main__ has none).
    main_fn: The absl main (default: `main`, train/eval/export as flagged).
    script_flags: Names of the flags the recipe defines itself, for --help.
  """
  if any(arg in _HELP_FLAGS for arg in sys.argv[1:]):
    print(help_text(doc or '', script_flags))
    sys.exit(0)
  app.run(main_fn)


def run_tool(module, main_fn):
  """Runs a tool's absl main (make_tfrecords, predict), answering --help with
  the tool's docstring and its own flags (absl's own --help lists no flags
  when the tool runs as a console script).

  Args:
    module: The tool's module, `sys.modules[__name__]`.
    main_fn: Its absl main.
  """
  if any(arg in _HELP_FLAGS for arg in sys.argv[1:]):
    print((module.__doc__ or '').strip() + '\n')
    print(FLAGS.module_help(module))
    sys.exit(0)
  app.run(main_fn)
