"""Prints the layer table of ResNet v2 networks, by depth or block spec.

    python -m experiments.describe                       # resnet_v2_50 + a custom spec
    python -m experiments.describe --depth=101 --num_classes=1001
    python -m experiments.describe --blocks='16x18/2, 32x18/2, 64x18' --image_size=32
    python -m experiments.describe --blocks='8x1/2, 16x1' --image_size=32 --plot=net.png

The table names each layer by its weights' full slim path (Keras's
`model.summary()` cuts names to its column width). --plot draws the
network with `keras.utils.plot_model`, which needs pydot (the [plot]
extra) and Graphviz's `dot` program.
"""

import sys

from absl import app
from absl import flags
import keras

import resnet_v2

from experiments.lib.errors import FlagError
from experiments.lib.errors import UserError

_DEPTH = flags.DEFINE_enum(
    'depth', None, [str(d) for d in resnet_v2.registered_depths()],
    'A registered depth.')
_BLOCKS = flags.DEFINE_string(
    'blocks', None, "A block spec as text, e.g. '16x2/2, 32x2/2, 64x2' (see "
    'resnet_v2.parse_blocks).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 1001, 'Logits width; 0 for features.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Input height and width.')
_PLOT = flags.DEFINE_string(
    'plot', None, 'Also draw the network (one: --depth or --blocks) into this '
    'image file (.png, .svg, .pdf) with keras.utils.plot_model.')


def main(argv):
  del argv
  try:
    describe()
  except UserError as e:
    sys.exit(f'error: {e}')


def _parse_blocks(text):
  """The blocks of --blocks, or a FlagError naming the flag."""
  try:
    return resnet_v2.parse_blocks(text)
  except ValueError as e:
    raise FlagError(f'--blocks={text!r}: {e}') from None


def describe():
  """Prints (and draws) the networks the flags name.

  Raises:
    FlagError: If --blocks does not parse, a network cannot be built at
      --image_size, or --plot is given for two networks or none.
  """
  specs = []
  if _DEPTH.value is not None:
    specs.append(int(_DEPTH.value))
  if _BLOCKS.value is not None:
    specs.append(_parse_blocks(_BLOCKS.value))
  if _PLOT.value and len(specs) != 1:
    raise FlagError('--plot draws one network: give --depth or --blocks, not '
                    'both or neither.')
  if not specs:  # The embedded default: a standard depth and a custom spec.
    specs = [50, resnet_v2.parse_blocks('16x2/2, 32x2/2, 64x2')]
  for spec in specs:
    try:
      model = resnet_v2.build_model(
          spec, _NUM_CLASSES.value or None,
          input_shape=(_IMAGE_SIZE.value, _IMAGE_SIZE.value, 3))
    except ValueError as e:
      raise FlagError(f'The network cannot be built: {e}') from None
    if not isinstance(spec, int):
      print(f'Block spec: {resnet_v2.format_blocks(spec)}')
    print(resnet_v2.layer_table(model), end='\n\n')
    if _PLOT.value:
      plot(model, _PLOT.value)


def plot(model, path):
  """Draws `model` into `path`, or exits with what to install.

  Args:
    model: A `keras.Model`.
    path: The image file; its extension picks the format.
  """
  try:
    keras.utils.plot_model(model, to_file=path, show_shapes=True,
                           show_layer_names=True, dpi=72)
  except ImportError:  # Keras's message names only one of the two.
    sys.exit("error: --plot needs pydot and Graphviz's dot program: pip "
             "install 'resnet-v2[plot]' (or pydot), and install Graphviz "
             '(apt install graphviz, brew install graphviz or '
             'https://graphviz.org/download/).')
  print(f'Drew {model.name} into {path}.')


def run_main():
  """The console script resnet-v2-describe."""
  app.run(main)


if __name__ == '__main__':
  run_main()
