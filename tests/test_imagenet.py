"""experiments.imagenet on the real TFDS imagenet2012 builder, from ILSVRC tars."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tests import ilsvrc_fixture
from tests import run_cli

# Real processes throughout: not in the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow


def test_prepare_train_evaluate_export_from_a_tiny_manual_dir(tmp_path):
  written = ilsvrc_fixture.write_ilsvrc_manual_dir(
      tmp_path / 'manual', train_per_class=4, num_validation=6, corrupt_train=2)
  assert len(written['corrupt_train_files']) == 2
  flags = [f'--data_dir={tmp_path / "tfds"}', f'--manual_dir={tmp_path / "manual"}',
           f'--model_dir={tmp_path / "run"}', '--blocks=4x1/2, 8x1',
           '--image_size=32', '--batch_size=4', '--steps_per_loop=3',
           '--log_every=3', '--checkpoint_every=3', '--warmup_epochs=0']
  # 12 training images, 2 of them corrupt: 6 steps of 4 are two epochs.
  output = run_cli.run('experiments.imagenet', *flags, '--train_steps=6').stdout
  assert re.search(r'Training resnet_v2 .* on imagenet2012 with OneDeviceStrategy', output)
  assert 'step 6/6' in output
  assert '(4 so far in this run)' in output  # 2 corrupt images x 2 epochs
  assert re.search(r'eval at step 6: top-1 [\d.]+%, top-5 [\d.]+%, loss [\d.]+ on 6 '
                   r'images \(0 undecodable skipped\)', output)
  assert 'Exported the SavedModel' in output

  served = tf.saved_model.load(str(tmp_path / 'run' / 'export'))
  jpeg = (tmp_path / 'manual' / 'extracted_val.jpeg')
  with open(tmp_path / 'manual' / 'ILSVRC2012_img_val.tar', 'rb') as f:
    import tarfile  # pylint: disable=g-import-not-at-top
    with tarfile.open(fileobj=f) as tar:
      member = tar.getmembers()[0]
      jpeg.write_bytes(tar.extractfile(member).read())
  out = served.signatures['serving_default'](image_bytes=tf.constant([jpeg.read_bytes()]))
  assert out['probabilities'].shape == (1, 1000)
  np.testing.assert_allclose(np.sum(out['probabilities']), 1.0, rtol=1e-5)

  evaluated = run_cli.run('experiments.imagenet', *flags, '--mode=eval').stdout
  assert re.search(r'eval at step 6: .* on 6 images', evaluated)
  exported = run_cli.run('experiments.imagenet', *flags, '--mode=export',
                         f'--export_dir={tmp_path / "again"}').stdout
  assert 'Exported the SavedModel' in exported
  assert tf.saved_model.load(str(tmp_path / 'again')).signatures['serve_images'] is not None
