"""Where this process runs: devices, precision, strategy, chief, and start-up.

`start(config)` returns the run's `Placement`: the tf.distribute strategy
named by --strategy (once the whole cluster is up), the collective with which
all workers decide together (e.g. to stop on SIGTERM), whether this worker
is the chief (the one that writes to model_dir) and where it writes, and
--precision and --jit_compile resolved for this hardware ('auto'). The
config keeps what the user asked, so each machine resolves 'auto' for itself.

MultiWorkerMirroredStrategy blocks until every worker of the cluster has
connected; with a wrong TF_CONFIG or a dead peer it would wait for hours.
`check_tf_config` catches what can be seen locally (malformed JSON, a task
that is not in the cluster, its own port already taken) before TensorFlow
starts, and `StartupWatchdog` ends the process with a clear message if the
cluster is not up within a deadline.
"""

import dataclasses
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any, Callable

import keras
import tensorflow as tf

from experiments.lib.errors import ClusterError


def check_tf_config(environ=os.environ):
  """Validates TF_CONFIG for MultiWorkerMirroredStrategy.

  Args:
    environ: The environment to read TF_CONFIG from.

  Returns:
    (cluster dict, task type, task index), or None if TF_CONFIG is unset
    (e.g. under Slurm).

  Raises:
    ClusterError: Naming what is wrong and what a valid TF_CONFIG looks like.
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
    raise ClusterError(
        f'TF_CONFIG is not valid ({e}): {text!r}; {example}.') from e
  addresses = cluster.get(task_type)
  if not isinstance(addresses, list) or not 0 <= index < len(addresses):
    raise ClusterError(f'TF_CONFIG task {task_type}:{index} is not in its '
                       f'cluster {cluster}; {example}.')
  host, _, port = addresses[index].rpartition(':')
  if not port.isdigit():
    raise ClusterError(
        f'TF_CONFIG address {addresses[index]!r} has no port; {example}.')
  with socket.socket() as probe:
    try:
      probe.bind((host or '0.0.0.0', int(port)))
    except OSError as e:
      raise ClusterError(
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


# --- Devices and speed settings ---------------------------------------------


def configure_devices(config):
  """Process-wide settings that must precede any TensorFlow work."""
  if config.cpu_devices > 1:  # Split the CPU to test distribution on one host.
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * config.cpu_devices)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  if config.seed is not None:
    keras.utils.set_random_seed(config.seed)


def cpu_flags():
  """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      return frozenset(
          next((line for line in f if line.startswith('flags')), '').split())
  except OSError:
    return frozenset()


def resolve_auto_settings(config):
  """Resolves --precision=auto and --jit_compile=auto for this machine.

  bfloat16 where the hardware computes it natively (TPUs, Ampere or newer
  GPUs, CPUs with AVX512-BF16/AMX), float16 with loss scaling on older GPUs;
  XLA on GPUs, not on CPUs, where it made ResNet-50 slower (see the
  benchmark in the README). TPUs always compile.

  Returns:
    (precision, jit_compile), with 'auto' and None replaced.
  """
  precision, jit = config.precision, config.jit_compile
  gpus = tf.config.list_physical_devices('GPU')
  if precision == 'auto':
    if config.strategy == 'tpu':
      precision = 'mixed_bfloat16'
    elif gpus:
      capability = tf.config.experimental.get_device_details(gpus[0]).get(
          'compute_capability', (0, 0))
      precision = ('mixed_bfloat16' if capability >= (8, 0) else
                   'mixed_float16' if capability >= (7, 0) else 'float32')
    else:
      native = not cpu_flags().isdisjoint({'avx512_bf16', 'amx_bf16'})
      precision = 'mixed_bfloat16' if native else 'float32'
  if jit is None:
    jit = bool(gpus) and config.strategy != 'tpu'
  return precision, jit


# --- The strategy ------------------------------------------------------------


def _make_strategy(config):
  """Returns the tf.distribute strategy named by --strategy."""
  if config.strategy == 'one_device':
    gpus = tf.config.list_logical_devices('GPU')
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else '/cpu:0')
  if config.strategy == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
    if config.num_gpus > len(gpus):
      raise ClusterError(f'--num_gpus={config.num_gpus}, but TensorFlow sees '
                        f'{len(gpus)} GPUs on this machine.')
    if gpus:
      devices = [d.name for d in gpus[:config.num_gpus or len(gpus)]]
    else:
      devices = [d.name for d in tf.config.list_logical_devices('CPU')]
    return tf.distribute.MirroredStrategy(devices)
  if config.strategy == 'multi_worker':
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=config.collective_timeout or None)
    resolver = None  # TF_CONFIG, as set by launch.local.
    if 'SLURM_STEP_NUM_TASKS' in os.environ and 'TF_CONFIG' not in os.environ:
      resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
          gpus_per_node=len(tf.config.list_physical_devices('GPU')))
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver, communication_options=options)
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu)
  except (ValueError, tf.errors.OpError) as e:
    raise ClusterError(f'--tpu={config.tpu!r}: no such TPU is reachable ({e}). '
                      "Use the TPU's name, or 'local' on a TPU VM.") from None
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where and how this process runs its part of a run.

  Attributes:
    strategy: The tf.distribute strategy.
    agree: agree(flag) -> True if any worker's flag is set (a collective).
    chief: True for the one worker that writes checkpoints, summaries,
      metrics and exports to model_dir.
    write_dir: Where this worker saves: model_dir for the chief, a private
      scratch directory for the others (`close` removes it).
    precision: --precision resolved for this machine.
    jit_compile: --jit_compile resolved for this machine.
  """
  strategy: tf.distribute.Strategy
  agree: Callable[[Any], Any]
  chief: bool
  write_dir: str
  precision: str
  jit_compile: bool

  @property
  def replicas(self):
    return self.strategy.num_replicas_in_sync

  def close(self):
    """Removes a non-chief's scratch directory, with what it saved there."""
    if not self.chief:
      remove_scratch_dir(self.write_dir)


def start(config):
  """Sets up this process's devices and strategy; waits for every worker.

  A multi-worker TF_CONFIG is checked first, and the start-up runs under a
  `StartupWatchdog` of --startup_timeout; the first agreement is a
  collective, so this returns only once the whole cluster is there.

  Returns:
    The `Placement`.

  Raises:
    ClusterError: For a malformed TF_CONFIG, missing GPUs or TPU, or a batch
      that does not divide over the replicas.
  """
  configure_devices(config)
  precision, jit_compile = resolve_auto_settings(config)
  multi_worker = config.strategy == 'multi_worker'
  if multi_worker:
    check_tf_config()
  with StartupWatchdog(config.startup_timeout if multi_worker else 0,
                       'multi-worker cluster'):
    strategy = _make_strategy(config)
    agree = make_agree(strategy)
    agree(tf.constant(False))
  parts = strategy.num_replicas_in_sync * config.batch_split
  if config.batch_size % parts:
    split = (f' in --batch_split={config.batch_split} parts each'
             if config.batch_split > 1 else '')
    raise ClusterError(
        f'--batch_size={config.batch_size} is not divisible by the '
        f'{strategy.num_replicas_in_sync} replicas{split}: each replica takes '
        f'an equal share of the global batch. Use a multiple of {parts}.')
  chief = is_chief(strategy)
  return Placement(strategy, agree, chief,
                   config.model_dir if chief else scratch_dir(strategy),
                   precision, jit_compile)


def make_agree(strategy):
  """Returns agree(flag) -> True if any worker's flag is set (a collective)."""

  @tf.function
  def agree(flag):
    votes = strategy.run(lambda: tf.cast(flag, tf.int32))
    return strategy.reduce('SUM', votes, axis=None) > 0

  return agree


# --- Roles -------------------------------------------------------------------


def is_chief(strategy):
  """True for the one worker that writes checkpoints, summaries and exports."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  if resolver.task_type == 'chief':
    return True
  return (resolver.task_type == 'worker' and resolver.task_id == 0
          and 'chief' not in resolver.cluster_spec().as_dict())


_SCRATCH_PREFIX = 'resnet_v2-scratch-'


def scratch_dir(strategy):
  """A private directory for a non-chief worker's copy of what it saves.

  MultiWorkerMirroredStrategy needs every worker to take part in saving, but
  only the chief's files may land in model_dir; the others save here. Its
  name holds this process's id, so that the directories of workers that were
  killed before they could remove theirs are found and removed here, at the
  next start. Use `remove_scratch_dir` when done.
  """
  remove_stale_scratch_dirs()
  resolver = strategy.cluster_resolver
  return tempfile.mkdtemp(prefix=f'{_SCRATCH_PREFIX}{os.getpid()}-'
                          f'{resolver.task_type}_{resolver.task_id}-')


def remove_scratch_dir(path):
  """Removes what `scratch_dir` made, with everything saved in it."""
  shutil.rmtree(path, ignore_errors=True)


def remove_stale_scratch_dirs(root=None):
  """Removes the scratch directories of processes that no longer run.

  Args:
    root: Where scratch directories are made (default: the temp directory).

  Returns:
    The directories removed.
  """
  removed = []
  for path in glob.glob(os.path.join(root or tempfile.gettempdir(),
                                     _SCRATCH_PREFIX + '*')):
    pid = os.path.basename(path)[len(_SCRATCH_PREFIX):].split('-')[0]
    if pid.isdigit() and not _running(int(pid)):
      remove_scratch_dir(path)
      removed.append(path)
  return removed


def _running(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    return True
  return True
