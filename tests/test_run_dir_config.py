"""Settings a run cannot use end in one clear paragraph, not in a traceback or
in lost work; and a run directory's config.json reads the same from any
working directory, and is written only by a run that started."""

import dataclasses
import json
import os

import pytest
from safetensors.numpy import save_file
import numpy as np

from experiments.lib import data
from experiments.lib import hyperrule
from experiments.lib import saved_config
from experiments.lib.config import Config
from experiments.lib.errors import FlagError
from tests import digit_folders
from tests import run_cli
from tests import tiny_run


def _refused(result, message):
  """The command failed with one paragraph that says `message`."""
  assert result.returncode == 1, result.stdout[-3000:]
  assert 'Traceback' not in result.stdout, result.stdout[-3000:]
  errors = [line for line in result.stdout.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], result.stdout[-3000:]
  return errors[0]


def test_train_resize_below_the_crop_is_refused():
  """--train_resize below --image_size would make every crop fail, so every
  image would be skipped as undecodable: refused, also where the image size
  is filled in later (from the data, the network or BiT-HyperRule)."""
  run = dict(blocks='4x1', dataset='digits', train_preprocessing='resize_crop')
  with pytest.raises(FlagError, match='--train_resize=20 is below --image_size=32'):
    Config(**run, train_resize=20, image_size=32)
  # The image size the run resolves from its data or network.
  with pytest.raises(FlagError, match='--train_resize=20 is below --image_size=32'):
    dataclasses.replace(Config(**run, train_resize=20), image_size=32)
  Config(**run, train_resize=32, image_size=32)  # A crop of the whole image.
  Config(blocks='4x1', train_resize=4, image_size=32)  # Not resize_crop: unused.
  # BiT-HyperRule's choices pass; a given --train_resize below its crop does not.
  fine_tune = dict(blocks='4x1', dataset='digits', train_steps=10)
  config, _ = hyperrule.apply(Config(**fine_tune), {'train_steps'})
  assert config.train_resize >= config.image_size
  with pytest.raises(FlagError, match='--train_resize=100 is below --image_size=128'):
    hyperrule.apply(Config(**fine_tune, train_resize=100), {'train_steps', 'train_resize'})


def test_a_mistyped_pretrained_name_is_called_one():
  with pytest.raises(FlagError) as raised:
    Config(network='bit_r50x1x')
  message = str(raised.value)
  assert message.startswith("--network='bit_r50x1x': not a known pretrained name")
  assert 'did you mean bit_r50x1' in message and 'resnet_v2.list_models()' in message
  with pytest.raises(FlagError, match=r"--blocks='64x3/2, 128x'"):
    Config(blocks='64x3/2, 128x')  # A block spec is still one.


def test_a_truncated_safetensors_file_is_one_paragraph(tmp_path):
  save_file({'stem/conv/weight': np.ones((64, 3, 7, 7), np.float32)},
            tmp_path / 'whole.safetensors')
  whole = (tmp_path / 'whole.safetensors').read_bytes()
  (tmp_path / 'truncated.safetensors').write_bytes(whole[:len(whole) // 2])
  result = run_cli.run('experiments.finetune', '--network=timm_resnetv2_50',
                       f'--init_checkpoint={tmp_path / "truncated.safetensors"}',
                       '--dataset=digits', '--image_size=32', '--train_steps=1',
                       '--batch_size=8', f'--model_dir={tmp_path / "run"}', check=False)
  _refused(result, 'truncated.safetensors cannot be read as weights')
  assert not (tmp_path / 'run').exists()  # Nothing left to refuse the next command.


def test_a_run_that_fails_before_it_starts_leaves_nothing(tmp_path):
  """No config.json that would refuse the corrected command, and no empty
  directory of its own; a directory that was there already stays."""
  (tmp_path / 'junk.ckpt').write_bytes(b'not weights')
  (tmp_path / 'there').mkdir()
  for model_dir in (tmp_path / 'new' / 'run', tmp_path / 'there'):
    result = run_cli.run('experiments.digits', *tiny_run.flags(
        model_dir, init_checkpoint=tmp_path / 'junk.ckpt', train_steps=2), check=False)
    _refused(result, 'is not a weight file this library reads')
  assert not (tmp_path / 'new').exists()
  assert (tmp_path / 'there').is_dir() and not os.listdir(tmp_path / 'there')
  # The corrected command, with another network, trains in the same directory.
  output = run_cli.run('experiments.digits', *tiny_run.flags(
      tmp_path / 'new' / 'run', blocks='4x1', train_steps=2, mode='train')).stdout
  assert 'step 2/2' in output
  assert json.loads((tmp_path / 'new' / 'run' / 'config.json').read_text())['blocks'] == '4x1'


def test_a_model_dir_that_is_a_file_is_one_paragraph(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  for model_dir in (tmp_path / 'notes.txt', tmp_path / 'notes.txt' / 'run'):
    result = run_cli.run('experiments.digits', *tiny_run.flags(model_dir, train_steps=2),
                         check=False)
    _refused(result, 'cannot be made a directory (a file is in the way')
  assert (tmp_path / 'notes.txt').read_text() == 'mine'


def test_describe_with_a_bad_block_spec_is_one_paragraph():
  result = run_cli.run('experiments.describe', '--blocks=64x3/2, 128x', check=False)
  _refused(result, "--blocks='64x3/2, 128x': Block spec")


def test_a_dataset_folder_is_saved_absolute(tmp_path):
  """A run made with a relative --dataset folder is evaluated from another
  working directory, the folder given as its absolute path."""
  digit_folders.write(tmp_path / 'digits_0_2', range(3), train_per_class=8)
  run = tmp_path / 'run'
  run_cli.run('experiments.digits', *tiny_run.flags(
      run, dataset='digits_0_2', image_size=8, train_steps=2, mode='train'), cwd=tmp_path)
  saved = json.loads((run / 'config.json').read_text())
  assert saved['dataset'] == str(tmp_path / 'digits_0_2')
  output = run_cli.run('experiments.digits', '--mode=eval', f'--model_dir={run}',
                       f'--dataset={tmp_path / "digits_0_2"}').stdout  # From the repository.
  assert 'eval at step 2' in output


def test_a_dataset_is_compared_as_it_reads(tmp_path, monkeypatch):
  """Saved relative by an earlier version or absolute now, the same folder is
  the same --dataset; names and remote paths are not paths."""
  (tmp_path / 'flowers').mkdir()
  monkeypatch.chdir(tmp_path)
  assert data.absolute('flowers') == str(tmp_path / 'flowers')
  for name in ('digits', 'imagenet2012', 'synthetic', 'gs://bucket/flowers', 'ram://x'):
    assert data.absolute(name) == name
  for given, was in (('flowers', str(tmp_path / 'flowers')),
                     (str(tmp_path / 'flowers'), 'flowers'),
                     ('./flowers/', 'flowers')):
    merged = saved_config.merge({'dataset': given}, {'dataset'}, {'dataset': was}, 'run')
    assert merged['dataset'] == given
  with pytest.raises(FlagError, match="--dataset='digits' differs"):
    saved_config.merge({'dataset': 'digits'}, {'dataset'},
                       {'dataset': str(tmp_path / 'flowers')}, 'run')
