"""Block specs written as text, for flags and configs; parsed without eval.

A spec is a comma-separated list of blocks, each `BASExUNITS` or
`BASExUNITS/STRIDE`: UNITS bottleneck units of bottleneck depth BASE and
output depth 4*BASE, the last of them with stride STRIDE (default 1); or,
with the word `basic` first, UNITS basic units of depth BASE. Blocks are
named block1, block2, ... ResNet-50's body is

    64x3/2, 128x4/2, 256x6/2, 512x3

ResNet-18's (basic units) is

    basic 64x2/2, basic 128x2/2, basic 256x2/2, basic 512x2

and the paper's CIFAR ResNet-164 (three stages of 18 units) is

    16x18/2, 32x18/2, 64x18
"""

import re

from resnet_v2 import nets
from resnet_v2 import units as units_lib

_BLOCK = re.compile(
    r'^(?:(basic|bottleneck)\s+)?(\d+)\s*x\s*(\d+)(?:\s*/\s*(\d+))?$')


def parse_blocks(text, **layout):
  """Parses a text block spec.

  Args:
    text: E.g. '16x2/2, 32x2'.
    **layout: The block layout options of `resnet_v2_block`, `stride_unit`
      ('last', slim's, or 'first') and `projection` ('depth', 'first_unit' or
      'stride'); an `arg_scope` on the block functions sets them too. With
      stride_unit='first', BiT's ResNet-50 body is '64x3, 128x4/2, 256x6/2,
      512x3/2'.

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
          "integers, e.g. '64x3/2' (3 bottleneck units of bottleneck depth "
          "64, the last with stride 2) or 'basic 64x2/2' (2 basic units of "
          'depth 64).')
    kind = match.group(1) or 'bottleneck'
    base_depth, num_units, stride = (int(g) if g else 1
                                     for g in match.groups()[1:])
    blocks.append(nets.BLOCK_BUILDERS[kind](f'block{index + 1}', base_depth,
                                            num_units, stride, **layout))
  return blocks


def format_blocks(blocks):
  """Returns the text spec of `resnet_v2_block`-style blocks.

  Args:
    blocks: A list of bottleneck or basic `Block`s whose units share depths
      and carry a stride only in the last unit, like those `parse_blocks`
      returns.

  Returns:
    The text spec, e.g. '64x3/2, 128x4/2, 256x6/2, 512x3'.

  Raises:
    ValueError: If a block cannot be written in the text form.
  """
  parts = []
  for block in blocks:
    units = [dict(zip(('depth', 'depth_bottleneck', 'stride'), u))
             if isinstance(u, (tuple, list)) else u for u in block.args]
    stride = units[-1].get('stride', 1)
    if block.unit_fn is units_lib.basic:
      prefix, base = 'basic ', units[0].get('depth')
      unit = {'depth': base}
    else:
      prefix, base = '', units[0].get('depth_bottleneck')
      unit = {'depth': 4 * base if base else None, 'depth_bottleneck': base}
    expected = [dict(unit, stride=1)] * (len(units) - 1) + [
        dict(unit, stride=stride)]
    if (block.unit_fn not in (units_lib.basic, units_lib.bottleneck)
        or [dict({'stride': 1}, **u) for u in units] != expected):
      raise ValueError(f'Block {block.scope!r} has no text form: its units '
                       f'{units} are not [basic ]BASExUNITS/STRIDE.')
    parts.append(f'{prefix}{base}x{len(units)}'
                 + (f'/{stride}' if stride != 1 else ''))
  return ', '.join(parts)
