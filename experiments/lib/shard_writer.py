"""Writes a `shard_plan.Plan` as TFRecord shards, in parallel, never half-way.

A conversion of ImageNet takes hours, so it must survive being killed, and
must not leave anything that looks whole but is not:
- Each shard is written under a temporary name ('.<shard>.partial-<random>')
  and renamed to its name only when complete. A note ('.<shard>.done.json',
  written before the rename) keeps the shard's count and skipped files and
  the plan's fingerprint, so a rerun keeps the shards of the same plan and
  writes only the others.
- The manifest is written last; then the notes are removed. A directory
  with a manifest holds a whole conversion.
- A rerun removes our temporaries (recognised by their names) and nothing
  else; an output directory holding any other file is refused, since
  shards written beside someone else's files could be mixed with them.

The shards are written by a pool of threads, one shard each: reading files,
decoding and writing release Python's lock, and, unlike processes, threads
die with the converter when it is killed, so no orphan writes on. (On 2
cores, 2 threads wrote 1,970 images/s of 500x375 JPEGs, 1 thread 1,050; 2
spawned processes, each loading TensorFlow, 760 over the same 8,640.)
"""

import concurrent.futures
import json
import os
import re
import threading
import time
import uuid

from absl import logging
import tensorflow as tf

from experiments.lib import errors
from experiments.lib import files
from experiments.lib.data import shard_format
from experiments.lib.errors import DataError
from experiments.lib.errors import shortlist

_SHARD = shard_format.SHARD_NAME.pattern
_MANIFEST = re.escape(shard_format.MANIFEST)
PARTIAL = re.compile(
    rf'\.(?P<name>{_SHARD}|{_MANIFEST})\.partial-[0-9a-f]{{8}}')
NOTE = re.compile(rf'\.(?P<shard>{_SHARD})\.done\.json')

# The formats a decoder can tell from their first bytes.
_MAGIC = ((b'\xff\xd8\xff', 'JPEG'), (b'\x89PNG\r\n\x1a\n', 'PNG'),
          (b'GIF87a', 'GIF'), (b'GIF89a', 'GIF'), (b'BM', 'BMP'))


def image_format(data):
  """'JPEG', 'PNG', 'GIF', 'BMP' or 'WEBP' from the first bytes, or None."""
  if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
    return 'WEBP'
  return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def read_image(path):
  """(bytes, format, height, width, channels) of an image file, or None.

  The bytes are kept as they are; they are decoded once, with the decoder
  training uses, so that every image written decodes there too, and the
  shape is the decoded one.
  """
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
    kind = image_format(data)
    if kind is None:
      return None
    shape = tf.io.decode_image(data, channels=0, expand_animations=False).shape
  except (tf.errors.OpError, OSError):
    return None
  return data, kind, int(shape[0]), int(shape[1]), int(shape[2])


def _partial_name(path):
  """A new temporary name for `path`, in its folder: ours by PARTIAL."""
  parent, _, name = path.rpartition('/')
  return f'{parent}/.{name}.partial-{uuid.uuid4().hex[:8]}'


class _Stopped(Exception):
  """Another shard's writer stopped the run (--on_bad_image=stop)."""


def _note_path(output, name):
  return f'{output}/.{name}.done.json'


def _bad_image(path):
  return DataError(
      f'{path} is not an image that decodes (JPEG, PNG, GIF, BMP or WebP). '
      'The shards written so far are kept: remove or replace the file and '
      'rerun to write the rest, or rerun with --on_bad_image=skip to leave '
      'such files out (they are named in the log and the manifest).')


def _write_shard(job, name, items):
  """Writes one shard under a temporary name, then gives it its name.

  Args:
    job: The `_Job`.
    name: The shard's name.
    items: Its `shard_plan.Item`s.

  Returns:
    (name, examples written, [paths skipped]).

  Raises:
    DataError: For a file that does not decode, with on_bad_image='stop'.
    _Stopped: When another shard's writer stopped the run.
  """
  path = f'{job.output}/{name}'
  partial = _partial_name(path)
  plan, skipped, examples = job.plan, [], 0
  try:
    with tf.io.TFRecordWriter(partial) as writer:
      for item in items:
        if job.stop.is_set():
          raise _Stopped()
        image = read_image(item.path)
        if image is None and job.on_bad_image == 'stop':
          job.stop.set()
          raise _bad_image(item.path)
        if image is None:
          logging.warning('Skipping %s: not an image that decodes.', item.path)
          skipped.append(item.path)
          continue
        data, kind, height, width, channels = image
        synset, text = plan.classes[item.label - plan.label_offset]
        writer.write(shard_format.encode(
            data, kind, height, width, channels, item.label, synset, text,
            os.path.basename(item.path), item.boxes))
        examples += 1
    note = {'fingerprint': job.fingerprint, 'examples': examples,
            'skipped': skipped}
    with tf.io.gfile.GFile(_note_path(job.output, name), 'w') as f:
      f.write(json.dumps(note))
    tf.io.gfile.rename(partial, path, overwrite=True)
  except BaseException:
    if tf.io.gfile.exists(partial):
      tf.io.gfile.remove(partial)
    raise
  return name, examples, skipped


class _Job:
  """What every shard's writer shares."""

  def __init__(self, plan, output, on_bad_image):
    self.plan = plan
    self.output = output.rstrip('/')
    self.on_bad_image = on_bad_image
    self.fingerprint = plan.fingerprint()
    self.stop = threading.Event()
    self.names = {
        split: shard_format.shard_names(split, len(shards))
        for split, shards in plan.shards.items()}


def _read_json(path):
  """The JSON value in a file, or None if it cannot be read or parsed."""
  try:
    return json.loads(files.read_text(path))
  except (files.ReadError, ValueError):
    return None


def _refuse(output, what, entries):
  return errors.FlagError(
      f'--output={output} holds {what}: {shortlist(sorted(entries), 5)}. The '
      'converter writes only into an empty folder or one holding an '
      'interrupted conversion of the same input with the same flags (which '
      'it then finishes); give a new --output, or remove those files if '
      'they are not needed.')


def _survey(job):
  """The notes of the shards a rerun keeps, or None if the job is done.

  Refuses, before changing anything, an output folder holding files that
  are not ours, or shards or a manifest of another plan. Then removes our
  temporaries and the notes of shards that are not there.

  Returns:
    {shard name: its note} for the complete shards of this plan, or None
    if the manifest of this plan is there (all is written).

  Raises:
    FlagError: If the output folder cannot be used.
  """
  output = job.output
  if not tf.io.gfile.exists(output):
    files.makedirs(output)
    return {}
  if not tf.io.gfile.isdir(output):
    raise errors.FlagError(f'--output={output} is a file; give a folder '
                           '(new, or empty).')
  expected = {name for names in job.names.values() for name in names}
  shards, notes, partials, foreign, manifest = set(), {}, [], [], None
  for entry in tf.io.gfile.listdir(output):
    entry = entry.rstrip('/')
    path, note = f'{output}/{entry}', NOTE.fullmatch(entry)
    if tf.io.gfile.isdir(path):
      foreign.append(entry + '/')
    elif entry == shard_format.MANIFEST:
      manifest = _read_json(path) or {}
    elif shard_format.SHARD_NAME.fullmatch(entry):
      shards.add(entry)
    elif PARTIAL.fullmatch(entry):
      partials.append(path)
    elif note:
      notes[note.group('shard')] = (path, _read_json(path) or {})
    else:
      foreign.append(entry)
  if foreign:
    raise _refuse(output, 'files that this conversion did not write', foreign)
  kept = {name: note for name, (_, note) in notes.items()
          if name in shards & expected and
          note.get('fingerprint') == job.fingerprint}
  if manifest is not None and (manifest.get('fingerprint') != job.fingerprint
                               or shards != expected):
    raise _refuse(output, 'a conversion of other images or with other '
                  'flags (its manifest)', [shard_format.MANIFEST])
  if manifest is None and shards - set(kept):
    raise _refuse(output, 'shards of a conversion of other images or with '
                  'other flags', shards - set(kept))
  if partials:
    logging.info('Removing %d unfinished shards of an interrupted run.',
                 len(partials))
  for path in partials + [path for name, (path, _) in notes.items()
                          if manifest is not None or name not in kept]:
    tf.io.gfile.remove(path)
  return None if manifest is not None else kept


class _Progress:
  """Logs a line per shard written: shards and images done, speed, time left."""

  def __init__(self, shards, images):
    self.shards, self.images = shards, images
    self.shards_done = self.images_done = 0
    self.start = time.monotonic()

  def rate(self):
    return self.images_done / max(time.monotonic() - self.start, 1e-6)

  def add(self, name, examples, skipped):
    self.shards_done += 1
    self.images_done += examples + skipped
    rate = self.rate()
    left = (self.images - self.images_done) / max(rate, 1e-6)
    logging.info('Wrote %s (%d images%s): %d/%d shards, %d/%d images, '
                 '%.0f images/s, about %s left.', name, examples,
                 f', {skipped} skipped' if skipped else '', self.shards_done,
                 self.shards, self.images_done, self.images, rate,
                 _duration(left))


def _duration(seconds):
  if seconds < 120:
    return f'{seconds:.0f} s'
  if seconds < 7200:
    return f'{seconds / 60:.0f} min'
  return f'{seconds / 3600:.1f} h'


def _run(job, todo, threads):
  """Writes the shards of `todo` [(name, items)]; returns their notes."""
  written = {}
  progress = _Progress(len(todo), sum(len(items) for _, items in todo))
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    futures = {pool.submit(_write_shard, job, name, items): name
               for name, items in todo}
    try:
      for future in concurrent.futures.as_completed(futures):
        try:
          name, examples, skipped = future.result()
        except _Stopped:
          continue  # The writer that stopped the run raises its own error.
        except (tf.errors.OpError, OSError) as e:
          raise errors.WriteError(
              f'Could not write {job.output}/{futures[future]} '
              f'({files.reason(e)}); the shards written so far are kept, '
              'and a rerun writes the rest.') from None
        written[name] = {'examples': examples, 'skipped': skipped}
        progress.add(name, examples, len(skipped))
    except BaseException:
      job.stop.set()  # The other writers stop and remove their temporaries.
      for future in futures:
        future.cancel()
      raise
  if todo:
    logging.info('Wrote %d shards, %d images, at %.1f images/s.', len(todo),
                 progress.images_done, progress.rate())
  return written


def write(plan, output, on_bad_image='skip', threads=None):
  """Writes `plan` into `output` as shards and a manifest; finishes a rerun.

  Args:
    plan: A `shard_plan.Plan`.
    output: A folder on any filesystem `tf.io.gfile` reaches: new, empty,
      or holding an interrupted conversion of the same plan.
    on_bad_image: 'skip' leaves out (and names) files that do not decode;
      'stop' stops at the first.
    threads: Shards written at once (default: one per core).

  Returns:
    The manifest (a dict, see `shard_format`).

  Raises:
    FlagError: If `output` holds other files.
    DataError: For a file that does not decode, with on_bad_image='stop'.
    WriteError: If a file cannot be written.
  """
  job = _Job(plan, output, on_bad_image)
  kept = _survey(job)
  manifest_path = f'{job.output}/{shard_format.MANIFEST}'
  if kept is None:
    logging.info('%s already holds this conversion, whole.', manifest_path)
    return _read_json(manifest_path)
  todo = [(name, items) for split, shards in plan.shards.items()
          for name, items in zip(job.names[split], shards) if name not in kept]
  if kept:
    logging.info('Keeping %d shards of an interrupted run; writing the '
                 'other %d.', len(kept), len(todo))
  notes = dict(kept, **_run(job, todo, threads or os.cpu_count() or 1))
  splits = {split: {
      'examples': sum(notes[name]['examples'] for name in names),
      'shards': names,
      'shard_examples': [notes[name]['examples'] for name in names],
      'skipped': [p for name in names for p in notes[name]['skipped']],
  } for split, names in job.names.items()}
  text = shard_format.manifest_text(plan.label_offset, plan.classes, splits,
                                    job.fingerprint)
  partial = _partial_name(manifest_path)
  try:
    with tf.io.gfile.GFile(partial, 'w') as f:
      f.write(text)
    tf.io.gfile.rename(partial, manifest_path, overwrite=True)
    for name in notes:
      tf.io.gfile.remove(_note_path(job.output, name))
  except (tf.errors.OpError, OSError) as e:
    raise errors.WriteError(
        f'Could not write {manifest_path} ({files.reason(e)}); rerun to '
        'write it.') from None
  return json.loads(text)
