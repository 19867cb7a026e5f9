"""A user's files and hours are safe: what the README's Guarantees promise.

Each test makes the fault a user would meet (a wrong --export_dir, a second
run on the same model_dir, a lost or truncated checkpoint, Ctrl-C, a changed
precision, bad data, a bad flag) and checks that nothing is lost or
overwritten and that the message says what to do.
"""

import json
import os
import re
import signal
import threading
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from experiments.lib import data
from experiments.lib import errors
from experiments.lib import stop_requests
from experiments.lib import train
from experiments.lib.config import Config
from tests import run_cli
from tests import tiny_run

TINY = dict(tiny_run.RUN, precision='float32')


def _flags(model_dir, **overrides):
  return tiny_run.flags(model_dir, **dict(TINY, **overrides))


def _listing(path):
  return sorted(str(p.relative_to(path)) for p in path.rglob('*'))


# --- Exports replace only exports ------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('where', ['model_dir', 'parent', 'user_dir'])
def test_export_never_replaces_what_is_not_an_export(tmp_path, where):
  run_dir = tmp_path / 'run'
  run_cli.run('experiments.digits', '--show=0', *_flags(run_dir, train_steps=10, mode='train'))
  before = _listing(tmp_path)
  export_dir = {'model_dir': run_dir, 'parent': tmp_path,
                'user_dir': tmp_path / 'mine'}[where]
  if where == 'user_dir':
    export_dir.mkdir()
    (export_dir / 'notes.txt').write_text('a week of work')
    before = _listing(tmp_path)
  result = run_cli.run('experiments.digits', '--show=0', f'--export_dir={export_dir}',
                       *_flags(run_dir, train_steps=20), check=False)
  assert result.returncode == 1 and 'Traceback' not in result.stdout, result.stdout[-2000:]
  assert '--export_dir' in result.stdout
  assert 'step 15/20' not in result.stdout  # refused before training
  assert _listing(tmp_path) == before


@pytest.mark.slow
def test_export_replaces_a_previous_export(tmp_path):
  flags = _flags(tmp_path / 'run', train_steps=10, mode='train')
  run_cli.run('experiments.digits', '--show=0', *flags)
  first = os.stat(tmp_path / 'run' / 'export' / 'saved_model.pb').st_mtime_ns
  run_cli.run('experiments.digits', '--show=0', *flags[:-1], '--mode=export')
  assert os.stat(tmp_path / 'run' / 'export' / 'saved_model.pb').st_mtime_ns != first
  assert sorted(p.name for p in (tmp_path / 'run').iterdir() if 'export' in p.name) == ['export']


def _tree(path):
  """Every file under a path of any TF filesystem."""
  return sorted(os.path.join(d, f)[len(path):] for d, _, names in tf.io.gfile.walk(path)
                for f in names)


def test_a_remote_run_directory_keeps_everything_there(tmp_path, monkeypatch):
  """On a filesystem that is not local (TF's ram:// stands in for gs://), the
  run, its export, the export's reload and a second export that replaces the
  first all stay under --model_dir, and nothing lands in the working directory."""
  monkeypatch.chdir(tmp_path)
  summary = train.run(Config(**TINY, model_dir='ram://run1', train_steps=10, mode='train'))
  assert summary['export_dir'] == 'ram://run1/export'
  served = tf.saved_model.load('ram://run1/export').signatures['serve_images']
  first = served(images=tf.ones([1, 8, 8, 3]))['probabilities'].numpy()
  assert first.shape == (1, 10)
  summary = train.run(Config(**TINY, model_dir='ram://run1', train_steps=20, mode='train'))
  assert summary['resumed_from'] == 'ram://run1/ckpt-10'  # and exported again:
  served = tf.saved_model.load('ram://run1/export').signatures['serve_images']
  assert not np.allclose(served(images=tf.ones([1, 8, 8, 3]))['probabilities'], first)
  files = _tree('ram://run1')
  assert {'/config.json', '/metrics.jsonl', '/ckpt-10.index', '/export/saved_model.pb',
          '/ckpt-20.index', '/export/assets/labels.txt'} <= set(files)
  assert not [f for f in files if '.tmp-' in f or '.old-' in f], files
  assert os.listdir(tmp_path) == []


# --- One run per model_dir ---------------------------------------------------


@pytest.mark.slow
def test_second_run_on_a_model_dir_is_refused_and_a_dead_holder_explained(tmp_path):
  flags = ['--show=0', *_flags(tmp_path, train_steps=100000, mode='train')]
  first = run_cli.start('experiments.digits', *flags)
  try:
    run_cli.wait_for(first, r'step 15/')  # ckpt-10, which the export below needs, is whole
    second = run_cli.run('experiments.digits', *flags, check=False)
    assert second.returncode == 1 and 'Traceback' not in second.stdout
    assert f'pid {first.pid}' in second.stdout and 'is using' in second.stdout
  finally:
    first.kill()
    first.wait()
  third = run_cli.run('experiments.digits', '--show=0',
                      *_flags(tmp_path, mode='export'))
  assert re.search(rf'pid {first.pid}.*no longer running', third.stdout)
  assert 'Exported the SavedModel' in third.stdout
  assert not [p for p in tmp_path.iterdir() if 'lock' in p.name]  # released


# --- Checkpoints: the newest intact one, never a silent restart ------------


def _rows(model_dir):
  return [json.loads(line) for line in open(model_dir / 'metrics.jsonl')]


def test_lost_index_and_truncated_checkpoint_resume_from_the_newest_intact(tmp_path):
  config = Config(**TINY, model_dir=str(tmp_path), train_steps=30, mode='train_and_eval',
                  eval_every=10)
  train.run(config)
  os.remove(tmp_path / 'checkpoint')  # the index of checkpoints
  data = tmp_path / 'ckpt-30.data-00000-of-00001'
  data.write_bytes(data.read_bytes()[:100])  # a newest checkpoint cut short
  kept = {p.name: p.read_bytes() for p in tmp_path.glob('ckpt-[12]0.*')}
  summary = train.run(Config(**TINY, model_dir=str(tmp_path), train_steps=40,
                             mode='train_and_eval', eval_every=10))
  assert summary['step'] == 40 and summary['resumed_from'].endswith('ckpt-20')
  assert summary['skipped_checkpoints'] == [str(tmp_path / 'ckpt-30')]
  rows = _rows(tmp_path)
  keys = [(r['split'], r['step']) for r in rows]
  assert len(keys) == len(set(keys)), keys  # no step twice
  assert ('eval', 30) in keys and ('eval', 40) in keys
  # Older checkpoints were not rewritten (only ckpt-30 was).
  assert {n: (tmp_path / n).read_bytes() for n in kept if (tmp_path / n).exists()
          } == {n: b for n, b in kept.items() if (tmp_path / n).exists()}


def test_no_intact_checkpoint_is_a_clear_refusal(tmp_path):
  train.run(Config(**TINY, model_dir=str(tmp_path), train_steps=10, mode='train'))
  for data in tmp_path.glob('ckpt-*.data-*'):
    data.write_bytes(b'')
  before = _listing(tmp_path)
  with pytest.raises(errors.RunDirError, match=r'none of the checkpoints(.|\n)*ckpt-10'):
    train.run(Config(**TINY, model_dir=str(tmp_path), train_steps=20, mode='train'))
  assert _listing(tmp_path) == before


# --- Precision can change between machines ---------------------------------


def test_resume_under_another_precision(tmp_path):
  steps = 0
  for precision in ('float32', 'mixed_float16', 'mixed_bfloat16', 'float32',
                    'mixed_bfloat16', 'mixed_float16'):
    steps += 5
    summary = train.run(Config(**dict(TINY, precision=precision, checkpoint_every=5),
                               model_dir=str(tmp_path), train_steps=steps, mode='train'))
    assert summary['step'] == steps, precision


# --- Ctrl-C saves, like SIGTERM --------------------------------------------


@pytest.mark.slow
def test_ctrl_c_saves_at_the_next_step_boundary(tmp_path):
  process = run_cli.start('experiments.digits', '--show=0',
                          *_flags(tmp_path, train_steps=100000, mode='train'))
  run_cli.wait_for(process, r'step 15/')
  process.send_signal(signal.SIGINT)
  output = process.communicate(timeout=600)[0]
  assert process.returncode == 0, output[-3000:]
  stopped = int(re.search(r'Stopped at step (\d+)', output).group(1))
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith(f'ckpt-{stopped}')
  assert 'Traceback' not in output and 'KeyboardInterrupt' not in output


@pytest.mark.slow
def test_ctrl_c_is_answered_at_once_during_a_long_compiled_call(tmp_path):
  """One compiled call of a million steps (many minutes): the first Ctrl-C
  is answered while it runs, and a second one ends the process at once, with
  exit code 130 and nothing saved. (Batches of one image: the input stream
  is built epoch by epoch, and a million batches of 32 would be 22,000
  epochs of digits to build first.)"""
  steps = 1000000
  process = run_cli.start('experiments.digits', '--show=0', *_flags(
      tmp_path, train_steps=steps, steps_per_loop=steps, log_every=steps,
      checkpoint_every=steps, mode='train', batch_size=1,
      lr_reference_batch=1))
  try:
    run_cli.wait_for(process, r'Training ')
    run_cli.wait_until_blocked(process)  # inside the compiled call
    process.send_signal(signal.SIGINT)
    lines = run_cli.wait_for(process, r'SIGINT received: saving a checkpoint',
                             timeout=120)
    process.send_signal(signal.SIGINT)
    output = ''.join(lines) + process.communicate(timeout=120)[0]
  finally:
    process.kill()
    process.wait()
  assert process.returncode == 128 + signal.SIGINT, output[-3000:]
  assert 'Second Ctrl-C: stopping at once, without saving.' in output
  assert not re.search(r'step \d+/', output), output[-3000:]
  assert not list(tmp_path.glob('ckpt-*'))
  assert 'Traceback' not in output and 'KeyboardInterrupt' not in output


def test_stop_requests_answer_sigterm_and_put_back_what_they_found(caplog):
  handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
  stops = stop_requests.StopRequests()
  try:
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 60
    while stops.received is None:  # Until the watcher thread has answered.
      assert time.monotonic() < deadline, 'SIGTERM was not answered'
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)  # A second one changes nothing.
  finally:
    stops.restore()
  assert stops.received == signal.SIGTERM
  assert caplog.text.count('SIGTERM received: saving a checkpoint') == 1
  assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
  assert signal.set_wakeup_fd(-1) == -1
  assert not [t for t in threading.enumerate() if t.name == 'stop_requests']


# --- Data is checked before the first step ----------------------------------


def _folder(root, classes, images_per_class, good=True):
  for name in classes:
    (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(images_per_class):
      path = root / name / f'{i}.png'
      if good:
        Image.fromarray(np.full((12, 12, 3), 40 * i % 255, np.uint8)).save(path)
      else:
        path.write_bytes(b'\x89PNG\r\n\x1a\n but nothing after the header')


def test_folder_of_undecodable_images_is_an_error_before_training(tmp_path):
  _folder(tmp_path / 'data', ['a', 'b'], 12, good=False)
  with pytest.raises(data.DataError, match=r'None of the first .* decodes(.|\n)*0\.png'):
    train.run(Config(**dict(TINY, dataset=str(tmp_path / 'data'), image_size=8),
                     model_dir=str(tmp_path / 'run'), train_steps=5))
  assert not (tmp_path / 'run').exists() or not list((tmp_path / 'run').glob('ckpt-*'))


def test_folder_splits_and_classes_are_checked(tmp_path):
  _folder(tmp_path / 'only_train' / 'train', ['a', 'b'], 20)
  source = data.load_source(str(tmp_path / 'only_train'), image_size=8)
  assert (source.num_classes, source.num_train, source.num_eval) == (2, 36, 4)

  _folder(tmp_path / 'mismatch' / 'train', ['cat', 'dog'], 2)
  _folder(tmp_path / 'mismatch' / 'validation', ['cat', 'wolf'], 2)
  with pytest.raises(data.DataError, match=r"dog(.|\n)*wolf"):
    data.load_source(str(tmp_path / 'mismatch'))

  _folder(tmp_path / 'tiny', ['a', 'b'], 3)  # every 10th image held out: none
  with pytest.raises(data.DataError, match='evaluation split .* is empty'):
    train.run(Config(**dict(TINY, dataset=str(tmp_path / 'tiny'), image_size=8),
                     model_dir=str(tmp_path / 'run'), train_steps=5))


def test_only_regular_files_are_read(tmp_path):
  _folder(tmp_path / 'data', ['a', 'b'], 10)
  os.mkfifo(tmp_path / 'data' / 'a' / 'never_ends.png')
  os.symlink('/dev/zero', tmp_path / 'data' / 'b' / 'zeros.png')
  source = data.load_source(str(tmp_path / 'data'), image_size=8)
  assert source.num_train + source.num_eval == 20


# --- Every flag is checked before TensorFlow starts -------------------------


@pytest.mark.parametrize('flag, message', [
    ('--eval_every=-1', '--eval_every must be at least 0, got -1'),
    ('--base_lr=-0.1', '--base_lr must be at least 0, got -0.1'),
    ('--image_size=0', '--image_size must be at least 1, got 0'),
    ('--label_smoothing=1.5', '--label_smoothing must be below 1, got 1.5'),
    ('--lr_boundary_steps=10,x', '--lr_boundary_steps=10,x: expected a comma-separated list'),
    ('--depth=26', '--depth=26: Unknown ResNet v2 depth 26'),
    ('--randaugment_factor=2', '--randaugment_factor must be at most 1, got 2.0'),
    ('--blocks=64x', "--blocks='64x': Block spec '64x': block 1 is '64x'"),
])
@pytest.mark.slow
def test_bad_flags_are_one_line_errors(tmp_path, flag, message):
  args = ['experiments.digits', *_flags(tmp_path / 'run'), flag]
  if flag.startswith('--depth'):
    args = ['experiments.imagenet', f'--model_dir={tmp_path / "run"}', flag]
  result = run_cli.run(*args, check=False)
  assert result.returncode == 1 and 'Traceback' not in result.stdout
  assert message in result.stdout, result.stdout[-2000:]
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('flags, message', [
    (['--batch_size=33', '--cpu_devices=2'], '--batch_size=33 is not divisible by the 2 replicas'),
    (['--num_gpus=1'], '--num_gpus=1, but TensorFlow sees 0 GPUs'),
])
@pytest.mark.slow
def test_devices_must_fit_the_flags(tmp_path, flags, message):
  result = run_cli.run('experiments.digits', *_flags(tmp_path), '--strategy=mirrored',
                       *flags, check=False)
  assert result.returncode == 1 and 'Traceback' not in result.stdout
  assert message in result.stdout, result.stdout[-2000:]


# --- A full disk stops the run, and loses nothing already saved -------------


@pytest.fixture
def small_disk(tmp_path):
  """A 16 MiB tmpfs, so the disk can really fill up (needs root, as in CI)."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  if os.system(f'mount -t tmpfs -o size=16M tmpfs {mount} 2>/dev/null'):
    pytest.skip('cannot mount a tmpfs here (not root?)')
  yield mount
  os.system(f'umount -l {mount}')


def _fill(disk, leave=0):
  """Fills a disk to the last byte, with a file that `disk / 'filler'` names,
  then frees `leave` bytes of it (a multiple of the 4 KiB page)."""
  with open(disk / 'filler', 'wb', buffering=0) as filler:
    for chunk in (1 << 16, 1 << 12, 1):
      try:
        while True:
          filler.write(b'\0' * chunk)
      except OSError:  # No space left on device.
        pass
    filler.truncate(filler.tell() - leave)


@pytest.mark.slow
def test_full_disk_while_writing_metrics_keeps_the_checkpoints(small_disk):
  """The disk fills between checkpoints: the next log line's metrics.jsonl or
  TensorBoard write fails, and the run stops as for a checkpoint."""
  run_dir = small_disk / 'run'
  run_cli.run('experiments.digits', '--show=0',
              *_flags(run_dir, train_steps=5, checkpoint_every=5, mode='train'))
  kept = {p.name: p.read_bytes() for p in run_dir.glob('ckpt-5*')}
  process = run_cli.start('experiments.digits', '--show=0', *_flags(
      run_dir, train_steps=100000, checkpoint_every=100000, log_every=1,
      steps_per_loop=1, mode='train'))
  run_cli.wait_for(process, r'step 8/')
  _fill(small_disk)
  output = process.communicate(timeout=600)[0]
  assert process.returncode == 1 and 'Traceback' not in output, output[-3000:]
  assert re.search(r'Could not write (.*metrics\.jsonl|the TensorBoard summaries).* \(.*No '
                   r'space left on device.*\)\. The run stopped; the newest checkpoint kept is '
                   r'.*ckpt-5\. Make room', output), output[-3000:]
  assert {p.name: p.read_bytes() for p in run_dir.glob('ckpt-5*')} == kept
  os.remove(small_disk / 'filler')
  resumed = run_cli.run('experiments.digits', '--show=0',
                        *_flags(run_dir, train_steps=10, checkpoint_every=5, mode='train'))
  assert 'Resumed from' in resumed.stdout and 'step 10/10' in resumed.stdout


@pytest.mark.slow
def test_full_disk_stops_the_run_and_keeps_the_last_checkpoint(small_disk):
  run_dir = small_disk / 'run'
  flags = ['--show=0', *_flags(run_dir, train_steps=100000, mode='train')]
  process = run_cli.start('experiments.digits', *flags)
  run_cli.wait_for(process, r'step 15/')  # ckpt-10 is complete
  # Room for the two log lines (metrics.jsonl, summaries) at most that come
  # before the next checkpoint, not for a checkpoint (25 KB): whatever step
  # the run has reached, a checkpoint is the first write that fails.
  _fill(small_disk, leave=16 << 10)
  output = process.communicate(timeout=600)[0]
  assert process.returncode == 1 and 'Traceback' not in output, output[-3000:]
  kept = re.search(r'Could not write checkpoint \d+ .*No space left on device.* newest '
                   r'checkpoint kept is .*ckpt-(\d+)', output)
  assert kept, output[-3000:]
  assert not list(run_dir.glob('*_temp'))  # the partial write is gone
  os.remove(small_disk / 'filler')
  # However far the run got before the disk filled: ten steps more.
  step = int(kept.group(1))
  resumed = run_cli.run('experiments.digits', '--show=0',
                        *_flags(run_dir, train_steps=step + 10, mode='train'))
  assert re.search(rf'Resumed from .*ckpt-{step} at step {step}\.', resumed.stdout)
  assert f'step {step + 10}/{step + 10}' in resumed.stdout
