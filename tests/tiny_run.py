"""The tiny run that the tests share: digits, a two-unit network, few steps."""

# A network of two bottleneck units on scikit-learn's 8x8 digits, with
# checkpoints, logs and compiled loops every few steps.
RUN = dict(dataset='digits', blocks='4x1/2, 8x1', stem='cifar', batch_size=32,
           lr_reference_batch=32, warmup_epochs=0, steps_per_loop=5,
           log_every=5, checkpoint_every=10, seed=1)


def flags(model_dir=None, **overrides):
  """The run as command-line flags: the run's, --model_dir, then `overrides`
  (in their order, so the last flag is the last override)."""
  values = dict(RUN)
  if model_dir is not None:
    values['model_dir'] = model_dir
  values.update(overrides)
  return [f'--{name}={value}' for name, value in values.items()]
