"""Fine-tunes a pretrained ResNet v2 on your images, with BiT-HyperRule.

    python -m experiments.finetune --network=bit_r50x1 --pretrained \\
        --dataset=/path/to/folder --model_dir=/tmp/my_classifier

--dataset is a folder of class sub-folders (or train/ and validation/ with
them), or a TFDS name; --network any name of `resnet_v2.list_models()` with
--pretrained (its published weights, fetched once into $RESNET_V2_HOME) or
a weight file of its family as --init_checkpoint, a --depth or --blocks
network with a tf-slim checkpoint, or any network with a run directory of
ours as --init_checkpoint. The defaults are BiT-HyperRule (Kolesnikov et
al. 2020): SGD with momentum 0.9, 0.003 per 512 images, batch 512, no
weight decay, a zero head; and, from the training set's size and image
area, the resolution (resize 160 and crop 128 below 96x96 pixels, else 512
and 480), the length (500, 10k or 20k steps), the warm-up and decays, and
MixUp from 20k examples.
The choices are printed at the start; each is a flag to override, e.g.
--batch_size=64 --batch_split=4 on a small machine, or --trainable=head for
a linear probe. The run exports a SavedModel with the folders' class names.
"""

from absl import logging

from experiments.lib import cli
from experiments.lib import hyperrule
from experiments.lib.config import Config

cli.define_flags(Config(
    network='bit_r50x1', dataset='digits', model_dir='/tmp/resnet_v2_finetune',
    mode='train_and_eval', batch_size=512, base_lr=0.003,
    lr_reference_batch=512, lr_decay='step', warmup_epochs=0, momentum=0.9,
    weight_decay=0.0, zero_head=True, steps_per_loop=50, log_every=50,
    checkpoint_every=500))


def main(argv):
  del argv
  config = cli.parsed_config()
  if not (config.init_checkpoint or config.pretrained):
    logging.warning('Neither --pretrained nor --init_checkpoint: '
                    'fine-tuning starts from random weights (or from the run '
                    'directory\'s checkpoint).')
  config, _ = cli.user_errors(hyperrule.apply, config, cli.explicit_fields())
  cli.run(config)


def run_main():
  """The console script resnet-v2-finetune."""
  cli.run_main(__doc__, main)


if __name__ == '__main__':
  run_main()
