"""Runs N copies of a training command on this machine, as one TF cluster.

    python -m launch.local --workers=2 -- python -m experiments.imagenet \\
        --strategy=multi_worker --model_dir=/tmp/run1

Each copy gets the TF_CONFIG that `tf.distribute.MultiWorkerMirroredStrategy`
reads: the same cluster of N workers, each on its own free port of 127.0.0.1,
and its own task index (worker 0 is the chief). Every line the workers print,
on stdout or stderr, comes out on the launcher's with a `[worker i] ` prefix.

The first worker to fail decides the outcome: the others are stopped (SIGTERM,
then SIGKILL after --grace_period seconds) and the launcher exits with that
worker's code, or 128+N for a worker killed by signal N, as shells report it.
With --max_restarts=K the whole group is instead started again, on fresh
ports, up to K times; the workers resume from the last checkpoint in their
shared --model_dir by themselves. SIGINT, SIGTERM and SIGHUP sent to the
launcher are forwarded to every worker, which get --grace_period seconds to
exit; they never cause a restart, and the launcher then exits with 128+N.

With --evaluator, one more copy runs as TF_CONFIG's `evaluator` task: the same
command with `--mode=continuous_eval` appended (the last --mode wins), which
evaluates each checkpoint the workers write and is not one of the cluster's
workers. Its lines are prefixed `[evaluator] `. It never stops the workers: if
it fails, they go on and the launcher says so, then exits with its code once
they have finished. When they finish, the launcher waits for it to evaluate
the final checkpoint; it is stopped, and restarted, with the group.

Each worker runs in a session of its own, so that a Ctrl-C reaches it once
(through the launcher, not also from the terminal) and so that stopping a
worker also stops the processes it started (but a launcher killed by SIGKILL
leaves its workers running). Their stdin is /dev/null, and PYTHONUNBUFFERED=1
is set (unless already set) so that the output of Python workers is live.

Flags are absl flags, as in experiments/, with GNU-style scanning turned off:
parsing stops at `--` (or at the first word that is not a flag), so the
command's own flags are never taken for the launcher's.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import typing

from absl import app
from absl import flags

_WORKERS = flags.DEFINE_integer(
    'workers', None, 'How many copies of the command to start.', lower_bound=1)
_MAX_RESTARTS = flags.DEFINE_integer(
    'max_restarts', 0, 'How many times to restart the whole group when a '
    'worker fails; 0 to stop at the first failure.', lower_bound=0)
_PORT_BASE = flags.DEFINE_integer(
    'port_base', 0, 'If set, worker i listens on port_base+i instead of a '
    'free port found at start-up.', lower_bound=0, upper_bound=65535)
_GRACE_PERIOD = flags.DEFINE_float(
    'grace_period', 10.0, 'Seconds a worker is given to exit after SIGTERM '
    '(or a forwarded signal) before it is sent SIGKILL.', lower_bound=0.0)
_EVALUATOR = flags.DEFINE_bool(
    'evaluator', False, "Also run TF_CONFIG's evaluator task: the command "
    'with --mode=continuous_eval appended, beside the workers.')
_STARTUP_TIMEOUT = flags.DEFINE_float(
    'startup_timeout', 0.0, 'If set, seconds within which every worker must '
    'listen on its TF_CONFIG port (MultiWorkerMirroredStrategy starts its '
    'server there); a worker that does not counts as failed. 0: no check.',
    lower_bound=0.0)

HOST = '127.0.0.1'
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_POLL_SECONDS = 0.05
_KILL_WAIT_SECONDS = 5.0  # After SIGKILL; only an unkillable process waits.
_DRAIN_SECONDS = 2.0  # For output of a worker's children that outlive it.
_OUTPUT_LOCK = threading.Lock()  # One line at a time on stdout and stderr.


class GroupResult(typing.NamedTuple):
  """How a group of workers ended.

  Attributes:
    exit_code: What the launcher should exit with: 0 if every worker
      succeeded, else the failed worker's code (128+N for signal N), or
      128+N if the launcher was sent signal N.
    failed: The index of the first worker that failed, or None.
    reason: How it failed, e.g. 'died (exit code 3)', 'died (signal
      SIGKILL)' or 'failed (not listening on 127.0.0.1:4001 after 60s)';
      with failed None, how the evaluator failed ('evaluator died (exit
      code 1)'), whose code is then the exit code.
    stopped_by: The signal number that stopped the launcher, or None.
  """
  exit_code: int
  failed: typing.Optional[int] = None
  reason: str = ''
  stopped_by: typing.Optional[int] = None


def free_ports(n):
  """Finds n distinct TCP ports of 127.0.0.1 that are free right now.

  All n sockets are bound to port 0 (the kernel picks) before any is closed,
  so the ports are distinct. Another process may still take one before its
  worker binds it; that worker then fails to start its server, and the group
  fails (or restarts, on fresh ports) as for any other failure.

  Args:
    n: How many ports.

  Returns:
    A list of n port numbers.
  """
  sockets = []
  try:
    for _ in range(n):
      sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      sockets.append(sock)
      sock.bind((HOST, 0))
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


def cluster_spec(ports):
  """The cluster of local workers on `ports`, as TF_CONFIG's 'cluster'.

  Args:
    ports: One port per worker, worker 0 (the chief) first.

  Returns:
    {'worker': ['127.0.0.1:PORT', ...]}.
  """
  return {'worker': [f'{HOST}:{port}' for port in ports]}


def tf_config(ports, index, task_type='worker'):
  """The TF_CONFIG value of worker `index` in the cluster on `ports`.

  Args:
    ports: One port per worker, worker 0 (the chief) first.
    index: This worker's task index.
    task_type: 'worker', or 'evaluator' for the task beside the cluster
      (index 0; it is not in the cluster, as TF's convention has it).

  Returns:
    A JSON string, e.g. '{"cluster": {"worker": ["127.0.0.1:4001",
    "127.0.0.1:4002"]}, "task": {"type": "worker", "index": 1}}'.

  Raises:
    ValueError: If index is not a worker of the cluster.
  """
  if task_type == 'worker' and not 0 <= index < len(ports):
    raise ValueError(f'Worker index {index} is outside the cluster of '
                     f'{len(ports)} workers.')
  return json.dumps({'cluster': cluster_spec(ports),
                     'task': {'type': task_type, 'index': index}})


def describe_exit(returncode):
  """Says how a process ended, from its `Popen.returncode`.

  Args:
    returncode: The exit code, or -N for a process killed by signal N.

  Returns:
    E.g. 'exit code 3' or 'signal SIGKILL'.
  """
  if returncode >= 0:
    return f'exit code {returncode}'
  try:
    return f'signal {signal.Signals(-returncode).name}'
  except ValueError:
    return f'signal {-returncode}'


def shell_exit_code(returncode):
  """The exit code a shell shows for `Popen.returncode`: 128+N for signal N."""
  return returncode if returncode >= 0 else 128 - returncode


def say(message):
  """Prints a launcher message, `launch: ...`, on stderr."""
  with _OUTPUT_LOCK:
    sys.stderr.write(f'launch: {message}\n')
    sys.stderr.flush()


def _pump(pipe, stream, prefix):
  """Copies lines from `pipe` to `stream` until EOF, each with `prefix`.

  A line is written in one piece under a lock, so lines of different workers
  never interleave. If `stream` is closed (e.g. `| head` has exited), the
  rest is read and dropped, so that the worker never blocks on a full pipe.
  """
  out = getattr(stream, 'buffer', None)
  with pipe:
    for line in iter(pipe.readline, b''):
      if out is None:
        continue
      if not line.endswith(b'\n'):
        line += b'\n'
      with _OUTPUT_LOCK:
        try:
          out.write(prefix + line)
          out.flush()
        except (OSError, ValueError):
          out = None


class _Worker:
  """One running copy of the command, its output pumps and exit watcher."""

  def __init__(self, command, ports, index, exits, task_type='worker'):
    env = dict(os.environ, TF_CONFIG=tf_config(ports, index, task_type))
    env.setdefault('PYTHONUNBUFFERED', '1')
    self.index = index
    self.proc = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    prefix = (f'[worker {index}] ' if task_type == 'worker'
              else f'[{task_type}] ').encode()
    self._pumps = [
        threading.Thread(target=_pump, args=(pipe, stream, prefix),
                         daemon=True)
        for pipe, stream in ((self.proc.stdout, sys.stdout),
                             (self.proc.stderr, sys.stderr))]
    self._watcher = threading.Thread(target=self._watch, args=(exits,),
                                     daemon=True)
    for thread in self._pumps + [self._watcher]:
      thread.start()

  def _watch(self, exits):
    returncode = self.proc.wait()
    for pump in self._pumps:  # Its last lines come before any verdict.
      pump.join(_DRAIN_SECONDS)
    exits.append((self.index, returncode))  # Atomic: exits are in order.

  def running(self):
    return self._watcher.is_alive()

  def signal(self, signum):
    """Sends `signum` to the worker's process group, if it still runs."""
    if self.proc.returncode is None:
      try:
        os.killpg(self.proc.pid, signum)
      except ProcessLookupError:
        pass


def _listening(port):
  try:
    with socket.create_connection((HOST, port), timeout=1.0):
      return True
  except OSError:
    return False


class _Group:
  """N workers started together, and the signals the launcher received."""

  def __init__(self, received):
    self.workers = []
    self.exits = []  # (index, returncode), in the order the workers exited.
    self._received = received
    self._forwarded = 0

  def forward_signals(self):
    """Sends the workers the signals received since the last call."""
    for signum in self._received[self._forwarded:]:
      for worker in self.workers:
        worker.signal(signum)
    self._forwarded = len(self._received)

  def wait(self, seconds):
    """Waits up to `seconds` for all workers to exit; True if they did."""
    deadline = time.monotonic() + seconds
    while any(worker.running() for worker in self.workers):
      self.forward_signals()
      if time.monotonic() >= deadline:
        return False
      time.sleep(_POLL_SECONDS)
    return True

  def stop(self, grace_period, signum=signal.SIGTERM):
    """Sends `signum` to the workers, then SIGKILL after `grace_period`."""
    if signum is not None:
      for worker in self.workers:
        worker.signal(signum)
    if not self.wait(grace_period):
      for worker in self.workers:
        worker.signal(signal.SIGKILL)
      self.wait(_KILL_WAIT_SECONDS)


def run_group(command, workers, port_base=0, grace_period=10.0,
              startup_timeout=0.0, received=None, evaluator=False):
  """Runs `workers` copies of `command` as one cluster, until they end.

  Args:
    command: The command and its arguments, e.g. ['python', '-m',
      'experiments.imagenet', '--strategy=multi_worker'].
    workers: How many copies.
    port_base: If non-zero, worker i gets port port_base+i; else free ports.
    grace_period: Seconds between SIGTERM (or a forwarded signal) and SIGKILL
      when stopping workers.
    startup_timeout: If non-zero, every worker must listen on its port within
      this many seconds, or it counts as failed.
    received: A list the caller's signal handlers append signal numbers to.
      Each is forwarded to the workers; any stops the group. None: no
      forwarding.
    evaluator: Also run the evaluator task (see the module docstring); the
      group ends when it has too, and it fails the group only once the
      workers have finished.

  Returns:
    A `GroupResult`. The workers have all exited (or been killed) by then.

  Raises:
    OSError: If the command cannot be started.
  """
  received = [] if received is None else received
  ports = (list(range(port_base, port_base + workers)) if port_base
           else free_ports(workers))
  group = _Group(received)
  say(f'starting {workers} worker{"s" if workers > 1 else ""} on '
      f'{", ".join(cluster_spec(ports)["worker"])}'
      f'{" and an evaluator" if evaluator else ""}')
  try:
    for index in range(workers):
      if received:
        break
      group.workers.append(
          _Worker(command, ports, index, group.exits))
    evaluations = []  # The evaluator's exit, apart from the workers'.
    evaluator = evaluator and not received
    if evaluator:
      group.workers.append(_Worker(command + ['--mode=continuous_eval'], ports,
                                   0, evaluations, 'evaluator'))
    evaluator_failure = ''
    deadline = time.monotonic() + startup_timeout
    unheard = set(range(workers)) if startup_timeout else set()
    while True:
      group.forward_signals()
      if received:
        signame = signal.Signals(received[0]).name
        say(f'received {signame}; forwarded it to the workers')
        group.stop(grace_period, signum=None)
        return GroupResult(128 + received[0], stopped_by=received[0])
      failures = [(i, code) for i, code in group.exits if code != 0]
      if failures:
        index, returncode = failures[0]
        result = GroupResult(shell_exit_code(returncode), index,
                             f'died ({describe_exit(returncode)})')
        break
      if evaluations and evaluations[0][1] and not evaluator_failure:
        evaluator_failure = (
            f'evaluator died ({describe_exit(evaluations[0][1])})')
        say(f'{evaluator_failure}; the workers go on')
      if len(group.exits) == workers and (evaluations or not evaluator):
        return GroupResult(
            shell_exit_code(evaluations[0][1]) if evaluator_failure else 0,
            reason=evaluator_failure)
      unheard = {i for i in unheard if group.workers[i].running()
                 and not _listening(ports[i])}
      if unheard and time.monotonic() > deadline:
        index = min(unheard)
        result = GroupResult(1, index, f'failed (not listening on {HOST}:'
                             f'{ports[index]} after {startup_timeout:g}s)')
        break
      time.sleep(_POLL_SECONDS)
    if len(group.exits) < workers:
      say(f'worker {result.failed} {result.reason}; stopping the '
          'other workers')
    return result
  finally:
    group.stop(grace_period)  # Nothing left to stop, unless on an exception.


def _usage_error(message):
  say(f'error: {message}\nUsage: python -m launch.local --workers=N '
      '[--max_restarts=K] [--port_base=P] [--grace_period=S] '
      '[--startup_timeout=S] [--evaluator] -- COMMAND [ARGS...]\n'
      'e.g. python -m launch.local --workers=2 -- python -m '
      'experiments.imagenet --strategy=multi_worker --model_dir=/tmp/run1')
  return 2


def main(argv):
  """Runs the group, restarting it up to --max_restarts times.

  Args:
    argv: The program name, then the command (what followed `--`).

  Returns:
    The exit code: see the module docstring; 2 for a bad command line.
  """
  command = argv[1:]
  if not command:
    return _usage_error('no command to run; give it after --.')
  if shutil.which(command[0]) is None:
    return _usage_error(f'command not found: {command[0]!r}.')
  if _PORT_BASE.value and _PORT_BASE.value + _WORKERS.value > 65536:
    return _usage_error(f'--port_base={_PORT_BASE.value} leaves no room for '
                        f'{_WORKERS.value} ports below 65536.')
  received = []
  for forwarded in FORWARDED_SIGNALS:
    signal.signal(forwarded, lambda signum, frame: received.append(signum))
  restarts = _MAX_RESTARTS.value
  for attempt in range(restarts + 1):
    result = run_group(command, _WORKERS.value, port_base=_PORT_BASE.value,
                       grace_period=_GRACE_PERIOD.value,
                       startup_timeout=_STARTUP_TIMEOUT.value,
                       received=received, evaluator=_EVALUATOR.value)
    if result.failed is None:
      say(f'stopped by {signal.Signals(result.stopped_by).name}'
          if result.stopped_by else 'all workers finished' + (
              f', but the {result.reason}' if result.reason else ''))
      return result.exit_code
    if received or attempt == restarts:
      break
    say(f'worker {result.failed} {result.reason}; restarting the group '
        f'({attempt + 1}/{restarts})')
  used = (f' after {attempt} restart{"s" if attempt > 1 else ""}' if attempt
          else '')
  say(f'worker {result.failed} {result.reason}{used}; exiting with '
      f'{result.exit_code}')
  return result.exit_code


if __name__ == '__main__':
  flags.mark_flag_as_required('workers')
  flags.FLAGS.set_gnu_getopt(False)
  app.run(main)
