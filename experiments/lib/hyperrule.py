"""BiT-HyperRule: fine-tuning settings chosen from the size of the data.

Kolesnikov et al. 2020 ("Big Transfer (BiT)", `bit_hyperrule.py` in
google-research/big_transfer) fine-tune every task with one rule instead of
a search: SGD with momentum 0.9, learning rate 0.003 at batch 512, no weight
decay, a zero-initialised head, and, from the training set's size and image
area:

- resolution: images under 96x96 pixels are resized to 160 and randomly
  cropped to 128; larger ones to 512 and 480. Evaluation resizes to the crop
  size.
- schedule: 500 steps below 20k examples, 10k below 500k, else 20k; a linear
  warm-up (100, 500, 500 steps), then /10 at each of three boundaries
  ([200, 300, 400], [3000, 6000, 9000], [6000, 12000, 18000]).
- MixUp with alpha 0.1 from 20k examples on.

`choices` gives these as `Config` values, and `apply` fills them into a
config for its data, leaving alone what the user set. (BiT's own warm-up
starts at 0 and decays after a boundary step, where
`optimization.WarmupDecay` starts at 1/warmup and decays at it: the same
schedule, one step apart.)
"""

import dataclasses
import math

from absl import logging

from experiments.lib import config as config_lib
from experiments.lib import datasets

SMALL_IMAGE_AREA = 96 * 96


def choices(num_train, image_area):
  """BiT-HyperRule's settings for a training set.

  Args:
    num_train: Examples in the training split.
    image_area: Their typical height x width, in pixels.

  Returns:
    {Config field: value} for train_resize, image_size, train_steps,
    warmup_steps, lr_boundary_steps and mixup_alpha.
  """
  train_resize, crop = ((160, 128) if image_area < SMALL_IMAGE_AREA
                        else (512, 480))
  if num_train < 20_000:
    supports = (100, 200, 300, 400, 500)
  elif num_train < 500_000:
    supports = (500, 3000, 6000, 9000, 10_000)
  else:
    supports = (500, 6000, 12_000, 18_000, 20_000)
  return {'train_resize': train_resize, 'image_size': crop,
          'train_steps': supports[-1], 'warmup_steps': supports[0],
          'lr_boundary_steps': supports[1:-1],
          'mixup_alpha': 0.0 if num_train < 20_000 else 0.1}


def apply(config, explicit):
  """`config` with BiT-HyperRule's choices for its data where not `explicit`.

  Also sets the rule's preprocessing: the whole image resized to
  --train_resize and randomly cropped for training, resized to the crop for
  evaluation. A given --image_size keeps the rule's ratio of resize to crop;
  a given length (--train_steps or --train_epochs) replaces the rule's
  schedule. The choices are logged.

  Args:
    config: A `Config`.
    explicit: The fields set on the command line or by the run directory.

  Returns:
    (config, {field: value chosen}).

  Raises:
    errors.DataError: If the data cannot be read.
  """
  source = datasets.load_source(config.dataset, config.data_dir,
                                config.manual_dir, config.num_classes,
                                config.image_size)
  if config.examples_per_class:
    source = datasets.few_shot(source, config.examples_per_class,
                               config.seed or 0)
  area = datasets.typical_area(source)
  rule = dict(choices(source.num_train, area),
              train_preprocessing='resize_crop', eval_preprocessing='resize')
  if 'image_size' in explicit and 'train_resize' not in explicit:
    rule['train_resize'] = math.ceil(config.image_size * rule['train_resize']
                                     / rule['image_size'])
  if {'train_steps', 'train_epochs'} & set(explicit):
    for name in ('train_steps', 'warmup_steps', 'lr_boundary_steps'):
      del rule[name]
  chosen = {k: v for k, v in rule.items() if k not in explicit}
  logging.info('BiT-HyperRule for %d training images of about %d pixels: %s '
               '(a flag overrides each).', source.num_train, area,
               ' '.join(f'--{k}={config_lib.flag_text(v)}'
                        for k, v in chosen.items()))
  return dataclasses.replace(config, **chosen), chosen
