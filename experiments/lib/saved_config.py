"""A run directory remembers its run: model_dir/config.json.

The first training run in a directory saves its configuration there, every
field, with what the data decided filled in (classes, image size, length)
and what each machine decides left as asked (--precision=auto stays auto).
A later command on the directory takes every remembered field it does not
set from it (`merge`), and may not change the fields fixed for the run's
life (the network, the classes, the preprocessing): a run directory holds
one network.

The network is saved under the flag that spells it ("depth", "blocks" or
"network"), as the command line and earlier versions write it. A --dataset
folder is saved, and compared, as its absolute path, so that a later command
may run from another working directory.
"""

import dataclasses
import json
import os

from experiments.lib import data
from experiments.lib import files
from experiments.lib import network as network_lib
from experiments.lib.config import Config
from experiments.lib.errors import FlagError
from experiments.lib.errors import RunDirError

FILE = 'config.json'


def _plain(value):
  """A value as JSON holds it: tuples become lists."""
  return list(value) if isinstance(value, tuple) else value


def _as_saved(name, value):
  """Field `name`'s value as config.json holds it: plain, a folder absolute."""
  if name == 'dataset' and value is not None:
    return data.absolute(value)
  return _plain(value)


def save(config, model_dir):
  """Writes `config` (every field) to model_dir/config.json, atomically.

  Raises:
    errors.WriteError: If it cannot be written.
  """
  values = {}
  for field in dataclasses.fields(config):
    value = _as_saved(field.name, getattr(config, field.name))
    if field.name == 'network':
      flag, value = network_lib.spelling(value)
      values[flag] = value
    else:
      values[field.name] = value
  files.write_atomically(os.path.join(model_dir, FILE),
                         json.dumps(values, indent=2) + '\n')


def load(model_dir):
  """The saved {field: value} of a run directory, or None if it has none.

  A network saved under any of its spellings comes back as 'network'.

  Raises:
    RunDirError: If the file is there but unreadable.
  """
  path = os.path.join(model_dir, FILE)
  if not files.exists(path):
    return None
  try:
    saved = json.loads(files.read_text(path))
  except (files.ReadError, ValueError) as e:
    raise RunDirError(f'{path} cannot be read ({e}); it records how this run '
                      'was made. Restore it, or use a new --model_dir.'
                      ) from None
  spelled = [saved.pop(flag) for flag in ('depth', 'blocks', 'network')
             if flag in saved]
  spelled = [value for value in spelled if value is not None]
  if spelled:
    saved['network'] = str(spelled[0])
  return saved


def config_of(path):
  """The `Config` of the run that wrote a checkpoint (or run directory), or
  None where it left no config.json (a directory made by hand).

  Raises:
    RunDirError: If the file is there but unreadable.
    FlagError: If it no longer makes a valid `Config`.
  """
  directory = path if files.isdir(path) else os.path.dirname(path)
  saved = load(directory)
  if saved is None:
    return None
  names = {f.name for f in dataclasses.fields(Config)}
  return Config(**{name: tuple(value) if isinstance(value, list) else value
                   for name, value in saved.items() if name in names})


def merge(values, given, saved, model_dir):
  """Fills in a command's values from a run directory's saved configuration.

  Args:
    values: {field: value} of the command (its flags and recipe defaults).
    given: The names of the fields set explicitly (on the command line).
    saved: What `load` returned.
    model_dir: The run directory, for the message.

  Returns:
    `values` with every remembered field that is not given taken from
    `saved`.

  Raises:
    FlagError: If a given value changes a field fixed for the run's life,
      naming the flag and both values.
  """
  merged = dict(values)
  for field in dataclasses.fields(Config):
    name, meta = field.name, field.metadata
    if name not in saved:  # Saved by an older version.
      continue
    if name in given:
      if meta['fixed'] and (_as_saved(name, values[name])
                            != _as_saved(name, saved[name])):
        flag, value, was = name, values[name], saved[name]
        if name == 'network':
          (flag, value), (_, was) = map(network_lib.spelling, (value, was))
        raise FlagError(
            f'--{flag}={value!r} differs from {was!r}, the value '
            f'the run in {model_dir} was made with (see its {FILE}). '
            'A run directory holds one network, one set of classes and one '
            f'preprocessing: leave --{flag} out, or use a new --model_dir.')
    elif meta['remembered']:
      merged[name] = (tuple(saved[name]) if isinstance(saved[name], list)
                      else saved[name])
  return merged
