"""The files of a run, on any filesystem TensorFlow reaches.

Everything a run writes (checkpoints, the saved config.json,
metrics.jsonl, summaries, the SavedModel) goes through `tf.io.gfile`, so a
--model_dir or --export_dir on gs:// (or TF's in-memory ram://, in tests)
works as a local one does; plain `os` calls would write a local folder named
'gs:' instead. Writes that fail (a full disk, a lost bucket) raise
`errors.WriteError` naming the file and the reason, which `train.run` turns
into a one-paragraph stop.
"""

import contextlib
import fcntl
import os
import uuid

import tensorflow as tf

from experiments.lib import errors


class ReadError(Exception):
  """A file could not be read."""


def is_local(path):
  """True for a path on the local filesystem (no 'scheme://')."""
  return '://' not in path


def reason(error):
  """The most specific part of an OS or TensorFlow error message: after its
  last ';', its first line (e.g. 'No space left on device')."""
  message = getattr(error, 'message', None) or getattr(
      error, 'strerror', None) or str(error)
  lines = message.split(';')[-1].strip().splitlines()
  return lines[0] if lines else type(error).__name__


def exists(path):
  return tf.io.gfile.exists(path)


def isdir(path):
  return tf.io.gfile.isdir(path)


def listdir(path):
  return tf.io.gfile.listdir(path)


def glob(pattern):
  return tf.io.gfile.glob(pattern)


def read_text(path):
  """The text of a file; ReadError if it cannot be read."""
  try:
    with tf.io.gfile.GFile(path) as f:
      return f.read()
  except (tf.errors.OpError, OSError) as e:
    raise ReadError(reason(e)) from None


def _writing(path, write):
  try:
    write()
  except (tf.errors.OpError, OSError) as e:
    raise errors.WriteError(f'Could not write {path} ({reason(e)}).') from None


def makedirs(path):
  """Makes a directory and its parents (no error if it exists)."""
  _writing(path, lambda: tf.io.gfile.makedirs(path))


def write_atomically(path, text):
  """Writes a text file whole or not at all: beside it, then renamed."""

  def write():
    parent = path.rpartition('/')[0]
    if parent:
      tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
      f.write(text)
    tf.io.gfile.rename(path + '.tmp', path, overwrite=True)

  _writing(path, write)


def append_text(path, text):
  """Appends to a text file (made if missing)."""

  def write():
    with tf.io.gfile.GFile(path, 'a') as f:
      f.write(text)

  _writing(path, write)


@contextlib.contextmanager
def exclusive(path):
  """Holds an exclusive `flock` on a local file (made if missing) meanwhile.

  For a file that two processes write: a training run and an evaluator beside
  it both append to metrics.jsonl, and a resuming run rewrites it (a new file
  renamed over the old one). A writer that waited on the replaced file finds
  it no longer at `path` and locks the new one instead, so no row goes into a
  file that was just replaced. Other filesystems (gs://) have no locks: there
  the block runs unguarded.

  Raises:
    errors.WriteError: If the file cannot be made.
  """
  if not is_local(path):
    yield
    return
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
      raise errors.WriteError(f'Could not write {path} ({reason(e)}).'
                              ) from None
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
      if os.fstat(fd).st_ino == os.stat(path).st_ino:
        break
    except FileNotFoundError:
      pass
    os.close(fd)
  try:
    yield
  finally:
    os.close(fd)  # Closing releases the flock.


def move_tree(source, target):
  """Moves a directory to a new name (not over an existing one).

  Locally one `rename`, atomic. Object stores have no directories to
  rename (and TF's in-memory filesystem renames only the name itself), so
  there each file is moved, then the emptied source removed.
  """

  def move():
    if is_local(source):
      os.rename(source, target)
      return
    for directory, _, names in tf.io.gfile.walk(source):
      inner = directory[len(source):]
      tf.io.gfile.makedirs(target + inner)
      for name in names:
        tf.io.gfile.rename(f'{directory}/{name}', f'{target}{inner}/{name}')
    tf.io.gfile.rmtree(source)

  _writing(target, move)


def remove_tree(path):
  """Removes a directory with everything in it, if it is there."""
  if tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(path)


def sibling(path, tag):
  """A new, unused name next to `path`: '.<name>.<tag>-<random>'.

  Hidden, and not an extension of `path`: some filesystems (TF's ram://)
  take any name that starts with `path` for a file under it.
  """
  parent, _, name = path.rstrip('/').rpartition('/')
  return f'{parent + "/" if parent else ""}.{name}.{tag}-{uuid.uuid4().hex[:8]}'
