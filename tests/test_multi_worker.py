"""Two workers on loopback through launch.local: correct, restartable, fail-fast."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import run_cli

# Real processes throughout: not in the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

TRAIN = ['--dataset=digits', '--blocks=4x1/2, 8x1', '--stem=cifar',
         '--batch_size=32', '--lr_reference_batch=32', '--warmup_epochs=0',
         '--sync_batch_norm', '--deterministic', '--seed=1', '--mode=train',
         '--show=0', '--startup_timeout=600']


def _launch(workers, model_dir, *flags, max_restarts=0):
  return run_cli.start('launch.local', f'--workers={workers}',
                       f'--max_restarts={max_restarts}', '--grace_period=3', '--',
                       sys.executable, '-m', 'experiments.digits',
                       '--strategy=multi_worker', f'--model_dir={model_dir}',
                       *TRAIN, *flags)


def _losses(model_dir):
  return [r['loss'] for r in map(json.loads, open(model_dir / 'metrics.jsonl'))
          if r['split'] == 'train']


def test_two_workers_train_like_one_process(tmp_path):
  """Same global batch, BatchNorm synced, and the single process given one
  input pipeline per replica (as each worker has): the same losses, to 1e-4
  relative (all-reduces add in another order)."""
  steps = ['--train_steps=20', '--log_every=2', '--steps_per_loop=2',
           '--checkpoint_every=10']
  process = _launch(2, tmp_path / 'workers', *steps)
  output = process.communicate(timeout=900)[0]
  assert process.returncode == 0, output[-4000:]
  assert '[worker 0]' in output and '[worker 1]' in output
  assert re.search(r"\[worker 0\] .*with CollectiveAllReduceStrategy \(2 replicas\)", output)
  run_cli.run('experiments.digits', '--strategy=mirrored', '--cpu_devices=2',
              '--input_per_replica', f'--model_dir={tmp_path / "single"}',
              *TRAIN, *steps)
  workers, single = _losses(tmp_path / 'workers'), _losses(tmp_path / 'single')
  assert len(workers) == len(single) == 10
  np.testing.assert_allclose(workers, single, rtol=1e-4)
  # Only the chief wrote, and the other worker cleaned up after itself.
  run_dir = tmp_path / 'workers'
  assert (run_dir / 'export' / 'saved_model.pb').exists()
  assert sorted(p.name for p in run_dir.glob('ckpt-*.index')) == ['ckpt-10.index', 'ckpt-20.index']
  assert sorted(p.name for p in run_dir.iterdir()) == [
      'checkpoint', 'ckpt-10.data-00000-of-00001', 'ckpt-10.index',
      'ckpt-20.data-00000-of-00001', 'ckpt-20.index', 'config.json', 'eval', 'export',
      'metrics.jsonl', 'train']


def _children(pid):
  out = subprocess.run(['pgrep', '-P', str(pid)], stdout=subprocess.PIPE, text=True).stdout
  return [int(p) for p in out.split()]


def test_a_killed_worker_restarts_the_group_which_resumes(tmp_path):
  # The group trains on while the line is read: it is killed at step 15 or
  # later, but long before the last step.
  process = _launch(2, tmp_path, '--train_steps=100', '--log_every=5',
                    '--steps_per_loop=5', '--checkpoint_every=10', max_restarts=1)
  lines = run_cli.wait_for(process, r'\[worker 0\] .*step 15/100')
  workers = _children(process.pid)
  assert len(workers) == 2
  os.kill(workers[1], signal.SIGKILL)
  output = ''.join(lines) + process.communicate(timeout=900)[0]
  assert process.returncode == 0, output[-4000:]
  assert 'restarting the group (1/1)' in output
  resumed = re.search(r'\[worker 0\] .*Resumed from .*ckpt-(\d+) at step (\d+)', output)
  assert resumed and resumed.group(1) == resumed.group(2) and int(resumed.group(1)) >= 10
  assert re.search(r'\[worker 0\] .*step 100/100', output)
  assert os.path.exists(tmp_path / 'ckpt-100.index')
  assert not os.path.exists(tmp_path / 'ckpt-105.index')


def _one_worker(tf_config, model_dir, *flags):
  """Runs one multi-worker training process alone, with the given TF_CONFIG."""
  return subprocess.run(
      [sys.executable, '-m', 'experiments.digits', '--strategy=multi_worker',
       f'--model_dir={model_dir}', *TRAIN, *flags], cwd=run_cli.ROOT,
      env=dict(run_cli.env(), TF_CONFIG=json.dumps(tf_config)),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)


def test_a_taken_port_fails_fast_with_a_clear_message(tmp_path):
  """Before waiting for its peer: a start-up timeout of a day would outlast
  the test's own."""
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    result = _one_worker({'cluster': {'worker': [f'127.0.0.1:{port}', '127.0.0.1:1']},
                          'task': {'type': 'worker', 'index': 0}}, tmp_path,
                         '--startup_timeout=86400')
  assert result.returncode == 1, result.stdout[-3000:]
  assert f'cannot listen on 127.0.0.1:{port} from TF_CONFIG' in result.stdout
  assert 'Traceback' not in result.stdout


@pytest.mark.parametrize('tf_config, message', [
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG is not valid \\('task'\\)"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     'task worker:3 is not in its cluster'),
])
def test_a_malformed_tf_config_is_named(tf_config, message):
  from experiments.lib import cluster  # pylint: disable=g-import-not-at-top
  from experiments.lib.errors import ClusterError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ClusterError, match=message):
    cluster.check_tf_config({'TF_CONFIG': tf_config})


def test_an_absent_peer_times_out_instead_of_hanging(tmp_path):
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    free = probe.getsockname()[1]
  result = _one_worker({'cluster': {'worker': [f'127.0.0.1:{free}', '127.0.0.1:9']},
                        'task': {'type': 'worker', 'index': 0}},
                       tmp_path, '--startup_timeout=15')
  # SIGTERM, or SIGKILL 5 s later when the blocked start-up cannot handle it.
  assert result.returncode in (-signal.SIGTERM, -signal.SIGKILL), result.stdout[-3000:]
  assert 'the multi-worker cluster was not up after 15s' in result.stdout


def test_ctrl_c_through_the_launcher_saves_and_only_the_chief_serves(tmp_path):
  """Ctrl-C (SIGINT to launch.local) makes both workers save at one step and
  exit cleanly; the resumed group exports, and only the chief then reads the
  export it wrote (a non-chief reading it could find it half-written)."""
  process = _launch(2, tmp_path, '--train_steps=100000', '--log_every=5',
                    '--steps_per_loop=5', '--checkpoint_every=1000')
  run_cli.wait_for(process, r'\[worker 1\] .*step 10/')
  process.send_signal(signal.SIGINT)
  output = process.communicate(timeout=900)[0]
  assert process.returncode == 128 + signal.SIGINT, output[-4000:]
  stopped = {int(s) for s in re.findall(r'\[worker \d\] .*(?:Stopped|Preempted) at step (\d+)',
                                        output)}
  assert len(stopped) == 1 and 'Traceback' not in output, output[-4000:]
  step = stopped.pop()
  assert os.path.exists(tmp_path / f'ckpt-{step}.index')

  show = [f for f in TRAIN if f != '--show=0'] + ['--show=2']
  process = run_cli.start('launch.local', '--workers=2', '--grace_period=3', '--',
                          sys.executable, '-m', 'experiments.digits',
                          '--strategy=multi_worker', f'--model_dir={tmp_path}',
                          *show, f'--train_steps={step + 5}', '--log_every=5',
                          '--steps_per_loop=5')
  output = process.communicate(timeout=900)[0]
  assert process.returncode == 0, output[-4000:]
  assert re.search(r'\[worker 0\] .*The reloaded SavedModel got', output)
  assert not re.search(r'\[worker 1\] .*(reloaded SavedModel|SavedModel: digit)', output)


def test_scratch_dirs_of_dead_workers_are_removed(tmp_path):
  from experiments.lib import cluster  # pylint: disable=g-import-not-at-top
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  stale = tmp_path / f'resnet_v2-scratch-{dead.pid}-worker_1-abc'
  live = tmp_path / f'resnet_v2-scratch-{os.getpid()}-worker_2-def'
  for path in (stale, live):
    (path / 'variables').mkdir(parents=True)
  assert cluster.remove_stale_scratch_dirs(str(tmp_path)) == [str(stale)]
  assert not stale.exists() and live.exists()
