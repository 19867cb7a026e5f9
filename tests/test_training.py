"""Training runs, stops, resumes and fails the way a researcher needs."""

import json
import os
import re
import signal

import numpy as np
import pytest
import tensorflow as tf

import resnet_v2
from experiments.lib import cluster
from experiments.lib import data
from experiments.lib import errors
from experiments.lib import network
from experiments.lib import optimization
from experiments.lib import steps
from experiments.lib import train
from experiments.lib.config import Config
from experiments.lib.errors import FlagError
from tests import run_cli
from tests import tiny_run

TINY = tiny_run.RUN


def _checkpointed(model_dir):
  """{name: value} of every variable (weights, BN statistics, optimizer
  slots and step) in the latest checkpoint."""
  reader = tf.train.load_checkpoint(model_dir)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if name not in ('_CHECKPOINTABLE_OBJECT_GRAPH', 'save_counter/.ATTRIBUTES/VARIABLE_VALUE')}


def _flags(model_dir, **overrides):
  return tiny_run.flags(model_dir, **overrides)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
  config = Config(**TINY, model_dir=str(tmp_path), train_steps=30, fail_at_step=17)
  with pytest.raises(errors.NonFiniteLossError,
                     match=r'The loss became nan at step 17(.|\n)*ckpt-10'):
    train.run(config)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith('ckpt-10')
  assert not os.path.exists(tmp_path / 'export')


def test_eval_and_export_need_a_checkpoint(tmp_path):
  with pytest.raises(errors.RunDirError, match='--mode=eval needs a checkpoint'):
    train.run(Config(**TINY, model_dir=str(tmp_path), mode='eval'))


@pytest.mark.parametrize('changes, message', [
    (dict(depth=50), 'exactly one of --depth, --blocks and --network'),
    (dict(mode='fit'), "--mode='fit'; choose one of train, eval"),
    (dict(strategy='tpu'), '--strategy=tpu needs --tpu'),
    (dict(batch_size=0), '--batch_size must be at least 1'),
    (dict(train_steps=5, train_epochs=1.0), 'at most one of --train_steps'),
    (dict(drop_path_rate=1.0), '--drop_path_rate must be below 1'),
    (dict(blocks=None, network='no_colon'), "--network='no_colon': expected 'module:function'"),
    (dict(blocks='basik 8x2'), "'basic 64x2/2'"),
    (dict(normalization='layer_norm'), 'choose one of batch_norm, group_norm'),
])
def test_bad_configs(changes, message):
  with pytest.raises(FlagError, match=message):
    Config(**dict(TINY, **changes)).check()


@pytest.mark.slow
def test_missing_imagenet_says_where_and_how(tmp_path):
  with pytest.raises(data.DataError) as error:
    data.load_source('imagenet2012', data_dir=str(tmp_path))
  message = str(error.value)
  for part in (str(tmp_path), 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar',
               'downloads/manual', '--manual_dir', '--dataset=synthetic'):
    assert part in message
  result = run_cli.run('experiments.imagenet', f'--data_dir={tmp_path}',
                       f'--model_dir={tmp_path / "run"}', check=False)
  assert result.returncode == 1 and 'Traceback' not in result.stdout
  assert 'error: Dataset \'imagenet2012\' is not prepared' in result.stdout


def test_learning_rate_schedules():
  cosine = optimization.WarmupDecay(0.4, 100, warmup_steps=10)
  assert float(cosine(0)) == pytest.approx(0.04)
  assert float(cosine(9)) == pytest.approx(0.4)
  assert float(cosine(55)) == pytest.approx(0.2)
  assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)
  step = optimization.WarmupDecay(0.1, 64000, warmup_steps=400, decay='step',
                               boundaries=[32000, 48000], warmup_lr=0.01)
  assert [round(float(step(s)), 6) for s in (0, 399, 400, 31999, 32000, 48000)] == [
      0.01, 0.01, 0.1, 0.1, 0.01, 0.001]


@pytest.mark.slow
def test_embedded_default_reaches_its_accuracy_bar(tmp_path):
  """The README's main job: digits to >= 97% held out, exported and reloaded."""
  result = run_cli.run('experiments.digits', f'--model_dir={tmp_path}')
  top1 = float(re.search(r'eval at step \d+: top-1 ([\d.]+)%', result.stdout).group(1))
  assert top1 >= 97.0, result.stdout[-3000:]
  assert 'The reloaded SavedModel got' in result.stdout
  assert len(re.findall(r'SavedModel: digit \d classified as \d', result.stdout)) == 8
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert {r['split'] for r in records} == {'train', 'eval'}
  assert os.listdir(tmp_path / 'train') and os.listdir(tmp_path / 'eval')  # TensorBoard
  run_cli.run('experiments.plot_metrics', f'--model_dir={tmp_path}')
  assert os.path.getsize(tmp_path / 'metrics.png') > 10_000


@pytest.mark.slow
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
  """SIGKILL loses only the steps since the last checkpoint; SIGTERM saves and
  exits cleanly; with --deterministic the resumed run ends bit-identical."""
  steps = dict(train_steps=60, deterministic=True, mode='train')
  run_cli.run('experiments.digits', '--show=0', *_flags(tmp_path / 'whole', **steps))

  interrupted = tmp_path / 'interrupted'
  flags = ['--show=0', *_flags(interrupted, **steps)]
  process = run_cli.start('experiments.digits', *flags)
  run_cli.wait_for(process, r'step 15/60')  # checkpoint 10 is complete by then
  process.kill()
  process.wait()
  # The run may have gone further while the line was read: any checkpoint.
  killed = int(re.search(r'ckpt-(\d+)$', tf.train.latest_checkpoint(str(interrupted))).group(1))
  assert 10 <= killed < 60, killed

  process = run_cli.start('experiments.digits', *flags)
  lines = run_cli.wait_for(process, r'Training ')  # SIGTERM is handled from here on
  assert any(f'at step {killed}.' in l and 'Resumed from' in l for l in lines), lines[-20:]
  process.send_signal(signal.SIGTERM)  # while the first call is traced
  output = ''.join(lines) + process.communicate(timeout=600)[0]
  assert process.returncode == 0, output[-3000:]
  preempted = int(re.search(r'Preempted at step (\d+)', output).group(1))
  assert killed < preempted < 60 and 'Traceback' not in output
  assert tf.train.latest_checkpoint(str(interrupted)).endswith(f'ckpt-{preempted}')

  output = run_cli.run('experiments.digits', *flags).stdout
  assert f'at step {preempted}.' in output and 'step 60/60' in output
  whole, resumed = _checkpointed(tmp_path / 'whole'), _checkpointed(interrupted)
  assert whole.keys() == resumed.keys() and len(whole) > 60
  for name in whole:
    np.testing.assert_array_equal(whole[name], resumed[name], err_msg=name)


@pytest.mark.slow
def test_regularisers_resume_bit_identically(tmp_path):
  """EMA and stochastic depth are checkpointed, RandAugment, MixUp and CutMix
  are functions of the stream position: 10 steps, then 10 more after a
  restart, end where 20 steps in one go do; eval and export use the average."""
  common = dict(deterministic=True, mode='train', lr_decay='constant', ema_decay=0.9,
                drop_path_rate=0.5, blocks='4x2/2, 8x2', randaugment_ops=2,
                mixup_alpha=0.2, cutmix_alpha=1.0)
  run_cli.run('experiments.digits', '--show=0', *_flags(tmp_path / 'whole', train_steps=20,
                                                        **common))
  for length in (10, 20):
    run_cli.run('experiments.digits', '--show=0', *_flags(tmp_path / 'parts', train_steps=length,
                                                          **common))
  whole, parts = _checkpointed(tmp_path / 'whole'), _checkpointed(tmp_path / 'parts')
  assert whole.keys() == parts.keys()
  for name in whole:
    np.testing.assert_array_equal(whole[name], parts[name], err_msg=name)
  assert sum('checkpointed_seed' in n for n in whole) == 4  # one per unit
  # The exported kernels are the averages: in the checkpoint, not the raw weights.
  exported = tf.saved_model.load(str(tmp_path / 'whole' / 'export'))
  kernels = [v.numpy() for v in exported.weights if 'kernel' in v.name]
  assert kernels and _kernels_found(tmp_path / 'whole', kernels) == len(kernels)
  raw = [v for n, v in whole.items() if n.startswith('model/') and 'kernel' in n]
  assert not any(np.array_equal(k, r) for k in kernels for r in raw if k.shape == r.shape)


def _losses(model_dir):
  return [r['loss'] for r in map(json.loads, open(model_dir / 'metrics.jsonl'))
          if r['split'] == 'train']


@pytest.mark.slow
def test_mirrored_on_two_devices_matches_one_device(tmp_path):
  """Same global batch, BatchNorm synced over replicas: the same trajectory.

  Tolerance: 1e-4 relative per logged loss over 30 steps (sums over two
  replicas are added in another order; measured differences are ~1e-6).
  """
  common = dict(train_steps=30, log_every=2, steps_per_loop=2, mode='train',
                sync_batch_norm=True, deterministic=True)
  run_cli.run('experiments.digits', '--show=0', *_flags(tmp_path / 'one', **common))
  run_cli.run('experiments.digits', '--show=0', *_flags(
      tmp_path / 'two', strategy='mirrored', cpu_devices=2, **common))
  one, two = _losses(tmp_path / 'one'), _losses(tmp_path / 'two')
  assert len(one) == len(two) == 15
  np.testing.assert_allclose(two, one, rtol=1e-4)
  assert one[-1] < one[0]


def test_auto_settings_pick_bfloat16_where_the_cpu_has_it_and_no_xla_on_cpu():
  with open('/proc/cpuinfo', encoding='utf-8') as f:
    native = any(flag in line.split() for line in f if line.startswith('flags')
                 for flag in ('avx512_bf16', 'amx_bf16'))
  precision, jit = cluster.resolve_auto_settings(Config(**TINY))
  assert precision == ('mixed_bfloat16' if native else 'float32') and jit is False
  assert cluster.resolve_auto_settings(Config(**dict(TINY, precision='float32'), jit_compile=True)) == (
      'float32', True)


def _kernels_found(checkpoint_dir, kernels):
  """How many of `kernels` appear, by value, in the latest checkpoint."""
  values = list(_checkpointed(checkpoint_dir).values())
  return sum(any(v.shape == k.shape and np.array_equal(v, k) for v in values)
             for k in kernels)


def test_init_checkpoint_from_tf_slim_and_from_ours(tmp_path):
  from tests import numpy_resnet  # pylint: disable=g-import-not-at-top
  spec = [('block1', [(16, 4, 2)]), ('block2', [(32, 8, 1)])]  # = '4x1/2, 8x1'
  weights = numpy_resnet.random_weights(numpy_resnet.slim_weight_shapes(spec, 5, 'resnet_v2'))
  slim = numpy_resnet.write_tf1_checkpoint(weights, str(tmp_path / 'slim' / 'model.ckpt'))
  kernels = [v for k, v in weights.items() if k.endswith('/weights') and '/logits/' not in k]
  # Learning rate 0: one step changes only BatchNorm's moving statistics.
  fine_tune = dict(TINY, stem='imagenet', train_steps=1, base_lr=0.0, mode='train',
                   precision='float32')
  with pytest.raises(ValueError, match='skip_logits=True'):  # 5 classes, digits has 10
    train.run(Config(**fine_tune, model_dir=str(tmp_path / 'a'), init_checkpoint=slim))
  train.run(Config(**fine_tune, model_dir=str(tmp_path / 'b'), init_checkpoint=slim,
                   init_skip_logits=True))
  assert _kernels_found(tmp_path / "b", kernels) == len(kernels) == 9  # conv1 + 2 x 4
  train.run(Config(**fine_tune, model_dir=str(tmp_path / 'c'),
                   init_checkpoint=str(tmp_path / 'b')))
  assert _kernels_found(tmp_path / "c", kernels) == 9


def test_stand_ins_for_corrupt_images_do_not_train():
  """A batch of zero-weight stand-ins: zero loss, no update, all counted."""
  config = Config(**dict(TINY, weight_decay=0.0, precision='float32'),
                  model_dir='unused')
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  placement = cluster.Placement(strategy, None, True, 'unused', 'float32', False)
  with strategy.scope():
    model = network.build(network.resolve(config), config, 'float32', 10, 8)
    optimizer = optimization.make_optimizer(config, 'float32', 0.1, model)
  batch = (tf.random.normal([32, 8, 8, 3]), tf.zeros([32], tf.int32),
           tf.zeros([32]), tf.ones([32], tf.int32))
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(batch).repeat())
  loop = steps.make_multi_step(config, placement, model, optimizer, 10)
  before = [w.numpy() for w in model.trainable_weights]
  losses, correct, skipped = loop(iter(dataset), tf.constant(2))
  assert losses.numpy().tolist() == [0.0, 0.0]
  assert float(correct) == 0.0 and float(skipped) == 64.0
  for old, weight in zip(before, model.trainable_weights):
    np.testing.assert_array_equal(old, weight.numpy())


@pytest.mark.slow
def test_cifar_script_builds_the_papers_network_and_trains(tmp_path):
  blocks = resnet_v2.cifar_blocks(164)
  assert [(b.scope, len(b.args), b.args[0]['depth_bottleneck'], b.args[-1]['stride'])
          for b in blocks] == [('block1', 18, 16, 2), ('block2', 18, 32, 2),
                               ('block3', 18, 64, 1)]
  with pytest.raises(ValueError, match='depth 9n\\+2'):
    resnet_v2.cifar_blocks(50)
  output = run_cli.run('experiments.cifar', '--dataset=synthetic', '--num_classes=10',
                       '--depth=11', '--batch_size=8', '--train_steps=4',
                       '--steps_per_loop=2', '--log_every=2', '--lr_boundary_steps=2',
                       f'--model_dir={tmp_path}', '--precision=float32').stdout
  assert re.search(r'Training resnet_v2_11 .* on synthetic', output)
  assert f'tensorboard --logdir {tmp_path}' in output
  assert 'step 4/4' in output and 'Exported the SavedModel' in output
  # TensorFlow's own INFO lines are off; the summary is plain JSON numbers.
  assert 'Sharding callback' not in output and 'fingerprint' not in output, output
  assert 'cpu_feature_guard' not in output
  done = json.loads(re.search(r'Done: (\{.*\})', output).group(1))
  assert done['step'] == 4 and isinstance(done['eval']['top1'], float)


@pytest.mark.slow
def test_tf_log_level_brings_back_tensorflow_lines(tmp_path):
  output = run_cli.run('experiments.digits', '--blocks=4x1', '--stem=cifar',
                       '--batch_size=16', '--train_steps=2', '--steps_per_loop=2',
                       '--mode=train', '--tf_log_level=0', '--show=0',
                       f'--model_dir={tmp_path}').stdout
  assert 'Sharding callback' in output  # TensorFlow's Python INFO lines
  assert 'cpu_feature_guard' in output  # and its C++ ones


@pytest.mark.slow
def test_synthetic_data_is_learnable(tmp_path):
  """Train and eval accuracy rise together on --dataset=synthetic (10 classes)."""
  output = run_cli.run(
      'experiments.digits', '--dataset=synthetic', '--num_classes=10', '--image_size=16',
      '--blocks=8x1/2, 16x1', '--stem=cifar', '--batch_size=32', '--lr_reference_batch=32',
      '--train_steps=300', '--steps_per_loop=50', '--log_every=50', '--checkpoint_every=300',
      '--warmup_epochs=0', '--show=0', f'--model_dir={tmp_path}').stdout
  train_top1 = [float(t) for t in re.findall(r'step \d+/300 .* top-1 ([\d.]+)%', output)]
  eval_top1 = float(re.search(r'eval at step 300: top-1 ([\d.]+)%', output).group(1))
  assert train_top1[-1] > 60 and eval_top1 > 60, output[-3000:]  # chance: 10%
  assert train_top1[0] < train_top1[-1]


@pytest.mark.slow
def test_help_lists_the_projects_flags_by_group():
  output = run_cli.run('experiments.digits', '--help').stdout
  headers = [line for line in output.splitlines() if line.endswith(':') and not line.startswith(' ')]
  assert headers == ['network:', 'data:', 'optimisation:', 'distribution and speed:',
                     'run and output:', 'this script:'], output
  assert "--blocks  (default: 16x2/2, 32x2)" in output  # the recipe's default
  assert '--show  (default: 8)' in output and '--helpfull' in output
  assert '--tf_log_level  (default: 2)' in output and '--export_precision' in output
  assert '--logtostderr' not in output and 'absl.app' not in output
