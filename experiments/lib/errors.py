"""The mistakes a user can fix, as one family of exceptions.

Each is raised with a message that names the problem and what to do about
it, and the command line (`cli.run`) prints that paragraph without a
traceback. Anything else that goes wrong is a bug, and keeps its traceback.
"""


class UserError(Exception):
  """A run that cannot go ahead until its user changes something."""


class FlagError(UserError, ValueError):
  """A flag, or a combination of flags, that cannot run."""


class DataError(UserError, ValueError):
  """The data is missing or unusable."""


class RunDirError(UserError):
  """The run directory (--model_dir) cannot be used as asked."""


class WriteError(RunDirError):
  """A file of the run could not be written (e.g. the disk is full)."""


class ClusterError(UserError):
  """The devices or the cluster do not fit the flags."""


class ExportError(UserError):
  """The export cannot be written where it was asked to go."""


class NonFiniteLossError(UserError, RuntimeError):
  """The loss became NaN or infinite; the message names the step."""


def shortlist(names, shown=8, separator=', '):
  """The first `shown` of `names`, then how many more: for error messages.

  Args:
    names: A sequence of strings.
    shown: How many to show.
    separator: What goes between them.

  Returns:
    E.g. 'a, b, c and 4 more'.
  """
  names = list(names)
  more = f' and {len(names) - shown} more' if len(names) > shown else ''
  return separator.join(names[:shown]) + more
