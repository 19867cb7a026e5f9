"""--network=module:function trains, evaluates and exports a network from user code."""

import os
import re
import textwrap

import pytest
import tensorflow as tf

from tests import run_cli

# Real processes throughout: not in the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow


def _readme_example():
  """The README's complete example file, my_net.py, as it is written there."""
  with open(os.path.join(run_cli.ROOT, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  return re.search(r"A complete example, `my_net.py`:\n\n```python\n(.*?)```", readme,
                   re.S).group(1)


# The README's example, plus a full network function.
USER_CODE = _readme_example() + textwrap.dedent('''


    def my_network(inputs, num_classes, is_training=None, scope=None, **kwargs):
      """A full slim-style network function (its own stem)."""
      net = resnet_v2.conv2d(inputs, 8, 3, activation_fn=None, normalizer_fn=None,
                             scope='stem')
      return resnet_v2.resnet_v2(net, resnet_v2.parse_blocks('4x1'), num_classes,
                                 is_training=is_training, include_root_block=False,
                                 scope=scope, **kwargs)
''')

TINY = ['--batch_size=32', '--train_steps=4', '--steps_per_loop=2', '--log_every=2',
        '--show=0', '--precision=float32']


def test_blocks_from_user_code_train_and_export(tmp_path):
  (tmp_path / 'my_net.py').write_text(USER_CODE)
  run = tmp_path / 'run'
  output = run_cli.run('experiments.digits', '--network=my_net:my_blocks', '--stem=cifar',
                       f'--model_dir={run}', *TINY, cwd=tmp_path).stdout
  assert 'step 4/4' in output and 'Exported the SavedModel' in output
  loaded = tf.saved_model.load(str(run / 'export'))
  served = loaded.signatures['serve_images']
  assert served(images=tf.zeros([1, 8, 8, 3]))['probabilities'].shape == (1, 10)
  assert any('block2/unit_2/wide_basic/conv1' in v.name for v in loaded.weights)
  # A later command on the run directory remembers --network.
  output = run_cli.run('experiments.digits', '--mode=eval', f'--model_dir={run}', '--show=0',
                       cwd=tmp_path).stdout
  assert 'eval at step 4' in output


def test_a_network_function_from_user_code(tmp_path):
  (tmp_path / 'my_net.py').write_text(USER_CODE)
  output = run_cli.run('experiments.digits', '--network=my_net:my_network', '--stem=none',
                       f'--model_dir={tmp_path / "run"}', *TINY, cwd=tmp_path).stdout
  assert 'step 4/4' in output


def test_bad_network_hooks_are_one_paragraph_errors(tmp_path):
  (tmp_path / 'my_net.py').write_text(USER_CODE)
  for flag, message in [('--network=my_net', "expected 'module:function'"),
                        ('--network=no_such_module:f', "cannot import 'no_such_module'"),
                        ('--network=my_net:nothing', "has no function 'nothing'"),
                        ('--network=my_net:my_network', "use stem='none'")]:
    result = run_cli.run('experiments.digits', flag, '--stem=cifar',
                         f'--model_dir={tmp_path / "bad"}', cwd=tmp_path, check=False)
    assert result.returncode == 1 and message in result.stdout, result.stdout[-2000:]
    assert 'Traceback' not in result.stdout
