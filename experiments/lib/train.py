"""The run and its training loop, under any tf.distribute strategy.

`run(config)` reads top to bottom: the network; where this process runs
(devices, strategy: the `Placement`); the data; the configuration resolved
with them; model, optimizer and checkpoint (resuming if `model_dir` has one);
then evaluation, linear evaluation, export, or `loop`, in compiled calls of
several steps with progress lines, summaries, periodic checkpoints and
evaluations; then the SavedModel. The same code runs on one device,
mirrored GPUs, several workers and TPUs.

Faults: SIGTERM (preemption) and Ctrl-C make every worker save at the same
step and stop cleanly; rerunning the same command resumes, from the newest
checkpoint that restores whole (see run_dir). A non-finite loss, or a
file of the run that cannot be written (a checkpoint, metrics, summaries),
stops the run naming the step or the file, without saving over the last
good checkpoint. Checkpoints are written by TF's
CheckpointManager, which only records a checkpoint once all its files are
complete, so a hard kill loses at most the steps since the last one.
"""

import dataclasses
import functools
import os
import signal
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from experiments.lib import augmentation
from experiments.lib import cluster
from experiments.lib import data
from experiments.lib import errors
from experiments.lib import export
from experiments.lib import input_pipeline
from experiments.lib import linear_eval
from experiments.lib import network
from experiments.lib import optimization
from experiments.lib import preprocessing
from experiments.lib import reporting
from experiments.lib import run_dir
from experiments.lib import saved_config
from experiments.lib import steps
from experiments.lib import stop_requests
from experiments.lib import tflite
from experiments.lib.config import Config

@dataclasses.dataclass(frozen=True)
class Session:
  """Everything the loop and the evaluation work on, made once by `run`.

  Attributes:
    config: The resolved `Config`: num_classes, image_size, train_steps and
      the preprocessing filled in from the data and the network
      (--precision and --jit_compile stay as asked; see `placement`).
    placement: Where this process runs (`cluster.Placement`).
    net: The resolved network (`network.Network`).
    source: The `data.Source`.
    model: The model, built in the strategy's scope.
    optimizer: Its optimizer (whose `iterations` is the step).
    checkpoints: The `tf.train.CheckpointManager` of this worker (None in
      an evaluator beside the run, which saves nothing).
    reporter: The `reporting.Reporter`.
  """
  config: Config
  placement: cluster.Placement
  net: network.Network
  source: data.Source
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  checkpoints: tf.train.CheckpointManager
  reporter: reporting.Reporter

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())


def resolve(config, net, source):
  """Returns `config` with what the data and the network decide filled in.

  Args:
    config: A `Config`; it is not changed.
    net: Its resolved network.
    source: The `data.Source`.

  Returns:
    A new `Config` with num_classes, image_size and train_steps from the
    data, random_flip too where its flag is auto, the stem and normalization
    the network is built with, and labels_offset and the evaluation
    preprocessing from the network where their flags are not given (a
    pretrained name's own).

  Raises:
    errors.FlagError: If --num_classes differs from the data's.
  """
  spec = net.spec
  own = spec.preprocessing if spec else None
  offset = config.labels_offset
  if offset is None:  # A pretrained name's classes on ImageNet-labelled data.
    offset = spec.labels_offset - source.first_label if (
        spec and source.imagenet) else 0
  if offset < -source.first_label:
    raise errors.FlagError(
        f'--labels_offset={offset} would drop classes that {source.name} '
        f'uses: its labels start at {source.first_label}, so the offset can '
        f'be {-source.first_label} at the lowest.')
  num_classes = source.num_classes + offset
  if config.num_classes not in (None, num_classes):
    shift = f' ({offset:+d} from --labels_offset)' if offset else ''
    raise errors.FlagError(
        f'--num_classes={config.num_classes}, but {source.name} has '
        f'{source.num_classes} classes{shift}. For a tf-slim checkpoint with '
        "1001 classes ('background' first) on 1000-class ImageNet, add "
        "--labels_offset=1; for 1000 classes on tf-slim's ImageNet shards "
        "(labels 1..1000), --labels_offset=-1.")
  return dataclasses.replace(
      config, num_classes=num_classes, labels_offset=offset, stem=net.stem,
      normalization=net.normalization,
      image_size=config.image_size or (own.image_size if own
                                       else source.image_size),
      eval_preprocessing=config.eval_preprocessing or (
          own.eval if own else 'default'),
      eval_crop_fraction=config.eval_crop_fraction or (
          own.crop_fraction if own else None),
      resize_method=config.resize_method or (
          own.resize_method if own else 'bilinear'),
      random_flip=(source.flip if config.random_flip is None
                   else config.random_flip),
      train_steps=optimization.total_steps(config, source.num_train),
      train_epochs=None)


def run(config):
  """Runs an experiment: train, evaluate and/or export, as config.mode says.

  Everything that can be checked is checked before the first step: the
  flags (by `Config`), the network, the cluster, that no other run holds
  model_dir, that an export would replace only an earlier export, the
  checkpoints, and the data.

  Args:
    config: A `Config`; it is not changed.

  Returns:
    A dict summarizing the run: 'step', 'status' ('finished', 'preempted',
    'evaluated', 'exported' or 'linear_eval'), 'eval' results, 'export_dir'
    when the chief made one, 'resumed_from' and 'skipped_checkpoints'
    (for --mode=continuous_eval, `continuous_eval.run`'s summary).

  Raises:
    errors.UserError: For what the user can fix: the flags, the data, a
      model_dir in use or whose checkpoints do not restore, a file that
      cannot be written (the message says which checkpoint is kept), a
      non-finite loss.
  """
  net = network.resolve(config)
  if config.deterministic and config.seed is None:
    config = dataclasses.replace(config, seed=0)
  if config.mode == 'continuous_eval':  # Beside a training run: no lock.
    from experiments.lib import continuous_eval  # pylint: disable=g-import-not-at-top
    return continuous_eval.run(config, net)
  placement = cluster.start(config)
  lock = run_dir.RunLock(config.model_dir)
  try:
    if placement.chief:
      lock.acquire()
    return _run(config, net, placement)
  except errors.WriteError as e:
    raise run_dir.stopped_writing(e, config.model_dir) from None
  finally:
    lock.release()
    placement.close()


def _run(config, net, placement):
  """`run`, once this process holds its directory to write in."""
  export_dir = config.export_dir or os.path.join(config.model_dir, 'export')
  exports = config.mode in ('train', 'train_and_eval', 'export')
  if placement.chief and exports:
    export.check_export_dir(export_dir, config.model_dir)
  if config.mode in ('eval', 'export', 'linear_eval') and not (
      run_dir.checkpoints(config.model_dir) or config.init_checkpoint
      or config.pretrained):
    raise errors.RunDirError(
        f'--mode={config.mode} needs a checkpoint in {config.model_dir} '
        '(there is none), --init_checkpoint or --pretrained.')
  source = data.load_source(config.dataset, config.data_dir,
                            config.manual_dir, config.num_classes,
                            config.image_size,
                            need_data=config.mode != 'export',
                            run_dir=config.model_dir,
                            remember=placement.chief)
  if config.examples_per_class:
    source = data.few_shot(source, config.examples_per_class,
                           config.seed or 0)
  config = resolve(config, net, source)
  data.check_source(source, config.mode)
  session, restored = _start_session(config, net, placement, source)
  # Saved once the run starts: the config.json of a run that failed before
  # would refuse the corrected command.
  if placement.chief and config.mode in ('train', 'train_and_eval'):
    saved_config.save(config, config.model_dir)
  if config.mode == 'eval':
    result = evaluate(session)
    session.reporter.eval_result(session.step, result)
    summary = {'status': 'evaluated', 'eval': result}
  elif config.mode == 'linear_eval':
    summary = {'status': 'linear_eval',
               'linear_eval': linear_eval.run(session)}
  elif config.mode == 'export':
    summary = {'status': 'exported'}
  else:
    summary = loop(session)
  if exports and summary['status'] in ('exported', 'finished'):
    summary.update(_export(session, export_dir))
  return {'step': session.step, **summary, **restored}


def _export(session, export_dir, facts=None):
  """Exports the SavedModel (a non-chief worker into its scratch directory:
  every worker takes part in saving); `facts` go into its marker file."""
  config, placement, source = session.config, session.placement, session.source
  target = (export_dir if placement.chief
            else os.path.join(placement.write_dir, 'export'))
  labels, names = data.labels_with_offset(source, config.labels_offset)
  also = None
  if config.export_tflite != 'none' and placement.chief:
    calibration = (tflite.calibration_images(source,
                                             eval_preprocess(config, source))
                   if config.export_tflite == 'int8' else None)
    also = functools.partial(tflite.write, kind=config.export_tflite,
                             calibration=calibration)
  with optimization.averaged_weights(session.model, session.optimizer):
    export.export_saved_model(
        network.for_export(session.model, session.net, config,
                           placement.precision, config.image_size),
        target, config.image_size, eval_preprocess(config, source, True),
        model_dir=config.model_dir, labels=labels, label_names=names,
        description={'eval_preprocessing': config.eval_preprocessing,
                     'eval_crop_fraction': config.eval_crop_fraction,
                     'resize_method': config.resize_method, **(facts or {})},
        also=also)
  logging.info('Exported the SavedModel to %s.', target)
  return {'export_dir': export_dir} if placement.chief else {}


def eval_preprocess(config, source, encoded=None):
  """The run's evaluation (and serving) preprocessing, fn(image) -> image."""
  return preprocessing.eval_fn(
      source.augment, config.image_size,
      source.encoded if encoded is None else encoded,
      config.eval_preprocessing, config.eval_crop_fraction,
      config.resize_method)


def _start_session(config, net, placement, source):
  """Builds model and optimizer and restores them (or initialises the model).

  Returns:
    (session, {'resumed_from': path or None, 'skipped_checkpoints': [...]}).
  """
  with placement.strategy.scope():
    model = network.build(net, config, placement.precision,
                          config.num_classes, config.image_size)
    optimizer = optimization.make_optimizer(
        config, placement.precision,
        optimization.make_schedule(config, source.num_train), model)
  checkpoint = run_dir.training_checkpoint(model, optimizer)
  manager = tf.train.CheckpointManager(checkpoint, placement.write_dir,
                                       max_to_keep=config.keep_checkpoints)
  latest, skipped = run_dir.restore_newest_intact(checkpoint, config.model_dir)
  if latest:
    logging.info('Resumed from %s at step %d.', latest,
                 int(optimizer.iterations.numpy()))
  elif config.pretrained:
    network.load_pretrained(model, net)
  elif config.init_checkpoint:
    kind = network.load_init_checkpoint(
        model, net, config, saved_config.config_of(config.init_checkpoint))
    logging.info('Initialized from the %s checkpoint %s.', kind,
                 config.init_checkpoint)
  if config.zero_head and not latest:
    network.zero_logits(model)
  reporter = reporting.Reporter(config.model_dir, placement.chief,
                                int(optimizer.iterations.numpy()))
  if placement.chief:
    logging.info('Run directory %s (config.json, checkpoints, metrics.jsonl); '
                 'to follow it: tensorboard --logdir %s', config.model_dir,
                 config.model_dir)
  session = Session(config, placement, net, source, model, optimizer, manager,
                    reporter)
  return session, {'resumed_from': latest, 'skipped_checkpoints': skipped}


def input_options(config):
  if not config.input_per_replica:
    return None
  return tf.distribute.InputOptions(
      experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
      experimental_place_dataset_on_device=False)


def evaluate(session):
  """Evaluates on the whole eval split; returns {'loss', 'top1', 'top5', ...}."""
  config, strategy = session.config, session.placement.strategy
  dataset = strategy.distribute_datasets_from_function(
      input_pipeline.eval_dataset_fn(
          session.source, config.image_size, config.batch_size,
          config.labels_offset, eval_preprocess(config, session.source)),
      input_options(config))
  eval_step = steps.make_eval_step(strategy, session.model)
  totals = np.zeros(4)
  last_report = time.time()
  with optimization.averaged_weights(session.model, session.optimizer):
    for done, batch in enumerate(dataset, 1):
      totals += eval_step(batch).numpy()
      if time.time() - last_report > 30:
        logging.info('eval: %d batches', done)
        last_report = time.time()
  loss, top1, top5, count = totals
  count = max(count, 1)
  return {'loss': loss / count, 'top1': top1 / count, 'top5': top5 / count,
          'images': int(totals[3]),
          'skipped': session.source.num_eval - int(totals[3])}


def _train_iterator(session, step):
  """The distributed training input from `step` on (see input_pipeline)."""
  config, source = session.config, session.source
  return iter(session.placement.strategy.distribute_datasets_from_function(
      input_pipeline.train_dataset_fn(
          source, config.image_size, config.batch_size, config.seed or 0,
          start_step=step, end_step=config.train_steps,
          shuffle_buffer=config.shuffle_buffer,
          labels_offset=config.labels_offset,
          augment=augmentation.example_augmenter(config.randaugment_ops,
                                                 config.randaugment_factor),
          mix=augmentation.batch_mixer(config.mixup_alpha, config.cutmix_alpha,
                                       config.num_classes),
          preprocess=preprocessing.train_fn(
              source.augment, config.image_size, source.encoded, source.pad,
              config.random_flip, config.train_preprocessing,
              config.train_resize)),
      input_options(config)))


def _count(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


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
  config, placement = session.config, session.placement
  manager = session.checkpoints
  step, total = session.step, config.train_steps
  iterator = _train_iterator(session, step)
  multi_step = steps.make_multi_step(config, placement, session.model,
                                     session.optimizer, config.num_classes)
  result, start_time, last_saved = None, time.time(), step
  progress = reporting.Progress(config.batch_size, total)
  stops = stop_requests.StopRequests()  # Answers from the 'Training' line on.
  try:
    logging.info('Training %s (%s parameters, %s trained) on %s with %s (%d '
                 'replicas), global batch %d%s, %s, XLA %s, steps %d..%d.',
                 session.model.name, f'{session.model.count_params():,}',
                 f'{_count(session.model.trainable_weights):,}',
                 session.source.name, type(placement.strategy).__name__,
                 placement.replicas, config.batch_size,
                 f' in {config.batch_split} micro-batches'
                 if config.batch_split > 1 else '', placement.precision,
                 'on' if placement.jit_compile else 'off', step, total)
    while step < total:
      boundary = _next_boundary(config, step)
      losses, correct, skipped = multi_step(iterator, tf.constant(boundary - step))
      losses = losses.numpy()
      bad = np.flatnonzero(~np.isfinite(losses))
      if bad.size:
        raise errors.NonFiniteLossError(
            f'The loss became {losses[bad[0]]} at step {step + bad[0] + 1}; '
            f'training stopped. Nothing was saved after step {last_saved}: '
            f'the last good checkpoint is {manager.latest_checkpoint}. Lower '
            '--base_lr, check the input data, or use --precision=float32.')
      step = boundary
      progress.add(step, losses, correct, skipped)
      if step % config.log_every == 0 or step == total:
        progress.report(session.reporter, step,
                        float(session.optimizer.learning_rate.numpy()))
      if bool(placement.agree(tf.constant(stops.received is not None))):
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
