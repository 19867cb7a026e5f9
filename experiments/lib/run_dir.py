"""The run directory (--model_dir): one run at a time, and its checkpoints.

A run directory holds days of work, so this module never guesses:
- `RunLock` gives one process at a time the directory. The lock is an
  `flock` on `run.lock`, which the kernel releases when its holder dies, so a
  lock is never stale; the file names its holder, so a refusal can say who
  holds it, and a file left by a killed holder tells the next run who died.
- `training_checkpoint` is what is saved: model, optimizer and, under
  float16, the loss scale, saved apart from the optimizer so that a run can
  resume under another precision (--precision=auto differs between
  machines).
- `save_checkpoint` stops the run with a clear error where a checkpoint
  cannot be written (a full disk), removing its partial files.
- `stopped_writing` is that error's paragraph for any file of the run
  (checkpoints, metrics, summaries, config.json, the export).
- `restore` reads one checkpoint into the run's model and optimizer (the
  continuous evaluator restores each in turn).
- `restore_newest_intact` finds every checkpoint, whether or not TF's
  `checkpoint` index file lists it, and restores the newest one that reads
  back whole, naming those it skipped; with checkpoints present and none
  intact it refuses to start, since starting afresh would overwrite them.
"""

import datetime
import fcntl
import json
import os
import re
import socket
import sys

from absl import logging
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from experiments.lib import errors
from experiments.lib import files
from experiments.lib.errors import RunDirError

LOCK_FILE = 'run.lock'
_CHECKPOINT = re.compile(r'ckpt-(\d+)')


class RunLock:
  """An exclusive lock on a run directory, held while a run uses it.

  The lock makes the directory if it is missing; a directory it made that
  the run leaves empty (a run that failed before it started) is removed on
  release, so that it does not stand in the way of the corrected command.
  """

  def __init__(self, model_dir):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOCK_FILE)
    self._fd = None
    self._made = []  # The directories acquire made, innermost first.

  def acquire(self):
    """Takes the lock, or refuses naming the process that holds it.

    Raises:
      RunDirError: If another live process holds it, or model_dir cannot be
        a directory (a file is there, or no permission to make it).
    """
    if not files.is_local(self.model_dir):
      logging.warning('%s is not a local directory: it cannot be locked, so '
                      'make sure no other run uses it.', self.model_dir)
      return
    self._make_dirs()
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunDirError(
            f'Another run ({_describe(holder)}) is using {self.model_dir}. Two '
            'runs in one directory would overwrite each other\'s checkpoints: '
            'wait for it to finish, stop it, or choose another --model_dir.'
        ) from None
      try:  # The holder before us may have removed the file we opened.
        if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
          break
      except FileNotFoundError:
        pass
      os.close(fd)
    previous = _read_holder(fd)
    if previous:
      logging.warning('The previous run on %s (%s) is no longer running and '
                      'did not end cleanly (was it killed?); its checkpoints '
                      'are used as they are.', self.model_dir, _describe(previous))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({
        'pid': os.getpid(), 'host': socket.gethostname(),
        'started': datetime.datetime.now().isoformat(timespec='seconds'),
        'command': ' '.join(sys.argv)}).encode(), 0)
    self._fd = fd

  def _make_dirs(self):
    """Makes model_dir and its missing parents, remembering which."""
    missing, directory = [], os.path.abspath(self.model_dir)
    while not os.path.lexists(directory):
      missing.append(directory)
      directory = os.path.dirname(directory)
    try:
      os.makedirs(self.model_dir, exist_ok=True)
    except OSError as e:
      why = ('a file is in the way: the path, or a parent of it, is a file'
             if isinstance(e, (FileExistsError, NotADirectoryError))
             else files.reason(e))
      raise RunDirError(
          f'--model_dir={self.model_dir} cannot be made a directory ({why}). '
          'Choose another --model_dir, or move the file away.') from None
    self._made = missing

  def release(self):
    """Removes the lock file, releases the lock, and removes the
    directories that `acquire` made if the run left them empty."""
    if self._fd is None:
      return
    os.unlink(self.path)
    os.close(self._fd)  # Closing releases the flock.
    self._fd = None
    for directory in self._made:
      try:
        os.rmdir(directory)  # Only an empty one.
      except OSError:
        break  # The run wrote in it (or another process did): kept.
    self._made = []


def _read_holder(fd):
  try:
    return json.loads(os.pread(fd, 65536, 0).decode() or 'null')
  except ValueError:
    return {}


def _describe(holder):
  if not holder:
    return 'a process that left no details'
  return (f'pid {holder.get("pid")} on {holder.get("host")}, started '
          f'{holder.get("started")}: {holder.get("command")}')


def save_checkpoint(manager, step):
  """Saves checkpoint `step`; on failure removes its partial files and stops.

  Raises:
    errors.WriteError: Naming the checkpoint and the reason.
  """
  try:
    manager.save(checkpoint_number=step)
  except (tf.errors.OpError, OSError) as e:
    # The unfinished write of ours: free its space.
    files.remove_tree(os.path.join(manager.directory, f'ckpt-{step}_temp'))
    raise errors.WriteError(f'Could not write checkpoint {step} in '
                            f'{manager.directory} ({files.reason(e)}).'
                            ) from None


def stopped_writing(error, model_dir):
  """The paragraph of a run stopped by a file it could not write.

  Args:
    error: The `errors.WriteError` (which names the file and the reason).
    model_dir: The run directory.

  Returns:
    An `errors.WriteError` that also says which checkpoint is kept and how
    to go on.
  """
  kept = checkpoints(model_dir)
  return errors.WriteError(
      f'{error} The run stopped; the newest checkpoint kept is '
      f'{kept[0] if kept else "none (none was written yet)"}. Make room (or '
      'fix the directory) and rerun the same command to resume.')


def training_checkpoint(model, optimizer):
  """The checkpoint a run saves: model, optimizer and any loss scale.

  Args:
    model: The model.
    optimizer: Its optimizer, a `keras.optimizers.LossScaleOptimizer` under
      mixed_float16.

  Returns:
    A `tf.train.Checkpoint` with `model`, `optimizer` (the inner optimizer
    under float16, so that its state has the same names in every precision)
    and, under float16, `loss_scale`.
  """
  inner = getattr(optimizer, 'inner_optimizer', None)
  if inner is None:
    return tf.train.Checkpoint(model=model, optimizer=optimizer)
  return tf.train.Checkpoint(
      model=model, optimizer=inner, loss_scale=tf.train.Checkpoint(
          scale=optimizer.dynamic_scale, counter=optimizer.step_counter))


def checkpoints(model_dir):
  """The checkpoint prefixes in model_dir, newest first.

  Every `ckpt-N.index` counts, listed in TF's `checkpoint` index file or not
  (a lost index file must not hide a run's work).
  """
  found = {}
  for index in tf.io.gfile.glob(os.path.join(model_dir, 'ckpt-*.index')):
    prefix = index[:-len('.index')]
    match = _CHECKPOINT.fullmatch(os.path.basename(prefix))
    if match:
      found[prefix] = int(match.group(1))
  return sorted(found, key=found.get, reverse=True)


def _reader(prefix):
  """TF's reader of one checkpoint, by its prefix. (Not tf.train's
  `load_checkpoint`, which takes a prefix for a directory where the
  filesystem says one exists, as TF's ram:// does for 'ckpt-10' when
  'ckpt-10.index' does.)"""
  return tf.compat.v1.train.NewCheckpointReader(prefix)


def restore(checkpoint, path):
  """Restores one checkpoint into `checkpoint`'s objects, whatever precision
  wrote it: a loss scale is restored where both have one, else left as it
  is (new) or ignored (saved under float16, resumed under another)."""
  saved = set(_reader(path).get_variable_to_shape_map())
  has_scale = any(name.startswith('loss_scale/') for name in saved)
  parts = {'model': checkpoint.model, 'optimizer': checkpoint.optimizer}
  if has_scale and hasattr(checkpoint, 'loss_scale'):
    parts['loss_scale'] = checkpoint.loss_scale
  status = tf.train.Checkpoint(**parts).restore(path)
  status.expect_partial()  # First, so that a failed restore stays quiet too.
  status.assert_existing_objects_matched()


_SHOWN = 8


def _saved_layer_shapes(path):
  """{layer position: sorted weight shapes} of the model in one of our checkpoints.

  Keras tracks a model's layers by position ('model/_operations/<i>'); a
  weight may be saved under another path (the optimizer's), so the
  checkpoint's object graph is followed rather than its keys.
  """
  reader = _reader(path)
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor('_CHECKPOINTABLE_OBJECT_GRAPH'))
  shapes = reader.get_variable_to_shape_map()

  def child(node, name):
    return next((c.node_id for c in graph.nodes[node].children
                 if c.local_name == name), None)

  operations = child(child(0, 'model') or 0, '_operations')
  layers = {}
  for layer in (graph.nodes[operations].children if operations else []):
    layers[int(layer.local_name)] = sorted(
        tuple(shapes[attribute.checkpoint_key])
        for weight in graph.nodes[layer.node_id].children
        for attribute in graph.nodes[weight.node_id].attributes
        if attribute.name == 'VARIABLE_VALUE')
  return layers


def _mismatches(model, path):
  """Lists the layers whose weights differ in shape from the checkpoint's.

  Returns '' where they all agree (the checkpoint is then damaged, not
  mismatched) or the checkpoint cannot be read.
  """
  try:
    saved = _saved_layer_shapes(path)
  except (tf.errors.OpError, ValueError, KeyError, IndexError):
    return ''  # Damaged (IndexError: TF's reader of a truncated file).
  lines = []
  for index, layer in enumerate(model.operations):
    ours = sorted(tuple(w.shape) for w in getattr(layer, 'weights', []))
    theirs = saved.pop(index, [])
    if ours != theirs:
      lines.append(f'{layer.name}: checkpoint {theirs or "none"}, this network '
                   f'{ours or "none"}')
  lines += [f'layer {i} of the checkpoint: {shapes}, not in this network'
            for i, shapes in sorted(saved.items()) if shapes]
  if not lines:
    return ''
  return ('\n    weights that differ (layer: shapes):\n      '
          + errors.shortlist(lines, _SHOWN, separator='\n      '))


def restore_newest_intact(checkpoint, model_dir):
  """Restores the newest checkpoint of model_dir that reads back whole.

  Args:
    checkpoint: From `training_checkpoint`.
    model_dir: The run directory.

  Returns:
    (path, skipped): the checkpoint restored (None if there are none) and the
    newer ones that could not be restored, each named in a warning.

  Raises:
    RunDirError: If there are checkpoints and none of them restores; nothing
      is changed, and the message names each with its error.
  """
  skipped, errors = [], []
  for path in checkpoints(model_dir):
    try:
      restore(checkpoint, path)
      return path, skipped
    except (tf.errors.OpError, ValueError, AssertionError, IndexError,
            KeyError) as e:
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      logging.warning('Skipped checkpoint %s, which cannot be restored (%s); '
                      'trying the one before it.', path, reason)
      skipped.append(path)
      errors.append(f'\n  {path}: {reason}{_mismatches(checkpoint.model, path)}')
  if skipped:
    raise RunDirError(
        f'{model_dir} holds checkpoints, but none of the checkpoints restores '
        f'into this network:{"".join(errors)}\n  Nothing was changed. If they '
        'belong to another network, use another --model_dir; if they are '
        'damaged, restore them from a copy or move them away to start afresh.')
  return None, skipped
