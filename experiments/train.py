"""Training, evaluation and export of a ResNet v2 under any tf.distribute strategy.

`run(config)` reads top to bottom: devices and strategy; data; model,
optimizer and checkpoint (resuming if `model_dir` has one); then the loop,
in compiled calls of several steps (`strategy.run` inside a `tf.function`),
with progress lines, summaries, periodic checkpoints and evaluations; then
the SavedModel. The same code runs on one device, mirrored GPUs, several
workers and TPUs.

Faults: SIGTERM (preemption) makes every worker save at the same step and
stop cleanly; rerunning the same command resumes. A non-finite loss stops the
run naming the step, without saving over the last good checkpoint.
Checkpoints are written by TF's CheckpointManager, which only records a
checkpoint once all its files are complete, so a hard kill loses at most the
steps since the last one.
"""

import json
import math
import os
import shutil
import signal
import tempfile
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import resnet_v2
from experiments import cluster
from experiments import datasets
from experiments import export
from experiments import input_pipeline
from experiments import networks
from experiments import schedules
from experiments.config import ConfigError


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; the message names the step."""


# --- Devices and strategy -------------------------------------------------


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


def _cpu_has_bfloat16():
  """True if the CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
  return not cpu_flags().isdisjoint({'avx512_bf16', 'amx_bf16'})


def fastest_settings(config):
  """Resolves --precision=auto and --jit_compile=auto for this machine.

  bfloat16 where the hardware computes it natively (TPUs, Ampere or newer
  GPUs, CPUs with AVX512-BF16/AMX), float16 with loss scaling on older GPUs;
  XLA on GPUs, not on CPUs, where it made ResNet-50 slower (see the
  benchmark in the README). TPUs always compile.

  Returns:
    (precision, jit_compile).
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
      precision = 'mixed_bfloat16' if _cpu_has_bfloat16() else 'float32'
  if jit is None:
    jit = bool(gpus) and config.strategy != 'tpu'
  return precision, jit


def make_strategy(config):
  """Returns the tf.distribute strategy named by --strategy."""
  if config.strategy == 'one_device':
    gpus = tf.config.list_logical_devices('GPU')
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else '/cpu:0')
  if config.strategy == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
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
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
  """True for the one worker that writes checkpoints, summaries and exports."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  if resolver.task_type == 'chief':
    return True
  return (resolver.task_type == 'worker' and resolver.task_id == 0
          and 'chief' not in resolver.cluster_spec().as_dict())


def _write_dir(model_dir, strategy):
  """model_dir for the chief; a private scratch directory for other workers.

  MultiWorkerMirroredStrategy needs every worker to take part in saving, but
  only the chief's files may land in model_dir; the others save to a local
  temporary directory that `run` deletes at the end.
  """
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return tempfile.mkdtemp(
      prefix=f'resnet_v2-{resolver.task_type}_{resolver.task_id}-')


# --- Model and optimizer --------------------------------------------------


def _blocks_and_scope(config):
  if config.blocks is not None:
    return resnet_v2.parse_blocks(config.blocks), 'resnet_v2'
  if config.stem == 'cifar':
    return networks.cifar_blocks(config.depth), f'resnet_v2_{config.depth}'
  return resnet_v2.blocks_for_depth(config.depth), f'resnet_v2_{config.depth}'


def _precision_policy(config):
  return None if config.precision == 'float32' else config.precision


def train_steps(config, source):
  """The run's length in steps, from --train_steps or --train_epochs."""
  if config.train_steps is not None:
    return config.train_steps
  epochs = 90 if config.train_epochs is None else config.train_epochs
  return max(1, math.ceil(epochs * source.num_train / config.batch_size))


def make_schedule(config, source, total_steps):
  """The learning-rate schedule, with rates scaled by the global batch."""
  steps_per_epoch = source.num_train / config.batch_size
  warmup = (config.warmup_steps if config.warmup_steps is not None
            else round(config.warmup_epochs * steps_per_epoch))
  boundaries = (config.lr_boundary_steps if config.lr_boundary_steps is not None
                else [round(e * steps_per_epoch) for e in config.lr_boundary_epochs])
  return schedules.WarmupDecay(
      config.base_lr * config.batch_size / config.lr_reference_batch,
      total_steps, warmup_steps=min(warmup, total_steps), decay=config.lr_decay,
      boundaries=boundaries, warmup_lr=config.warmup_lr)


def make_optimizer(config, schedule, model):
  """SGD with momentum (loss-scaled for float16), built for `model`."""
  optimizer = keras.optimizers.SGD(learning_rate=schedule,
                                   momentum=config.momentum)
  if config.precision == 'mixed_float16':
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  optimizer.build(model.trainable_variables)  # Slots exist before a restore.
  return optimizer


def load_init_checkpoint(model, config):
  """Initializes the model from a tf-slim checkpoint or one of ours.

  Returns:
    'ours' or 'tf-slim'.

  Raises:
    ConfigError: If --init_checkpoint is not a readable checkpoint (or a
      directory holding one).
  """
  path = config.init_checkpoint
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
  try:
    names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  except (tf.errors.OpError, ValueError, TypeError) as e:
    raise ConfigError(f'--init_checkpoint={config.init_checkpoint!r} is not a '
                      'readable checkpoint: give a checkpoint prefix (the path '
                      "before '.index') or a directory holding one.") from e
  if '_CHECKPOINTABLE_OBJECT_GRAPH' in names:
    # The optimizer's state in the checkpoint is deliberately not used.
    tf.train.Checkpoint(model=model).read(
        path).assert_existing_objects_matched().expect_partial()
    return 'ours'
  resnet_v2.load_slim_checkpoint(model, path, skip_logits=config.init_skip_logits)
  return 'tf-slim'


# --- The compiled functions -------------------------------------------------


def make_train_loop(config, strategy, model, optimizer, num_classes):
  """Returns train_loop(iterator, num_steps) -> per-step losses and sums."""
  global_batch = config.batch_size
  replicas = strategy.num_replicas_in_sync

  def forward_backward(images, labels, weights):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      targets = tf.one_hot(labels, num_classes)
      if config.label_smoothing:
        targets = (targets * (1 - config.label_smoothing)
                   + config.label_smoothing / num_classes)
      cross_entropy = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
      # Gradients are summed over replicas: scale by the GLOBAL batch. Stand-ins
      # for corrupt images have weight 0.
      loss = tf.reduce_sum(cross_entropy * weights) / global_batch
      if model.losses:
        loss += tf.add_n(model.losses) / replicas
      if config.fail_at_step is not None:
        loss *= tf.where(optimizer.iterations + 1 == config.fail_at_step,
                         math.nan, 1.0)
      scaled = (optimizer.scale_loss(loss)
                if config.precision == 'mixed_float16' else loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    correct = tf.reduce_sum(weights * tf.cast(
        tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
        tf.float32))
    return loss, grads, correct

  if config.jit_compile:
    forward_backward = tf.function(forward_backward, jit_compile=True)

  def replica_step(batch):
    images, labels, weights, skipped = batch
    loss, grads, correct = forward_backward(images, labels, weights)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss, correct, tf.reduce_sum(skipped)

  @tf.function
  def train_loop(iterator, num_steps):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    correct = skipped = tf.constant(0.0)
    for i in tf.range(num_steps):
      loss, step_correct, step_skipped = strategy.run(
          replica_step, args=(next(iterator),))
      reduce = lambda x: strategy.reduce('SUM', x, axis=None)
      losses = losses.write(i, reduce(loss))
      correct += reduce(step_correct)
      skipped += tf.cast(reduce(step_skipped), tf.float32)
    return losses.stack(), correct, skipped

  return train_loop


def make_eval_step(strategy, model):
  """Returns eval_step(batch) -> sums of loss, top-1, top-5 and weight."""

  def replica_step(batch):
    images, labels, weights, _ = batch
    logits = tf.cast(model(images, training=False), tf.float32)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    top1 = tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)
    top5 = tf.cast(tf.math.in_top_k(labels, logits, min(5, logits.shape[-1])),
                   tf.float32)
    return tf.stack([tf.reduce_sum(cross_entropy * weights),
                     tf.reduce_sum(top1 * weights),
                     tf.reduce_sum(top5 * weights), tf.reduce_sum(weights)])

  @tf.function
  def eval_step(batch):
    return strategy.reduce('SUM', strategy.run(replica_step, args=(batch,)),
                           axis=None)

  return eval_step


def make_agree(strategy):
  """Returns agree(flag) -> True if any worker's flag is set (a collective)."""

  @tf.function
  def agree(flag):
    votes = strategy.run(lambda: tf.cast(flag, tf.int32))
    return strategy.reduce('SUM', votes, axis=None) > 0

  return agree


# --- Output a person sees -------------------------------------------------


class Reporter:
  """Progress lines (all workers), summaries and metrics.jsonl (chief only)."""

  def __init__(self, model_dir, chief):
    self.chief = chief
    self.metrics_path = os.path.join(model_dir, 'metrics.jsonl')
    if chief:
      tf.io.gfile.makedirs(model_dir)
      self.writers = {split: tf.summary.create_file_writer(
          os.path.join(model_dir, split)) for split in ('train', 'eval')}
    else:
      self.writers = {split: tf.summary.create_noop_writer()
                      for split in ('train', 'eval')}

  def write(self, split, step, values):
    with self.writers[split].as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)
    if self.chief:
      record = {'step': step, 'split': split, 'time': time.time(), **values}
      with tf.io.gfile.GFile(self.metrics_path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def _duration(seconds):
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s'


# --- The run -----------------------------------------------------------------


class _Preemption:
  """Remembers a SIGTERM so that the loop can stop at a step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the end of the '
                    'current loop, then stopping.')
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def _input_options(config):
  if not config.input_per_replica:
    return None
  return tf.distribute.InputOptions(
      experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
      experimental_place_dataset_on_device=False)


def evaluate(config, strategy, model, source, image_size):
  """Evaluates on the whole eval split; returns {'loss', 'top1', 'top5', ...}."""
  dataset = strategy.distribute_datasets_from_function(
      input_pipeline.eval_dataset_fn(source, image_size, config.batch_size),
      _input_options(config))
  eval_step = make_eval_step(strategy, model)
  totals = np.zeros(4)
  for batch in dataset:
    totals += eval_step(batch).numpy()
  loss, top1, top5, count = totals
  count = max(count, 1)
  return {'loss': loss / count, 'top1': top1 / count, 'top5': top5 / count,
          'images': int(totals[3]), 'skipped': source.num_eval - int(totals[3])}


def _log_eval(reporter, step, result):
  logging.info('eval at step %d: top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %d '
               'images (%d undecodable skipped)', step, 100 * result['top1'],
               100 * result['top5'], result['loss'], result['images'],
               result['skipped'])
  reporter.write('eval', step, {k: float(result[k]) for k in ('loss', 'top1', 'top5')})


def run(config):
  """Runs an experiment: train, evaluate and/or export, as config.mode says.

  Args:
    config: A `Config`.

  Returns:
    A dict summarizing the run: 'step', 'status' ('finished', 'preempted',
    'evaluated' or 'exported'), 'eval' results and 'export_dir' when made.

  Raises:
    ConfigError: For an unusable configuration.
    datasets.DataError: For missing data.
    NonFiniteLossError: If the loss becomes NaN or infinite.
  """
  config.check()
  if config.deterministic and config.seed is None:
    config.seed = 0
  config.precision, config.jit_compile = fastest_settings(config)
  configure_devices(config)
  multi_worker = config.strategy == 'multi_worker'
  if multi_worker:
    cluster.check_tf_config()
  with cluster.StartupWatchdog(config.startup_timeout if multi_worker else 0,
                               'multi-worker cluster'):
    strategy = make_strategy(config)
    agree = make_agree(strategy)
    agree(tf.constant(False))  # A first collective: every worker is there.
  chief = is_chief(strategy)
  latest = tf.train.latest_checkpoint(config.model_dir)
  if config.mode in ('eval', 'export') and not (latest or config.init_checkpoint):
    raise ConfigError(f'--mode={config.mode} needs a checkpoint in '
                      f'{config.model_dir} (there is none) or --init_checkpoint.')

  source = datasets.load_source(config.dataset, config.data_dir,
                                config.manual_dir, config.num_classes,
                                config.image_size)
  num_classes = config.num_classes or source.num_classes
  if num_classes != source.num_classes:
    raise ConfigError(f'--num_classes={num_classes}, but {source.name} has '
                      f'{source.num_classes} classes.')
  image_size = config.image_size or source.image_size
  total_steps = train_steps(config, source)
  blocks, scope = _blocks_and_scope(config)
  with strategy.scope():
    model = networks.build(blocks, num_classes, image_size, config.stem,
                           config.weight_decay, config.sync_batch_norm,
                           _precision_policy(config), scope)
    optimizer = make_optimizer(config, make_schedule(config, source, total_steps),
                               model)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  write_dir = _write_dir(config.model_dir, strategy)
  manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                       max_to_keep=config.keep_checkpoints)
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
    logging.info('Resumed from %s at step %d.', latest,
                 int(optimizer.iterations.numpy()))
  elif config.init_checkpoint:
    kind = load_init_checkpoint(model, config)
    logging.info('Initialized from the %s checkpoint %s.', kind,
                 config.init_checkpoint)
  reporter = Reporter(config.model_dir, chief)
  export_dir = config.export_dir or os.path.join(config.model_dir, 'export')

  def save_export():
    target = export_dir if chief else os.path.join(write_dir, 'export')
    export.export_saved_model(model, target, image_size, source.augment)
    if chief:
      logging.info('Exported the SavedModel to %s.', export_dir)

  try:
    if config.mode == 'eval':
      step = int(optimizer.iterations.numpy())
      result = evaluate(config, strategy, model, source, image_size)
      _log_eval(reporter, step, result)
      return {'step': step, 'status': 'evaluated', 'eval': result}
    if config.mode == 'export':
      save_export()
      return {'step': int(optimizer.iterations.numpy()), 'status': 'exported',
              'export_dir': export_dir}
    # The input resumes at the restored step (see input_pipeline).
    train_iterator = iter(strategy.distribute_datasets_from_function(
        input_pipeline.train_dataset_fn(
            source, image_size, config.batch_size, config.seed or 0,
            start_step=int(optimizer.iterations.numpy()), end_step=total_steps,
            shuffle_buffer=config.shuffle_buffer),
        _input_options(config)))
    summary = train(config, strategy, model, optimizer, train_iterator, manager,
                    reporter, source, image_size, num_classes, total_steps, agree)
    if summary['status'] == 'finished':
      save_export()
      summary['export_dir'] = export_dir
    return summary
  finally:
    if not chief:
      shutil.rmtree(write_dir, ignore_errors=True)


def train(config, strategy, model, optimizer, iterator, manager, reporter,
          source, image_size, num_classes, total_steps, agree):
  """The training loop; returns {'step', 'status', 'eval'}.

  Raises:
    NonFiniteLossError: If the loss becomes NaN or infinite.
  """
  train_loop = make_train_loop(config, strategy, model, optimizer, num_classes)
  step = int(optimizer.iterations.numpy())
  logging.info('Training %s (%s parameters) on %s with %s (%d replicas), '
               'global batch %d, %s, XLA %s, steps %d..%d.', model.name,
               f'{model.count_params():,}', source.name,
               type(strategy).__name__, strategy.num_replicas_in_sync,
               config.batch_size, config.precision,
               'on' if config.jit_compile else 'off', step, total_steps)
  result = None
  start_time, last_saved, total_skipped = time.time(), step, 0
  window = {'start': time.time(), 'steps': 0, 'loss': 0.0, 'correct': 0.0}
  preemption = _Preemption()
  try:
    while step < total_steps:
      # Run up to the next step at which something must happen.
      boundary = min([total_steps] + [
          step // every * every + every for every in
          (config.steps_per_loop, config.log_every, config.checkpoint_every,
           config.eval_every or total_steps)])
      num_steps = boundary - step
      losses, correct, skipped = train_loop(iterator, tf.constant(num_steps))
      losses = losses.numpy()
      bad = np.flatnonzero(~np.isfinite(losses))
      if bad.size:
        raise NonFiniteLossError(
            f'The loss became {losses[bad[0]]} at step {step + bad[0] + 1}; '
            f'training stopped. Nothing was saved after step {last_saved}: '
            f'the last good checkpoint is {manager.latest_checkpoint}. Lower '
            '--base_lr, check the input data, or use --precision=float32.')
      step = boundary
      window['steps'] += num_steps
      window['loss'] += float(losses.sum())
      window['correct'] += float(correct)
      if skipped:
        total_skipped += int(skipped)
        logging.warning('Skipped %d undecodable images before step %d (%d so '
                        'far in this run).', int(skipped), step, total_skipped)
      if step % config.log_every == 0 or step == total_steps:
        elapsed = time.time() - window['start']
        speed = window['steps'] * config.batch_size / max(elapsed, 1e-9)
        values = {'loss': window['loss'] / window['steps'],
                  'top1': window['correct'] / (window['steps'] * config.batch_size),
                  'learning_rate': float(optimizer.learning_rate.numpy()),
                  'images_per_second': speed,
                  'skipped_images': float(total_skipped)}
        eta = (total_steps - step) * elapsed / window['steps']
        logging.info('step %d/%d  loss %.4f  top-1 %.2f%%  lr %.4g  %.1f images/s'
                     '  ETA %s', step, total_steps, values['loss'],
                     100 * values['top1'], values['learning_rate'], speed,
                     _duration(eta))
        reporter.write('train', step, values)
        window = {'start': time.time(), 'steps': 0, 'loss': 0.0, 'correct': 0.0}
      if bool(agree(tf.constant(preemption.requested))):
        manager.save(checkpoint_number=step)
        logging.warning('Preempted at step %d: checkpoint saved in %s. Rerun '
                        'the same command to resume.', step, config.model_dir)
        return {'step': step, 'status': 'preempted', 'eval': result,
                'skipped_images': total_skipped}
      if step % config.checkpoint_every == 0 or step == total_steps:
        manager.save(checkpoint_number=step)
        last_saved = step
      if config.mode == 'train_and_eval' and (
          (config.eval_every and step % config.eval_every == 0)
          or step == total_steps):
        result = evaluate(config, strategy, model, source, image_size)
        _log_eval(reporter, step, result)
  finally:
    preemption.restore()
  logging.info('Finished %d steps in %s.%s', step,
               _duration(time.time() - start_time),
               f' Eval top-1 {100 * result["top1"]:.2f}%.' if result else '')
  return {'step': step, 'status': 'finished', 'eval': result,
          'skipped_images': total_skipped}
