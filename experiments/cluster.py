"""Multi-worker start-up: check TF_CONFIG, and never hang waiting for peers.

MultiWorkerMirroredStrategy blocks until every worker of the cluster has
connected; with a wrong TF_CONFIG or a dead peer it would wait for hours.
`check_tf_config` catches what can be seen locally (malformed JSON, a task
that is not in the cluster, its own port already taken) before TensorFlow
starts, and `StartupWatchdog` ends the process with a clear message if the
cluster is not up within a deadline.
"""

import json
import os
import socket
import subprocess
import sys

from experiments.config import ConfigError


def check_tf_config(environ=os.environ):
  """Validates TF_CONFIG for MultiWorkerMirroredStrategy.

  Args:
    environ: The environment to read TF_CONFIG from.

  Returns:
    (cluster dict, task type, task index), or None if TF_CONFIG is unset
    (e.g. under Slurm).

  Raises:
    ConfigError: Naming what is wrong and what a valid TF_CONFIG looks like.
  """
  text = environ.get('TF_CONFIG')
  if not text:
    return None
  example = ('e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
             '"task": {"type": "worker", "index": 0}}')
  try:
    spec = json.loads(text)
    cluster, task = spec['cluster'], spec['task']
    task_type, index = task['type'], int(task['index'])
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(f'TF_CONFIG is not valid ({e}): {text!r}; {example}.') from e
  addresses = cluster.get(task_type)
  if not isinstance(addresses, list) or not 0 <= index < len(addresses):
    raise ConfigError(f'TF_CONFIG task {task_type}:{index} is not in its cluster '
                      f'{cluster}; {example}.')
  host, _, port = addresses[index].rpartition(':')
  if not port.isdigit():
    raise ConfigError(f'TF_CONFIG address {addresses[index]!r} has no port; {example}.')
  with socket.socket() as probe:
    try:
      probe.bind((host or '0.0.0.0', int(port)))
    except OSError as e:
      raise ConfigError(
          f'This worker ({task_type}:{index}) cannot listen on '
          f'{addresses[index]} from TF_CONFIG: {e.strerror}. Is the port taken '
          'by another process, or the address not this host?') from e
  return cluster, task_type, index


# The watchdog process: waits for its stdin to close (the parent is ready or
# gone); if that takes longer than the deadline, it explains and ends the
# parent. A thread cannot do this: the strategy's start-up blocks in C++
# while holding the GIL.
_WATCHDOG = """
import os, select, signal, sys, time
pid, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], seconds)
if not ready:
  print(message, file=sys.stderr, flush=True)
  os.kill(pid, signal.SIGTERM)
  time.sleep(5)
  try:
    os.kill(pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
"""


class StartupWatchdog:
  """Ends this process if the cluster is not up within `seconds`.

  Use as a context manager around strategy creation and a first collective.
  On expiry a small helper process prints what to check and terminates this
  one (SIGTERM, then SIGKILL).
  """

  def __init__(self, seconds, what):
    self._seconds = seconds
    self._message = (
        f'error: the {what} was not up after {seconds:.0f}s '
        '(--startup_timeout). Check that every worker of TF_CONFIG is started '
        'and that their addresses and ports are right.')
    self._process = None

  def __enter__(self):
    if self._seconds:
      self._process = subprocess.Popen(
          [sys.executable, '-c', _WATCHDOG, str(os.getpid()),
           str(self._seconds), self._message], stdin=subprocess.PIPE)
    return self

  def __exit__(self, *exc_info):
    if self._process:
      self._process.stdin.close()
      self._process.wait()
