"""Plots a run's metrics.jsonl to a PNG: loss, top-1, learning rate, speed.

    python -m experiments.plot_metrics --model_dir=/tmp/resnet_v2_digits
"""

import json
import os

from absl import app
from absl import flags

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'The run directory.', required=True)
_OUTPUT = flags.DEFINE_string('output', None, 'The PNG (default: <model_dir>/metrics.png).')

PANELS = (('loss', 'loss'), ('top1', 'top-1'), ('learning_rate', 'learning rate'),
          ('images_per_second', 'images/s'))


def read_metrics(path):
  """Returns {split: {name: ([steps], [values])}} from a metrics.jsonl file."""
  series = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      record = json.loads(line)
      for name, value in record.items():
        if name not in ('step', 'split', 'time', 'run'):
          steps, values = series.setdefault(record['split'], {}).setdefault(
              name, ([], []))
          steps.append(record['step'])
          values.append(value)
  return series


def plot(series, output):
  """Draws one panel per metric, train and eval together, into `output`.

  Raises:
    app.UsageError: If matplotlib, an optional dependency, is missing.
  """
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise app.UsageError(
        "plot_metrics draws with matplotlib, which is not installed: "
        "pip install 'resnet-v2[plot]' (or matplotlib).") from None
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
  for axis, (name, title) in zip(axes, PANELS):
    for split, metrics in sorted(series.items()):
      if name in metrics:
        axis.plot(*metrics[name], marker='.' if split == 'eval' else None,
                  color={'train': 'C0', 'eval': 'C1'}.get(split), label=split)
    axis.set_title(title)
    axis.set_xlabel('step')
    axis.legend()
  figure.tight_layout()
  figure.savefig(output, dpi=100)


def main(argv):
  del argv
  path = os.path.join(_MODEL_DIR.value, 'metrics.jsonl')
  if not os.path.exists(path):
    raise app.UsageError(f'No {path}: is --model_dir a run directory?')
  output = _OUTPUT.value or os.path.join(_MODEL_DIR.value, 'metrics.png')
  plot(read_metrics(path), output)
  print(f'Wrote {output}')


def run_main():
  """The console script resnet-v2-plot-metrics."""
  app.run(main)


if __name__ == '__main__':
  run_main()
