"""--mode=continuous_eval: an evaluator beside a training run.

A multi-day job should not stop to evaluate, so a second process does it, as
slim's eval_image_classifier loop and TF_CONFIG's `evaluator` task do:

    python -m experiments.imagenet --model_dir=RUN --mode=train &
    python -m experiments.imagenet --model_dir=RUN --mode=continuous_eval

It watches the run directory with `tf.train.checkpoints_iterator` and
evaluates every checkpoint it has not evaluated yet, oldest first: each time
the trainer records a new one, all those since the last one evaluated (the
trainer may have written several during one evaluation). It starts after
the last step that metrics.jsonl has an evaluation of, so a restarted
evaluator goes on where it stopped.

It never takes the run's lock and writes only what an evaluation writes:
eval summaries (event files of its own in model_dir/eval), rows of
metrics.jsonl (the same keys and steps as --mode=train_and_eval's; appended
under the file's `flock`, which the trainer takes too), and with
--export_best the SavedModel of the best top-1 so far, in
model_dir/best_export, through the safe export (which replaces only an
export of ours); its resnet_v2_export.json names the step and the top-1.

A checkpoint that the trainer deletes (--keep_checkpoints) before it could
be read is skipped with a warning. The evaluator stops by itself once it has
evaluated the run's final step (train_steps in the run's config.json, read
anew at each checkpoint, so a run that is extended is followed), or when no
new checkpoint comes for --eval_timeout seconds. It does not join a
multi-worker cluster: under --strategy=multi_worker it evaluates on this
machine's devices, as --strategy=one_device.
"""

import dataclasses
import json
import os
import re

from absl import logging
import tensorflow as tf

from experiments.lib import cluster
from experiments.lib import data
from experiments.lib import errors
from experiments.lib import export
from experiments.lib import files
from experiments.lib import network
from experiments.lib import optimization
from experiments.lib import reporting
from experiments.lib import run_dir
from experiments.lib import saved_config
from experiments.lib import train

BEST_EXPORT = 'best_export'
_STEP = re.compile(r'ckpt-(\d+)$')
_SHARDS = re.compile(r'-of-(\d+)$')
# What a restore raises for a checkpoint whose files vanish under it.
_READ_ERRORS = (tf.errors.OpError, ValueError, AssertionError, IndexError,
                KeyError)


def run(config, net):
  """Evaluates each new checkpoint of config.model_dir until the run ends.

  Args:
    config: A `Config` with mode 'continuous_eval'.
    net: Its resolved network.

  Returns:
    {'step': the last step evaluated (-1: none), 'status': 'evaluated' (the
    final step was) or 'timed_out', 'evaluated': the steps evaluated, in
    order, 'skipped_checkpoints': those deleted before they could be read,
    'eval': the last result, 'best_export': {'step', 'top1'} or None}.

  Raises:
    errors.UserError: For the flags, the data, a --export_best directory
      that is not an export, or a checkpoint that is there but does not
      restore into this network.
  """
  best_dir = os.path.join(config.model_dir, BEST_EXPORT)
  if config.export_best:
    export.check_export_dir(best_dir, config.model_dir)
  if config.strategy == 'multi_worker':
    logging.info('Evaluating on this machine (--strategy=one_device): an '
                 'evaluator runs beside the cluster, not in it.')
    config = dataclasses.replace(config, strategy='one_device')
  placement = cluster.start(config)
  try:
    source = data.load_source(config.dataset, config.data_dir,
                              config.manual_dir, config.num_classes,
                              config.image_size, run_dir=config.model_dir)
    if config.examples_per_class:
      source = data.few_shot(source, config.examples_per_class,
                             config.seed or 0)
    config = train.resolve(config, net, source)
    data.check_source(source, 'eval')
    session, checkpoint = _session(config, net, placement, source)
    return _evaluate_as_they_come(session, checkpoint, best_dir)
  finally:
    placement.close()


def _session(config, net, placement, source):
  """The model and optimizer to restore each checkpoint into, and a reporter
  that writes eval summaries and rows only.

  Returns:
    (train.Session without a checkpoint manager, its tf.train.Checkpoint).
  """
  with placement.strategy.scope():
    model = network.build(net, config, placement.precision,
                          config.num_classes, config.image_size)
    optimizer = optimization.make_optimizer(
        config, placement.precision,
        optimization.make_schedule(config, source.num_train), model)
  reporter = reporting.Reporter(config.model_dir, placement.chief, None,
                                splits=('eval',))
  session = train.Session(config, placement, net, source, model, optimizer,
                          None, reporter)
  return session, run_dir.training_checkpoint(model, optimizer)


def _evaluate_as_they_come(session, checkpoint, best_dir):
  """The loop of `run`: see its docstring."""
  config = session.config
  done = last_evaluated(config.model_dir)
  best = _best_so_far(best_dir) if config.export_best else None
  summary = {'evaluated': [], 'skipped_checkpoints': [], 'eval': None,
             'best_export': best}
  logging.info('Evaluating each checkpoint of %s %s, until its final step%s.',
               config.model_dir, f'after step {done} (metrics.jsonl has the '
               'ones before)' if done >= 0 else 'as it comes',
               f' or {config.eval_timeout:g}s without a new one'
               if config.eval_timeout else '')
  for latest in tf.train.checkpoints_iterator(
      config.model_dir, timeout=config.eval_timeout or None):
    for path in waiting(config.model_dir, done, step_of(latest)):
      done = step_of(path)
      result = _evaluate(session, checkpoint, path)
      if result is None:
        summary['skipped_checkpoints'].append(path)
        continue
      summary['evaluated'].append(done)
      summary['eval'] = result
      top1 = float(result['top1'])
      if config.export_best and (best is None or top1 > best['top1']):
        best = {'step': done, 'top1': top1}
        train._export(session, best_dir, best)  # pylint: disable=protected-access
        summary['best_export'] = best
    final = final_step(config)
    if done >= final:
      logging.info('Evaluated the final step %d of %s; stopping.', final,
                   config.model_dir)
      return {'step': done, 'status': 'evaluated', **summary}
  logging.info('No new checkpoint in %s for %gs (--eval_timeout); stopping '
               'after step %d.', config.model_dir, config.eval_timeout, done)
  return {'step': done, 'status': 'timed_out', **summary}


def _evaluate(session, checkpoint, path):
  """Restores and evaluates one checkpoint; None if it was deleted first.

  Raises:
    errors.RunDirError: If the checkpoint is whole but does not restore.
  """
  try:
    run_dir.restore(checkpoint, path)
  except _READ_ERRORS as e:
    if not _gone(path):
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(
          e).__name__
      raise errors.RunDirError(
          f'The checkpoint {path} does not restore into the network this '
          f'evaluator built ({reason}). Start it with no flags that change '
          'the network, once the run has written its config.json (which it '
          'then takes them from), or with the flags the run was started '
          'with.') from None
    logging.warning('Skipped checkpoint %s: it was deleted before it could '
                    'be read (the trainer keeps the newest '
                    '--keep_checkpoints=%d).', path,
                    session.config.keep_checkpoints)
    return None
  result = train.evaluate(session)
  session.reporter.eval_result(session.step, result)
  return result


def step_of(path):
  """The step of a checkpoint prefix '.../ckpt-N', or None."""
  match = _STEP.search(path)
  return int(match.group(1)) if match else None


def waiting(model_dir, after, upto):
  """The checkpoints of model_dir with after < step <= upto, oldest first.

  Those TF's `checkpoint` file lists and every `ckpt-N.index` there
  (`run_dir.checkpoints`); `upto` is the newest the trainer has recorded,
  so none is still being written.
  """
  state = tf.train.get_checkpoint_state(model_dir)
  listed = list(state.all_model_checkpoint_paths) if state else []
  found = {}
  for path in listed + run_dir.checkpoints(model_dir):
    step = step_of(path)
    if step is not None and after < step <= upto:
      found[step] = os.path.join(model_dir, os.path.basename(path))
  return [found[step] for step in sorted(found)]


def _gone(prefix):
  """True if a file of checkpoint `prefix` is missing: deleted, since the
  trainer recorded it whole."""
  if not files.exists(prefix + '.index'):
    return True
  shards = files.glob(prefix + '.data-*')
  match = _SHARDS.search(shards[0]) if shards else None
  return not match or len(shards) < int(match.group(1))


def last_evaluated(model_dir):
  """The last step metrics.jsonl has an evaluation of, -1 if none."""
  path = os.path.join(model_dir, 'metrics.jsonl')
  if not files.exists(path):
    return -1
  steps = [-1]
  for line in files.read_text(path).splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue  # A row cut short by a hard kill.
    if row.get('split') == 'eval':
      steps.append(int(row['step']))
  return max(steps)


def final_step(config):
  """The run's last step: train_steps of its config.json, read now (a rerun
  may extend it), else this command's."""
  saved = saved_config.load(config.model_dir) or {}
  return saved.get('train_steps') or config.train_steps


def _best_so_far(best_dir):
  """{'step', 'top1'} of the export in best_dir, or None if there is none."""
  marker = os.path.join(best_dir, export.MARKER)
  if not files.exists(marker):
    return None
  try:
    facts = json.loads(files.read_text(marker))
    return {'step': int(facts['step']), 'top1': float(facts['top1'])}
  except (files.ReadError, ValueError, KeyError, TypeError):
    return None  # An export of ours made otherwise: replaced by the next.
