"""Block specs written as text, for flags and configs; parsed without eval.

A spec is a comma-separated list of blocks, each `BASExUNITS` or
`BASExUNITS/STRIDE`: UNITS bottleneck units of bottleneck depth BASE and
output depth 4*BASE, the last of them with stride STRIDE (default 1). Blocks
are named block1, block2, ... ResNet-50's body is

    64x3/2, 128x4/2, 256x6/2, 512x3

and the paper's CIFAR ResNet-164 (three stages of 18 units) is

    16x18/2, 32x18/2, 64x18
"""

import re

from resnet_v2 import nets

_BLOCK = re.compile(r'^(\d+)\s*x\s*(\d+)(?:\s*/\s*(\d+))?$')


def parse_blocks(text):
  """Parses a text block spec.

  Args:
    text: E.g. '16x2/2, 32x2'.

  Returns:
    A list of `Block`s named block1, block2, ...

  Raises:
    ValueError: Naming the malformed part and the expected form.
  """
  if not isinstance(text, str) or not text.strip():
    raise ValueError(f'A block spec must be non-empty text like '
                     f"'64x3/2, 128x4/2, 256x6/2, 512x3', got {text!r}.")
  blocks = []
  for index, part in enumerate(text.split(',')):
    match = _BLOCK.match(part.strip())
    if not match:
      raise ValueError(
          f'Block spec {text!r}: block {index + 1} is {part.strip()!r}; '
          'each block must be BASExUNITS or BASExUNITS/STRIDE with positive '
          "integers, e.g. '64x3/2' (3 units of bottleneck depth 64, the last "
          'with stride 2).')
    base_depth, num_units, stride = (int(g) if g else 1 for g in match.groups())
    blocks.append(nets.resnet_v2_block(f'block{index + 1}', base_depth,
                                       num_units, stride))
  return blocks


def format_blocks(blocks):
  """Returns the text spec of `resnet_v2_block`-style blocks.

  Args:
    blocks: A list of `Block`s whose units share depths and carry a stride
      only in the last unit, like those `parse_blocks` returns.

  Returns:
    The text spec, e.g. '64x3/2, 128x4/2, 256x6/2, 512x3'.

  Raises:
    ValueError: If a block cannot be written in the text form.
  """
  parts = []
  for block in blocks:
    units = [dict(zip(('depth', 'depth_bottleneck', 'stride'), u))
             if isinstance(u, (tuple, list)) else u for u in block.args]
    base, stride = units[0]['depth_bottleneck'], units[-1].get('stride', 1)
    expected = [{'depth': 4 * base, 'depth_bottleneck': base, 'stride': 1}
               ] * (len(units) - 1) + [
                   {'depth': 4 * base, 'depth_bottleneck': base,
                    'stride': stride}]
    if [dict({'stride': 1}, **u) for u in units] != expected:
      raise ValueError(f'Block {block.scope!r} has no text form: its units '
                       f'{units} are not BASExUNITS/STRIDE.')
    parts.append(f'{base}x{len(units)}' + (f'/{stride}' if stride != 1 else ''))
  return ', '.join(parts)
