"""What a run tells a person: progress lines, summaries, metrics.jsonl.

Every worker logs; only the chief writes TensorBoard summaries (in
model_dir/train and model_dir/eval) and model_dir/metrics.jsonl. An
evaluator beside the run (--mode=continuous_eval) writes eval summaries and
rows too: each process writes summaries to event files of its own, and
metrics.jsonl is appended to, and rewritten, only under its `flock`
(`files.exclusive`), so that neither loses the other's rows.
"""

import json
import os
import time

from absl import logging
import tensorflow as tf

from experiments.lib import errors
from experiments.lib import files


class Reporter:
  """Summaries and metrics.jsonl (chief only) for the 'train' and 'eval' splits.

  Each metrics.jsonl row names the run that wrote it ('run': when it
  started). A resumed run first drops the rows written after its checkpoint
  by the run it resumes, which it is about to write again: no step appears
  twice for a split, except where a later --mode=eval evaluates a step
  anew, under its own 'run'.
  """

  def __init__(self, model_dir, chief, start_step, splits=('train', 'eval')):
    """Opens the summaries and metrics.jsonl of a run.

    Args:
      model_dir: The run directory.
      chief: Whether this process writes (else it only logs).
      start_step: The step the run starts from: rows after it are dropped.
        None for an evaluator beside the run, which drops nothing (the rows
        are the training run's).
      splits: The splits this process writes summaries for.
    """
    self.chief = chief
    self.model_dir = model_dir
    self.metrics_path = os.path.join(model_dir, 'metrics.jsonl')
    self.run_id = time.strftime('%Y-%m-%dT%H:%M:%S')
    if chief:
      files.makedirs(model_dir)
      if start_step is not None:
        _drop_rows_after(self.metrics_path, start_step)
      self.writers = {split: tf.summary.create_file_writer(
          os.path.join(model_dir, split)) for split in splits}
    else:
      self.writers = {split: tf.summary.create_noop_writer()
                      for split in splits}

  def write(self, split, step, values):
    """Records {name: number} at `step` for 'train' or 'eval'.

    Raises:
      errors.WriteError: If the summaries or metrics.jsonl cannot be written
        (e.g. the disk is full).
    """
    writer = self.writers[split]
    try:
      with writer.as_default(step=step):
        for name, value in values.items():
          tf.summary.scalar(name, value)
      writer.flush()  # Now, so that a full disk is noticed here.
    except tf.errors.OpError as e:
      raise errors.WriteError(
          'Could not write the TensorBoard summaries in '
          f'{os.path.join(self.model_dir, split)} ({files.reason(e)}).'
      ) from None
    if self.chief:
      record = {'step': step, 'split': split, 'time': time.time(),
                'run': self.run_id, **values}
      with files.exclusive(self.metrics_path):
        files.append_text(self.metrics_path, json.dumps(record) + '\n')

  def eval_result(self, step, result):
    """Logs and records an evaluation (see `train.evaluate`)."""
    logging.info('eval at step %d: top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %d '
                 'images (%d undecodable skipped)', step, 100 * result['top1'],
                 100 * result['top5'], result['loss'], result['images'],
                 result['skipped'])
    self.write('eval', step,
               {k: float(result[k]) for k in ('loss', 'top1', 'top5')})


def _drop_rows_after(path, step):
  """Rewrites metrics.jsonl without its rows past `step`, atomically."""
  if not files.exists(path):
    return
  with files.exclusive(path):  # An evaluator beside the run may append.
    lines = files.read_text(path).splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) <= step]
    if len(kept) == len(lines):
      return
    files.write_atomically(path, ''.join(kept))
  logging.info('Dropped %d rows after step %d from %s: the resumed run writes '
               'them again.', len(lines) - len(kept), step, path)


def _step_of(line):
  """A row's step; infinite for a row cut short by a hard kill."""
  try:
    return json.loads(line)['step']
  except (ValueError, KeyError):
    return float('inf')


def duration(seconds):
  """'1h02m03s' for 3723 seconds."""
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s'


class Progress:
  """Sums training results between progress lines and writes those lines."""

  def __init__(self, batch_size, total_steps):
    self._batch_size, self._total_steps = batch_size, total_steps
    self.skipped = 0  # Undecodable images in this run so far.
    self._reset()

  def _reset(self):
    self._start, self._steps, self._loss, self._correct = time.time(), 0, 0.0, 0.0

  def add(self, step, losses, correct, skipped):
    """Adds the results of the steps that ended at `step`."""
    self._steps += len(losses)
    self._loss += float(losses.sum())
    self._correct += float(correct)
    if skipped:
      self.skipped += int(skipped)
      logging.warning('Skipped %d undecodable images before step %d (%d so '
                      'far in this run).', int(skipped), step, self.skipped)

  def report(self, reporter, step, learning_rate):
    """Logs a progress line and records its numbers, then starts anew."""
    elapsed = time.time() - self._start
    speed = self._steps * self._batch_size / max(elapsed, 1e-9)
    values = {'loss': self._loss / self._steps,
              'top1': self._correct / (self._steps * self._batch_size),
              'learning_rate': learning_rate,
              'images_per_second': speed,
              'skipped_images': float(self.skipped)}
    eta = (self._total_steps - step) * elapsed / self._steps
    logging.info('step %d/%d  loss %.4f  top-1 %.2f%%  lr %.4g  %.1f images/s'
                 '  ETA %s', step, self._total_steps, values['loss'],
                 100 * values['top1'], learning_rate, speed, duration(eta))
    reporter.write('train', step, values)
    self._reset()
