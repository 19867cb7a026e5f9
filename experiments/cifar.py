"""The paper's pre-activation ResNets on CIFAR-10/100 (TFDS cifar10, cifar100).

    python -m experiments.cifar --depth=164 --dataset=cifar10 --model_dir=...
    python -m experiments.cifar --depth=1001 --warmup_lr=0.01 ...

He et al. 2016, section 4: three stages of bottleneck units of widths
16/32/64 (outputs 64/128/256) at 32x32, 16x16 and 8x8, depth 9n+2, after a
3x3 conv stem (no root block). Defaults are the paper's recipe: batch 128,
learning rate 0.1, divided by 10 at 32k and 48k steps, stopped at 64k (~164
epochs), weight decay 1e-4, momentum 0.9, 4-pixel zero padding with random
32x32 crops and flips. Very deep nets (depth >= 1001) warm up at 0.01 for the
first 400 steps unless --warmup_steps is given.
"""

import dataclasses

from absl import flags

from experiments.lib import cli
from experiments.lib import network
from experiments.lib.config import Config

cli.define_flags(Config(
    dataset='cifar10', depth=164, stem='cifar', image_size=32,
    model_dir='/tmp/resnet_v2_cifar', mode='train_and_eval',
    train_steps=64_000, batch_size=128, base_lr=0.1, lr_reference_batch=128,
    lr_decay='step', lr_boundary_steps=(32_000, 48_000), warmup_epochs=0,
    momentum=0.9, weight_decay=1e-4, steps_per_loop=100, log_every=100,
    checkpoint_every=2000))


def main(argv):
  del argv
  config = cli.parsed_config()
  deep = (network.kind(config.network) == 'depth'
          and int(config.network) >= 1001)
  if deep and not flags.FLAGS['warmup_steps'].present:
    config = dataclasses.replace(config, warmup_steps=400, warmup_lr=0.01)
  cli.run(config)


def run_main():
  """The console script resnet-v2-cifar."""
  cli.run_main(__doc__, main)


if __name__ == '__main__':
  run_main()
