"""The run and its training loop, under any tf.distribute strategy.

`run(config)` reads top to bottom: where this process runs (devices,
strategy); the data; the resolved configuration; model, optimizer and
checkpoint (resuming if `model_dir` has one); then evaluation, export, or
`loop`, in compiled calls of several steps with progress lines,
summaries, periodic checkpoints and evaluations; then the SavedModel. The
same code runs on one device, mirrored GPUs, several workers and TPUs.

Faults: SIGTERM (preemption) and Ctrl-C make every worker save at the same
step and stop cleanly; rerunning the same command resumes, from the newest
checkpoint that restores whole (see run_dir). A non-finite loss, or a
checkpoint that cannot be written, stops the run naming the step, without
saving over the last good checkpoint. Checkpoints are written by TF's
CheckpointManager, which only records a checkpoint once all its files are
complete, so a hard kill loses at most the steps since the last one.
"""

import dataclasses
import os
import signal
import time
from typing import Any, Callable

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from experiments.lib import augmentation
from experiments.lib import cluster
from experiments.lib import config as config_lib
from experiments.lib import datasets
from experiments.lib import export
from experiments.lib import input_pipeline
from experiments.lib import network
from experiments.lib import optimization
from experiments.lib import reporting
from experiments.lib import run_dir
from experiments.lib import steps
from experiments.lib.config import Config
from experiments.lib.config import ConfigError


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; the message names the step."""


@dataclasses.dataclass(frozen=True)
class Session:
  """Everything the loop and the evaluation work on, made once by `run`.

  Attributes:
    config: The resolved `Config`: no 'auto' left, and num_classes,
      image_size and train_steps filled in from the data.
    strategy: The tf.distribute strategy.
    agree: cluster.make_agree's collective vote of all workers.
    source: The `datasets.Source`.
    model: The model, built in the strategy's scope.
    optimizer: Its optimizer (whose `iterations` is the step).
    checkpoints: The `tf.train.CheckpointManager` of this worker.
    reporter: The `reporting.Reporter`.
  """
  config: Config
  strategy: tf.distribute.Strategy
  agree: Callable[[Any], Any]
  source: datasets.Source
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  checkpoints: tf.train.CheckpointManager
  reporter: reporting.Reporter

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())


def resolve(config, source=None):
  """Returns `config` with every value the run decides filled in.

  Args:
    config: A `Config`; it is not changed.
    source: The `datasets.Source`, to fill in what depends on the data; None
      to resolve only what depends on the machine.

  Returns:
    A new `Config`: --precision and --jit_compile for this machine, the seed
    of a --deterministic run, and with a source, num_classes, image_size and
    train_steps.

  Raises:
    ConfigError: If --num_classes differs from the data's.
  """
  precision, jit_compile = cluster.resolve_auto_settings(config)
  seed = 0 if config.deterministic and config.seed is None else config.seed
  config = dataclasses.replace(config, precision=precision,
                               jit_compile=jit_compile, seed=seed)
  if source is None:
    return config
  num_classes = source.num_classes + config.labels_offset
  if config.num_classes not in (None, num_classes):
    offset = (f' (+{config.labels_offset} from --labels_offset)'
              if config.labels_offset else '')
    raise ConfigError(
        f'--num_classes={config.num_classes}, but {source.name} has '
        f'{source.num_classes} classes{offset}. For a tf-slim checkpoint with '
        "1001 classes ('background' first) on 1000-class ImageNet, add "
        '--labels_offset=1.')
  return dataclasses.replace(
      config, num_classes=num_classes,
      image_size=config.image_size or source.image_size,
      train_steps=optimization.total_steps(config, source.num_train),
      train_epochs=None)


def run(config):
  """Runs an experiment: train, evaluate and/or export, as config.mode says.

  Everything that can be checked is checked before the first step: the
  flags (by `Config`), the cluster, that no other run holds model_dir, that
  an export would replace only an earlier export, the checkpoints, and the
  data.

  Args:
    config: A `Config`; it is not changed.

  Returns:
    A dict summarizing the run: 'step', 'status' ('finished', 'preempted',
    'evaluated' or 'exported'), 'eval' results, 'export_dir' when the chief
    made one, 'resumed_from' and 'skipped_checkpoints'.

  Raises:
    ConfigError: For an unusable configuration, a model_dir in use, or
      checkpoints none of which restores.
    datasets.DataError: For missing or unusable data.
    NonFiniteLossError: If the loss becomes NaN or infinite.
    run_dir.CheckpointWriteError: If a checkpoint cannot be written.
  """
  requested, config = config, resolve(config)
  cluster.configure_devices(config)
  strategy, agree = cluster.start_strategy(config)
  chief = cluster.is_chief(strategy)
  lock = run_dir.RunLock(config.model_dir)
  if chief:
    lock.acquire()
  write_dir = config.model_dir if chief else cluster.scratch_dir(strategy)
  try:
    return _run_in(write_dir, requested, config, strategy, agree, chief)
  finally:
    lock.release()
    if not chief:
      cluster.remove_scratch_dir(write_dir)


def _run_in(write_dir, requested, config, strategy, agree, chief):
  """`run`, once this process holds its directory to write in.

  `requested` is the config as given, `config` the one resolved for this
  machine.
  """
  export_dir = config.export_dir or os.path.join(config.model_dir, 'export')
  if chief and config.mode != 'eval':
    export.check_export_dir(export_dir, config.model_dir)
  if config.mode in ('eval', 'export') and not (
      run_dir.checkpoints(config.model_dir) or config.init_checkpoint):
    raise ConfigError(f'--mode={config.mode} needs a checkpoint in '
                      f'{config.model_dir} (there is none) or --init_checkpoint.')
  source = datasets.load_source(config.dataset, config.data_dir,
                                config.manual_dir, config.num_classes,
                                config.image_size,
                                need_data=config.mode != 'export')
  config = resolve(config, source)
  datasets.check_source(source, config.mode)
  if chief and config.mode in ('train', 'train_and_eval'):
    # What a later command on this directory starts from: the data's values
    # filled in, the machine's ('auto') left to each machine.
    config_lib.save(dataclasses.replace(
        config, precision=requested.precision,
        jit_compile=requested.jit_compile), config.model_dir)
  session, restored = _start_session(config, strategy, agree, source,
                                     write_dir, chief)
  if config.mode == 'eval':
    result = evaluate(session)
    session.reporter.eval_result(session.step, result)
    summary = {'status': 'evaluated', 'eval': result}
  elif config.mode == 'export':
    summary = {'status': 'exported'}
  else:
    summary = loop(session)
  if summary['status'] in ('exported', 'finished'):
    # A non-chief worker takes part in saving, into its scratch directory.
    target = export_dir if chief else os.path.join(write_dir, 'export')
    labels, names = datasets.labels_with_offset(source, config.labels_offset)
    with optimization.averaged_weights(session.model, session.optimizer):
      export.export_saved_model(
          network.for_export(session.model, config, config.image_size),
          target, config.image_size, source.augment,
          model_dir=config.model_dir, labels=labels, label_names=names,
          eval_preprocessing=config.eval_preprocessing)
    logging.info('Exported the SavedModel to %s.', target)
    if chief:
      summary['export_dir'] = export_dir
  return {'step': session.step, **summary, **restored}


def _start_session(config, strategy, agree, source, write_dir, chief):
  """Builds model and optimizer and restores them (or initialises the model).

  Returns:
    (session, {'resumed_from': path or None, 'skipped_checkpoints': [...]}).
  """
  with strategy.scope():
    model = network.build(config, config.num_classes, config.image_size)
    optimizer = optimization.make_optimizer(
        config, optimization.make_schedule(config, source.num_train), model)
  checkpoint = run_dir.training_checkpoint(model, optimizer)
  manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                       max_to_keep=config.keep_checkpoints)
  latest, skipped = run_dir.restore_newest_intact(checkpoint, config.model_dir)
  if latest:
    logging.info('Resumed from %s at step %d.', latest,
                 int(optimizer.iterations.numpy()))
  elif config.init_checkpoint:
    kind = network.load_init_checkpoint(model, config)
    logging.info('Initialized from the %s checkpoint %s.', kind,
                 config.init_checkpoint)
  reporter = reporting.Reporter(config.model_dir, chief,
                                int(optimizer.iterations.numpy()))
  if chief:
    logging.info('Run directory %s (config.json, checkpoints, metrics.jsonl); '
                 'to follow it: tensorboard --logdir %s', config.model_dir,
                 config.model_dir)
  session = Session(config, strategy, agree, source, model, optimizer,
                    manager, reporter)
  return session, {'resumed_from': latest, 'skipped_checkpoints': skipped}


def _input_options(config):
  if not config.input_per_replica:
    return None
  return tf.distribute.InputOptions(
      experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
      experimental_place_dataset_on_device=False)


def evaluate(session):
  """Evaluates on the whole eval split; returns {'loss', 'top1', 'top5', ...}."""
  config = session.config
  dataset = session.strategy.distribute_datasets_from_function(
      input_pipeline.eval_dataset_fn(
          session.source, config.image_size, config.batch_size,
          config.labels_offset, config.eval_preprocessing),
      _input_options(config))
  eval_step = steps.make_eval_step(session.strategy, session.model)
  totals = np.zeros(4)
  batches = input_pipeline.eval_steps(session.source, config.batch_size)
  last_report = time.time()
  with optimization.averaged_weights(session.model, session.optimizer):
    for done, batch in enumerate(dataset, 1):
      totals += eval_step(batch).numpy()
      if time.time() - last_report > 30 and done < batches:
        logging.info('eval: %d of %d batches', done, batches)
        last_report = time.time()
  loss, top1, top5, count = totals
  count = max(count, 1)
  return {'loss': loss / count, 'top1': top1 / count, 'top5': top5 / count,
          'images': int(totals[3]),
          'skipped': session.source.num_eval - int(totals[3])}


class _StopRequests:
  """Turns SIGTERM (preemption) and Ctrl-C into a stop at a step boundary.

  The first signal is remembered, and the loop saves a checkpoint and stops
  after the compiled call under way (Python handles signals only between
  calls). A second Ctrl-C ends the process at once, without saving.
  """

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      logging.warning('Second Ctrl-C: stopping at once, without saving.')
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.received = self.received or signum
    logging.warning('%s received: saving a checkpoint at the end of the '
                    'current loop, then stopping.%s', signal.Signals(signum).name,
                    ' Press Ctrl-C again to stop at once, without saving.'
                    if signum == signal.SIGINT else '')

  def restore(self):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


def _train_iterator(session, step):
  """The distributed training input from `step` on (see input_pipeline)."""
  config = session.config
  return iter(session.strategy.distribute_datasets_from_function(
      input_pipeline.train_dataset_fn(
          session.source, config.image_size, config.batch_size, config.seed or 0,
          start_step=step, end_step=config.train_steps,
          shuffle_buffer=config.shuffle_buffer,
          labels_offset=config.labels_offset,
          augment=augmentation.example_augmenter(config.randaugment_ops,
                                                 config.randaugment_factor),
          mix=augmentation.batch_mixer(config.mixup_alpha, config.cutmix_alpha,
                                       config.num_classes)),
      _input_options(config)))


def _next_boundary(config, step):
  """The next step at which something must happen (log, save, eval, end)."""
  return min([config.train_steps] + [
      step // every * every + every for every in
      (config.steps_per_loop, config.log_every, config.checkpoint_every,
       config.eval_every or config.train_steps)])


def loop(session):
  """The training loop, from the restored step to config.train_steps.

  Args:
    session: The `Session` that `run` made.

  Returns:
    {'step', 'status' ('finished' or 'preempted'), 'eval', 'skipped_images'}.

  Raises:
    NonFiniteLossError: If the loss becomes NaN or infinite.
    run_dir.CheckpointWriteError: If a checkpoint cannot be written.
  """
  config, strategy, manager = session.config, session.strategy, session.checkpoints
  step, total = session.step, config.train_steps
  iterator = _train_iterator(session, step)
  multi_step = steps.make_multi_step(config, strategy, session.model,
                                     session.optimizer, config.num_classes)
  logging.info('Training %s (%s parameters) on %s with %s (%d replicas), '
               'global batch %d, %s, XLA %s, steps %d..%d.', session.model.name,
               f'{session.model.count_params():,}', session.source.name,
               type(strategy).__name__, strategy.num_replicas_in_sync,
               config.batch_size, config.precision,
               'on' if config.jit_compile else 'off', step, total)
  result, start_time, last_saved = None, time.time(), step
  progress = reporting.Progress(config.batch_size, total)
  stops = _StopRequests()
  try:
    while step < total:
      boundary = _next_boundary(config, step)
      losses, correct, skipped = multi_step(iterator, tf.constant(boundary - step))
      losses = losses.numpy()
      bad = np.flatnonzero(~np.isfinite(losses))
      if bad.size:
        raise NonFiniteLossError(
            f'The loss became {losses[bad[0]]} at step {step + bad[0] + 1}; '
            f'training stopped. Nothing was saved after step {last_saved}: '
            f'the last good checkpoint is {manager.latest_checkpoint}. Lower '
            '--base_lr, check the input data, or use --precision=float32.')
      step = boundary
      progress.add(step, losses, correct, skipped)
      if step % config.log_every == 0 or step == total:
        progress.report(session.reporter, step,
                        float(session.optimizer.learning_rate.numpy()))
      if bool(session.agree(tf.constant(stops.received is not None))):
        run_dir.save_checkpoint(manager, step)
        logging.warning('%s at step %d: checkpoint saved in %s. Rerun the same '
                        'command to resume.', 'Stopped' if stops.received ==
                        signal.SIGINT else 'Preempted', step, config.model_dir)
        return {'step': step, 'status': 'preempted', 'eval': result,
                'skipped_images': progress.skipped}
      if step % config.checkpoint_every == 0 or step == total:
        run_dir.save_checkpoint(manager, step)
        last_saved = step
      if config.mode == 'train_and_eval' and (
          (config.eval_every and step % config.eval_every == 0) or step == total):
        result = evaluate(session)
        session.reporter.eval_result(step, result)
  finally:
    stops.restore()
  logging.info('Finished %d steps in %s.%s', step,
               reporting.duration(time.time() - start_time),
               f' Eval top-1 {100 * result["top1"]:.2f}%.' if result else '')
  return {'step': step, 'status': 'finished', 'eval': result,
          'skipped_images': progress.skipped}
