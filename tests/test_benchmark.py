"""The benchmark script runs end to end and writes the JSON the README reports.

Small images and few repetitions: this checks that the command works and what
it records, not speed (speed lives in the benchmark's own tables).
"""

import json

import pytest

from tests import run_cli

# Real processes throughout: not in the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow


def test_benchmark_writes_pairs_depths_and_input(tmp_path):
  output = tmp_path / 'benchmark.json'
  result = run_cli.run(
      'experiments.benchmark', '--sections=pairs,depths,input',
      '--image_size=32', '--batch_size=2', '--repeats=2', '--warmup=1',
      '--precisions=float32', '--xla=false', '--depths=50',
      '--train_batches=2', '--infer_batches=1', f'--output={output}')
  results = json.loads(output.read_text())

  assert [(row['mode'], row['xla']) for row in results['pairs']] == [
      ('train', False), ('infer', False)]
  for row in results['pairs']:
    assert len(row['ours_samples']) == len(row['keras_samples']) == 2
    assert row['ratio_min'] <= row['ratio'] <= row['ratio_max']
    assert row['ours'] > 0 and row['keras'] > 0
  assert [(row['mode'], row['batch']) for row in results['depths']['rows']] == [
      ('train', 2), ('infer', 1)]
  assert len(results['input']) == 5  # with BiT-HyperRule's fine-tuning pipelines
  assert any('resize 512 + random crop 480' in row['pipeline'] for row in results['input'])
  sources = results['sources']
  assert [(row['source'], row['preprocessing']) for row in sources['rows']] == [
      ('folder', 'training'), ('folder', 'evaluation'),
      ('shards', 'training'), ('shards', 'evaluation')]
  assert all(row['images_per_second'] > 0 and row['one_core'] > 0
             for row in sources['rows'])
  assert sources['converter_images_per_second'] > 0
  assert results['machine']['cores'] >= 1
  assert 'over repetitions' in result.stdout


def test_memory_section_measures_each_case_in_its_own_process(tmp_path):
  output = tmp_path / 'benchmark.json'
  result = run_cli.run('experiments.benchmark', '--sections=memory',
                       '--memory_cases=20:32:4', f'--output={output}')
  rows = json.loads(output.read_text())['memory']
  assert [(row['depth'], row['recompute_grad'], row['batch_split']) for row in rows] == [
      (20, False, 1), (20, True, 1), (20, False, 4)]
  for row in rows:
    assert 0.2 < row['peak_rss_gb'] < 8 and row['step_seconds'] > 0
    assert not row['stopped_at_limit']
  assert 'recompute_grad=True' in result.stdout and 'batch_split=4' in result.stdout

