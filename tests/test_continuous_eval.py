"""--mode=continuous_eval: an evaluator process beside a training process.

Real processes on the tiny run (tests/tiny_run.py); each waits on a state (a
log line, an exit), never on time.
"""

import fcntl
import json
import os
import re
import sys
import textwrap
import threading

import tensorflow as tf

from experiments.lib import export
from experiments.lib import files
from experiments.lib import reporting
from launch import local
from tests import run_cli
from tests import tiny_run

ROW_KEYS = {'step', 'split', 'time', 'run', 'loss', 'top1', 'top5'}


def _digits(model_dir, **overrides):
  return ['--show=0', *tiny_run.flags(str(model_dir), **overrides)]


def _rows(model_dir, split):
  with open(model_dir / 'metrics.jsonl') as f:
    return [row for row in map(json.loads, f) if row['split'] == split]


def _summary_steps(directory, tag):
  """{events file: [steps of `tag`]} of the TensorBoard files in directory."""
  found = {}
  for name in sorted(os.listdir(directory)):
    found[name] = [
        event.step for event in tf.compat.v1.train.summary_iterator(
            os.path.join(directory, name))
        for value in event.summary.value if value.tag == tag]
  return found


def _finish(process, timeout=300):
  output = process.communicate(timeout=timeout)[0]
  return process.returncode, output


def test_an_evaluator_beside_a_trainer_evaluates_each_checkpoint_in_order(
    tmp_path):
  """The evaluator starts first and waits; the trainer takes the run's lock
  (it would be refused if the evaluator held it) and trains; the evaluator
  evaluates every checkpoint, records them as train_and_eval does, keeps the
  best export, and stops by itself at the final step."""
  run = dict(train_steps=40, keep_checkpoints=10)
  evaluator = run_cli.start('experiments.digits', *_digits(
      tmp_path, mode='continuous_eval', export_best='true', **run))
  try:
    run_cli.wait_for(evaluator, r'Evaluating each checkpoint of .* as it comes')
    code, output = _finish(run_cli.start('experiments.digits', *_digits(
        tmp_path, mode='train', **run)))
    assert code == 0, output[-3000:]
    code, output = _finish(evaluator)
  finally:
    evaluator.kill()
  assert code == 0, output[-3000:]
  assert 'Evaluated the final step 40' in output
  evals = _rows(tmp_path, 'eval')
  assert [row['step'] for row in evals] == [10, 20, 30, 40]
  assert all(set(row) == ROW_KEYS for row in evals)
  assert len({row['run'] for row in evals}) == 1
  assert [row['step'] for row in _rows(tmp_path, 'train')] == list(
      range(5, 45, 5))
  # TensorBoard: the evaluator's own event file holds the same steps.
  steps = [s for s in _summary_steps(tmp_path / 'eval', 'top1').values() if s]
  assert steps == [[10, 20, 30, 40]]
  assert len(os.listdir(tmp_path / 'train')) == 1  # The trainer's only.
  # The best export holds the first step with the best top-1.
  best = max(evals, key=lambda row: row['top1'])
  with open(tmp_path / 'best_export' / export.MARKER) as f:
    marker = json.load(f)
  assert (marker['step'], marker['top1']) == (best['step'], best['top1'])
  assert (tmp_path / 'best_export' / 'saved_model.pb').exists()
  assert not (tmp_path / 'run.lock').exists()


def test_a_deleted_checkpoint_is_skipped_and_no_new_one_times_out(tmp_path):
  """A trainer that died at step 25 of 40 (a NaN loss) left ckpt-10 and
  ckpt-20. ckpt-10's files are deleted while TF's `checkpoint` file still
  lists it, as --keep_checkpoints does under a running evaluator: it is
  skipped with a warning; ckpt-20 is evaluated; then no new checkpoint comes
  within --eval_timeout. A second evaluator goes on after step 20."""
  code, output = _finish(run_cli.start('experiments.digits', *_digits(
      tmp_path, mode='train', train_steps=40, fail_at_step=25)))
  assert code != 0 and 'at step 25' in output, output[-3000:]
  assert 'ckpt-10' in (tmp_path / 'checkpoint').read_text()
  for path in tmp_path.glob('ckpt-10.*'):
    path.unlink()
  result = run_cli.run('experiments.digits', *_digits(
      tmp_path, mode='continuous_eval', eval_timeout=2))
  assert re.search(r'Skipped checkpoint .*ckpt-10: it was deleted before it '
                   'could be read', result.stdout), result.stdout[-3000:]
  assert re.search(r'No new checkpoint in .* for 2s \(--eval_timeout\); '
                   'stopping after step 20', result.stdout)
  assert [row['step'] for row in _rows(tmp_path, 'eval')] == [20]

  again = run_cli.run('experiments.digits', *_digits(
      tmp_path, mode='continuous_eval', eval_timeout=1))
  assert 'after step 20 (metrics.jsonl has the ones before)' in again.stdout
  assert [row['step'] for row in _rows(tmp_path, 'eval')] == [20]


def test_export_best_refuses_a_directory_that_is_not_an_export(tmp_path):
  (tmp_path / 'best_export').mkdir()
  (tmp_path / 'best_export' / 'notes.txt').write_text('mine')
  result = run_cli.run('experiments.digits', *_digits(
      tmp_path, mode='continuous_eval', export_best='true', eval_timeout=1),
                       check=False)
  assert result.returncode == 1
  assert 'is not a SavedModel exported by resnet-v2' in result.stdout
  assert 'Traceback' not in result.stdout
  assert (tmp_path / 'best_export' / 'notes.txt').read_text() == 'mine'


def test_a_row_appended_while_metrics_jsonl_is_rewritten_is_kept(tmp_path):
  """A resuming trainer rewrites metrics.jsonl (a new file renamed over it)
  while the evaluator appends: the append waits for the rewrite, then goes
  into the new file."""
  path = tmp_path / 'metrics.jsonl'
  path.write_text(json.dumps({'step': 5, 'split': 'train'}) + '\n')
  reporter = reporting.Reporter(str(tmp_path), True, None, splits=('eval',))
  rewriter = os.open(path, os.O_RDWR)
  fcntl.flock(rewriter, fcntl.LOCK_EX)  # The trainer, mid-rewrite:
  kept = path.read_text()  # it has read the rows it keeps.
  appender = threading.Thread(target=reporter.write,
                              args=('eval', 10, {'top1': 0.5}))
  appender.start()
  appender.join(1.0)  # Unlocked, it would append now, to the old file.
  files.write_atomically(str(path), kept)
  os.close(rewriter)
  appender.join()
  assert [json.loads(line)['step'] for line in open(path)] == [5, 10]


def test_the_launcher_runs_an_evaluator_task_outside_the_cluster(tmp_path):
  """Plain Python tasks: the evaluator gets TF_CONFIG's evaluator task and
  --mode=continuous_eval; its failure does not stop the workers, and becomes
  the launcher's exit code once they finish."""
  script = tmp_path / 'task.py'
  script.write_text(textwrap.dedent('''\
      import json, os, pathlib, sys, time
      config = json.loads(os.environ['TF_CONFIG'])
      out = pathlib.Path(sys.argv[1])
      name = f"{config['task']['type']}.{config['task']['index']}"
      (out / name).write_text(json.dumps({'config': config,
                                          'argv': sys.argv[2:]}))
      if config['task']['type'] == 'evaluator':
        sys.exit(4)
      while not (out / 'evaluator.0').exists():
        time.sleep(0.02)
      print('trained')
      '''))
  result = run_cli.run('launch.local', '--workers=2', '--evaluator', '--',
                       sys.executable, str(script), str(tmp_path), '--mode=train',
                       check=False, timeout=60)
  assert result.returncode == 4, result.stdout
  seen = {name: json.loads((tmp_path / name).read_text())
          for name in ('worker.0', 'worker.1', 'evaluator.0')}
  cluster = seen['worker.0']['config']['cluster']
  assert list(cluster) == ['worker'] and len(cluster['worker']) == 2
  assert seen['evaluator.0']['config'] == {
      'cluster': cluster, 'task': {'type': 'evaluator', 'index': 0}}
  assert seen['evaluator.0']['argv'] == ['--mode=train',
                                         '--mode=continuous_eval']
  assert seen['worker.1']['argv'] == ['--mode=train']
  lines = result.stdout.splitlines()
  assert lines.count('[worker 0] trained') == 1
  assert lines.count('[worker 1] trained') == 1
  assert ('launch: evaluator died (exit code 4); the workers go on' in lines)
  assert ('launch: all workers finished, but the evaluator died (exit code 4)'
          in lines)
  assert json.loads(local.tf_config([1, 2], 0, 'evaluator'))['task'] == {
      'type': 'evaluator', 'index': 0}


def test_the_launcher_evaluates_a_multi_worker_run_beside_it(tmp_path):
  """Two real workers and a real evaluator through launch.local --evaluator."""
  process = run_cli.start(
      'launch.local', '--workers=2', '--evaluator', '--grace_period=3', '--',
      sys.executable, '-m', 'experiments.digits', '--strategy=multi_worker',
      '--startup_timeout=120', *_digits(tmp_path, mode='train',
                                        train_steps=20))
  code, output = _finish(process, timeout=600)
  assert code == 0, output[-4000:]
  assert re.search(r'\[evaluator\] .*eval at step 10:', output)
  assert re.search(r'\[evaluator\] .*Evaluated the final step 20', output)
  assert not re.search(r'\[worker \d\] .*eval at step', output)
  assert 'launch: all workers finished' in output
  assert [row['step'] for row in _rows(tmp_path, 'eval')] == [10, 20]
