"""Experiments: train, evaluate and export ResNet v2 from the command line.

Every module here is an entry point (`python -m experiments.<name>`):

- Recipes, whose flag defaults are a paper's or a standard training recipe:
  `imagenet`, `cifar`, `finetune` (BiT-HyperRule, for your own images) and
  `digits` (the embedded default, no download).
- Tools: `describe` (layer tables), `plot_metrics` (a run's metrics.jsonl to
  a PNG) and `benchmark` (speed against keras.applications and the machine).

The machinery the recipes share is the `experiments.lib` package; it is not
run directly.
"""
