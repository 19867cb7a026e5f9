"""How much of TensorFlow's own log a run shows (--tf_log_level).

TensorFlow logs from C++ (filtered by TF_CPP_MIN_LOG_LEVEL, which it reads
once, when it loads) and from Python, through its own logger and through
absl's, the same one our progress lines use. Its INFO and WARNING lines
(sharding callbacks, SavedModel fingerprints, dataset notes) say nothing a
run's user acts on, so by default all are cut to errors; `--tf_log_level=0`
shows them all.
TF 2.21's oneDNN banner comes before its logging starts and shows anyway.
"""

import importlib.util
import logging
import os

from absl import logging as absl_logging

# The flag's values: TF_CPP_MIN_LOG_LEVEL's, and the Python level each means.
LEVELS = {'0': logging.INFO, '1': logging.WARNING, '2': logging.ERROR,
          '3': logging.CRITICAL}
DEFAULT = '2'


def level_in(argv):
  """--tf_log_level as given in argv, or None.

  Read before absl parses the flags, since TensorFlow must not be loaded
  before TF_CPP_MIN_LOG_LEVEL is set.
  """
  for i, arg in enumerate(argv):
    if arg.startswith('--tf_log_level='):
      return arg.split('=', 1)[1]
    if arg == '--tf_log_level' and i + 1 < len(argv):
      return argv[i + 1]
  return None


class _TensorFlowBelow(logging.Filter):
  """Drops records logged from TensorFlow's own files below a level."""

  def __init__(self, level, directory):
    super().__init__()
    self._level, self._directory = level, directory

  def filter(self, record):
    return (record.levelno >= self._level
            or not record.pathname.startswith(self._directory))


def configure(level):
  """Applies a --tf_log_level to C++ and Python logs; call before TF loads.

  Args:
    level: One of LEVELS' keys; None keeps TF_CPP_MIN_LOG_LEVEL (default 2).
  """
  level = level or os.environ.get('TF_CPP_MIN_LOG_LEVEL', DEFAULT)
  if level not in LEVELS:  # absl reports the bad flag when it parses it.
    level = DEFAULT
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = level
  # TensorFlow's own Python logger ('INFO:tensorflow:...' lines) ...
  logging.getLogger('tensorflow').setLevel(LEVELS[level])
  # ... and its modules that log through absl's, as we do.
  spec = importlib.util.find_spec('tensorflow')
  if spec and spec.submodule_search_locations:
    directory = list(spec.submodule_search_locations)[0] + os.sep
    handler = absl_logging.get_absl_handler()
    for old in [f for f in handler.filters if isinstance(f, _TensorFlowBelow)]:
      handler.removeFilter(old)
    handler.addFilter(_TensorFlowBelow(LEVELS[level], directory))
