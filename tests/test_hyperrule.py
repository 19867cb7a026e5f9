"""BiT-HyperRule's schedule at a given length, and the recipe a fine-tune shows."""

import dataclasses

import numpy as np
import pytest

from experiments.lib import data
from experiments.lib import hyperrule
from experiments.lib import optimization
from experiments.lib.config import Config
from tests import digit_folders

# The README's measured transfer: 25 images (5 per class), batch 64.
GIVEN = dict(examples_per_class=5, batch_size=64, base_lr=0.03, lr_reference_batch=64)
FINETUNE_DEFAULTS = dict(network='16x2/2, 32x2', lr_decay='step', warmup_epochs=0,
                         zero_head=True)


@pytest.fixture(scope='module')
def target(tmp_path_factory):
  return str(digit_folders.write(tmp_path_factory.mktemp('data') / 'digits_5_9',
                                 range(5, 10)))


def _applied(target, **flags):
  given = dict(GIVEN, dataset=target, **flags)
  return hyperrule.apply(Config(**given, **FINETUNE_DEFAULTS), set(given))[0]


def _rates(config):
  total = optimization.total_steps(config, 25)
  schedule = optimization.make_schedule(
      dataclasses.replace(config, train_steps=total, train_epochs=None), 25)
  return np.array([float(schedule(step)) for step in range(total)])


@pytest.mark.parametrize('length, total', [(dict(train_steps=200), 200),
                                           (dict(train_epochs=400), 157)])
def test_a_given_length_scales_bits_schedule(target, length, total):
  """BiT's 500 steps (warm-up 100, /10 at 200, 300, 400) squeezed into the
  given length, read from the schedule the run builds."""
  rates = _rates(_applied(target, **length))
  assert len(rates) == total  # 400 epochs of 25 images at batch 64: 157 steps
  warm, decays = round(total / 5), [round(total * k / 5) for k in (2, 3, 4)]
  assert np.all(np.diff(rates[:warm]) > 0) and rates[0] < 0.03 / 10
  np.testing.assert_allclose(rates[warm:decays[0]], 0.03, rtol=1e-6)
  for k, (start, end) in enumerate(zip(decays, decays[1:] + [total]), 1):
    np.testing.assert_allclose(rates[start:end], 0.03 * 0.1 ** k, rtol=1e-5)


def test_given_schedule_flags_win_over_the_scaled_rule(target):
  rates = _rates(_applied(target, train_steps=100, warmup_steps=0,
                          lr_boundary_steps=(90,)))
  np.testing.assert_allclose(rates[:90], 0.03, rtol=1e-6)
  np.testing.assert_allclose(rates[90:], 0.003, rtol=1e-5)
  in_epochs = _rates(_applied(target, train_steps=100, lr_boundary_epochs=(128,)))
  np.testing.assert_allclose(in_epochs[20:50], 0.03, rtol=1e-6)  # 128 epochs = step 50
  np.testing.assert_allclose(in_epochs[50:], 0.003, rtol=1e-5)


def test_the_recipe_shows_every_entry_and_where_it_came_from(target):
  given = dict(GIVEN, dataset=target, image_size=8, train_steps=200, batch_split=4)
  config = hyperrule.apply(Config(**given, **FINETUNE_DEFAULTS), set(given))[0]
  source = data.few_shot(data.load_source(target), 5, 0)
  lines = {line.split()[0]: line for line in hyperrule.recipe(config, set(given), source)}
  expected = {
      'train': ('resized to 10, random 8x8 crop', 'flag --image_size'),
      'flips': ("on (the data's own)", 'rule'),
      'eval': ('resized to 8', 'flag --image_size'),
      'steps': ('200', 'flag --train_steps'),
      'warm-up': ('40 steps', 'rule'),
      'decay': ('x0.1 at steps 80, 120, 160', 'rule'),
      'learning': ('0.03 (0.03 per 64 images, at batch 64)',
                   'flag --base_lr --lr_reference_batch --batch_size'),
      'batch': ('64 in 4 micro-batches of 16', 'flag --batch_size --batch_split'),
      'mixup': ('off', 'rule'),
      'trains': ('every weight', 'rule'),
      'head': ('zeros', 'rule'),
  }
  assert set(lines) == set(expected)
  for name, (value, origin) in expected.items():
    assert value in lines[name] and lines[name].endswith(origin), lines[name]
