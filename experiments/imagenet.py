"""ResNet v2 on ImageNet (TFDS imagenet2012, 1000 classes), the standard recipe.

    python -m experiments.imagenet --depth=101 --data_dir=... --model_dir=...

Defaults: SGD with momentum 0.9; learning rate 0.1 per 256 images, scaled
linearly with the global --batch_size; 5 epochs of linear warm-up, then
cosine decay (or --lr_decay=step: /10 at epochs 30, 60, 80); slim's weight
decay 1e-4 on conv kernels only; 90 epochs; Inception-style random-resized
crops and flips for training; the central 224 of the 256-equivalent for
evaluation. ImageNet must be prepared by TFDS from the two ILSVRC2012 tars
(see --manual_dir); --dataset=synthetic measures speed without data.
"""

from experiments.lib import cli
from experiments.lib.config import Config

cli.define_flags(Config(
    dataset='imagenet2012', depth=50, stem='imagenet', image_size=224,
    model_dir='/tmp/resnet_v2_imagenet', mode='train_and_eval',
    train_epochs=90, batch_size=256, base_lr=0.1, lr_reference_batch=256,
    warmup_epochs=5, lr_decay='cosine', lr_boundary_epochs=(30, 60, 80),
    momentum=0.9, weight_decay=1e-4, label_smoothing=0.0,
    steps_per_loop=500, log_every=500, checkpoint_every=5000, eval_every=0))


def run_main():
  """The console script resnet-v2-imagenet."""
  cli.run_main(__doc__)


if __name__ == '__main__':
  run_main()
