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
config for its data, leaving alone what the user set, and logs the whole
recipe (`recipe`). (BiT's own warm-up
starts at 0 and decays after a boundary step, where
`optimization.WarmupDecay` starts at 1/warmup and decays at it: the same
schedule, one step apart.)
"""

import dataclasses
import math

from absl import logging

from experiments.lib import data
from experiments.lib import optimization

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
  evaluation. A given --image_size keeps the rule's ratio of resize to crop.
  A given length (--train_steps or --train_epochs) keeps the rule's shape of
  schedule, scaled to that length: BiT warms up for the first 1/5 of its 500
  steps and decays at 2/5, 3/5 and 4/5 (1/20, then 3/10, 6/10 and 9/10 of
  the longer ones), and so does a 200-step fine-tune. (Dropping them would
  leave ImageNet's schedule: decays at epochs 30, 60 and 80 of a small
  data set, i.e. after a few steps.) The whole recipe is logged, each entry
  marked as the rule's or a flag's.

  Args:
    config: A `Config`.
    explicit: The fields set on the command line or by the run directory.

  Returns:
    (config, {field: value chosen}).

  Raises:
    errors.DataError: If the data cannot be read.
  """
  source = data.load_source(config.dataset, config.data_dir,
                            config.manual_dir, config.num_classes,
                            config.image_size, run_dir=config.model_dir)
  if config.examples_per_class:
    source = data.few_shot(source, config.examples_per_class,
                           config.seed or 0)
  area = data.typical_area(source)
  rule = dict(choices(source.num_train, area),
              train_preprocessing='resize_crop', eval_preprocessing='resize')
  if 'image_size' in explicit and 'train_resize' not in explicit:
    rule['train_resize'] = math.ceil(config.image_size * rule['train_resize']
                                     / rule['image_size'])
  if {'train_steps', 'train_epochs'} & set(explicit):
    scale = (optimization.total_steps(config, source.num_train)
             / rule.pop('train_steps'))
    rule['warmup_steps'] = round(rule['warmup_steps'] * scale)
    rule['lr_boundary_steps'] = tuple(round(b * scale)
                                      for b in rule['lr_boundary_steps'])
  given = set(explicit) | {steps for epochs, steps in _SPELLED_IN_EPOCHS
                           if epochs in explicit}
  chosen = {k: v for k, v in rule.items() if k not in given}
  config = dataclasses.replace(config, **chosen)
  logging.info('BiT-HyperRule for %d training images of about %d pixels '
               '(each entry is the rule\'s choice or a flag\'s):\n%s',
               source.num_train, area,
               '\n'.join(recipe(config, explicit, source)))
  return config, chosen


# A length in epochs, where given, stands for the rule's length in steps.
_SPELLED_IN_EPOCHS = (('warmup_epochs', 'warmup_steps'),
                      ('lr_boundary_epochs', 'lr_boundary_steps'))

_TRAINS = {'all': 'every weight',
           'head': 'the head only (a linear probe, BatchNorm frozen)',
           'last_block': 'the last block, postnorm and the head'}


def recipe(config, explicit, source):
  """The fine-tuning recipe that `config` runs, as lines of a table.

  Users who set --image_size or --train_steps most need to see what follows
  from it (the crop, the schedule, the rate at their batch), so every entry
  is shown, from the schedule the run will build.

  Args:
    config: The `Config` after `apply`.
    explicit: The fields set on the command line or by the run directory.
    source: The training data's `data.Source`.

  Returns:
    Lines 'name  value  rule|flag --names'.
  """
  def given(*fields):
    flags = [f'--{f}' for f in fields if f in explicit]
    return 'flag ' + ' '.join(flags) if flags else 'rule'

  total = optimization.total_steps(config, source.num_train)
  schedule = optimization.make_schedule(
      dataclasses.replace(config, train_steps=total, train_epochs=None),
      source.num_train)
  decay = {'step': ('x0.1 at steps ' + ', '.join(map(str, schedule.boundaries))
                    if schedule.boundaries else 'none'),
           'cosine': f'cosine to 0 at step {total}',
           'constant': 'none'}[config.lr_decay]
  epochs = f' ({config.train_epochs:g} epochs)' if config.train_epochs else ''
  split = (f' in {config.batch_split} micro-batches of '
           f'{config.batch_size // config.batch_split}'
           if config.batch_split > 1 else '')
  flip = source.flip if config.random_flip is None else config.random_flip
  rows = [
      ('train images', f'resized to {config.train_resize}, random '
       f'{config.image_size}x{config.image_size} crop', given(
           'train_resize', 'image_size', 'train_preprocessing')),
      ('flips', ('on' if flip else 'off') + (
          " (the data's own)" if config.random_flip is None else ''),
       given('random_flip')),
      ('eval images', f'resized to {config.image_size}',
       given('eval_preprocessing', 'image_size')),
      ('steps', f'{total}{epochs}', given('train_steps', 'train_epochs')),
      ('warm-up', f'{schedule.warmup_steps} steps, linear',
       given('warmup_steps', 'warmup_epochs')),
      ('decay', decay, given('lr_decay', 'lr_boundary_steps',
                             'lr_boundary_epochs')),
      ('learning rate', f'{schedule.base_lr:.4g} ({config.base_lr:g} per '
       f'{config.lr_reference_batch} images, at batch {config.batch_size})',
       given('base_lr', 'lr_reference_batch', 'batch_size')),
      ('batch', f'{config.batch_size}{split}',
       given('batch_size', 'batch_split')),
      ('mixup', f'alpha {config.mixup_alpha:g}' if config.mixup_alpha
       else 'off', given('mixup_alpha')),
      ('trains', _TRAINS[config.trainable], given('trainable')),
      ('head', 'zeros' if config.zero_head else
       ('the published one' if config.pretrained else "--init_checkpoint's")
       + ' if it fits, else initialized', given('zero_head')),
  ]
  return [f'  {name:<14} {value:<52} {origin}' for name, value, origin in rows]
