"""Where examples come from: TFDS builders, a folder, digits, or noise.

`load_source(name, ...)` returns a `Source` (see `source`) for a --dataset
value. Each kind of value has its own module, which says which values are
its own and reads them:

- `KNOWN`: the values it takes, as listed in messages;
- `recognises(name)`: True if --dataset=`name` is of this kind;
- `load(name, options)`: the `Source`, given the `Options`.

`load_source` asks the kinds in the order of `_KINDS`, so a new kind is one
module and one entry there. What every source shares (few-shot subsets,
labels with an offset, the checks before the first step) is in `source` and
`preflight`, and is used from here.
"""

import os

from experiments.lib.data import digits
from experiments.lib.data import folders
from experiments.lib.data import shards
from experiments.lib.data import synthetic
from experiments.lib.data import tfds
from experiments.lib.data.preflight import check_source
from experiments.lib.data.preflight import typical_area
from experiments.lib.data.source import few_shot
from experiments.lib.data.source import labels_with_offset
from experiments.lib.data.source import Options
from experiments.lib.data.source import Source
from experiments.lib.errors import DataError

# The kinds of --dataset, asked in this order: names before directories,
# and class folders last, since any directory can be one.
_KINDS = (tfds, digits, synthetic, shards, folders)
KNOWN = tuple(value for kind in _KINDS for value in kind.KNOWN)


def load_source(name, data_dir=None, manual_dir=None, num_classes=None,
                image_size=None, need_data=True, run_dir=None, remember=False):
  """Returns the `Source` for a --dataset value.

  Args:
    name: 'imagenet2012', 'cifar10', 'cifar100', 'digits', 'synthetic', a
      directory of TFRecord shards (train-*-of-*, validation-*-of-*), or a
      directory of class sub-folders (optionally under train/ and
      validation/).
    data_dir: The TFDS data directory (None for TFDS's default).
    manual_dir: Where the ImageNet tars are (default <data_dir>/downloads/manual).
    num_classes: Classes of synthetic data (default 1000).
    image_size: Image size of synthetic or folder data (default 224).
    need_data: False if only the data set's description is needed (an
      export): a TFDS data set that is not prepared is then described from
      TFDS's metadata, with empty splits, instead of prepared or refused.
    run_dir: The run's directory, where what a source learns by reading
      all of its data (the counts of shards without a manifest) is kept for
      the next command on the run.
    remember: Whether this process writes that into run_dir (the chief of
      a run that holds its lock), or only reads it.

  Returns:
    A `Source`.

  Raises:
    DataError: If the data is missing or the name unknown, saying what to do.
  """
  options = Options(data_dir=data_dir, manual_dir=manual_dir,
                    num_classes=num_classes or 1000,
                    image_size=image_size or 224, need_data=need_data,
                    run_dir=run_dir, remember=remember)
  for kind in _KINDS:
    if kind.recognises(name):
      return kind.load(name, options)
  raise DataError(f'--dataset={name!r} is neither a known data set '
                  f'({", ".join(KNOWN)}) nor a directory.')


def absolute(name):
  """A --dataset value as it reads from any working directory.

  A run directory's config.json keeps it so, since later commands on the run
  may start elsewhere.

  Args:
    name: A --dataset value.

  Returns:
    A local folder's absolute path; a name that a kind before the folders
    takes ('digits', 'imagenet2012', ...), or a remote path (gs://, ram://),
    as it is.
  """
  if '://' in name or any(kind.recognises(name) for kind in _KINDS
                          if kind is not folders):
    return name
  return os.path.abspath(name)
