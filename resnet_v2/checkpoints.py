"""Loading tf-slim (TF1) checkpoints into our models.

The published tf-slim ResNet v2 checkpoints (`resnet_v2_{50,101,152,200}`,
2017-04-14, 1001 ImageNet classes) name variables by scope, e.g.
`resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/weights`. Our weights have the
same paths with Keras's leaf names (`kernel` for `weights`, `bias` for
`biases`), so loading is a rename, checked strictly.
"""

import tensorflow as tf

_KERAS_TO_SLIM = {'kernel': 'weights', 'bias': 'biases'}
# Training state that slim saved next to the weights.
_TRAINING_STATE_SUFFIXES = ('/Momentum', '/ExponentialMovingAverage', '/Adam',
                            '/Adam_1', '/RMSProp', '/RMSProp_1')
_SHOWN = 10


def slim_name(path):
  """Returns the slim variable name of a Keras weight path."""
  head, _, leaf = path.rpartition('/')
  return f'{head}/{_KERAS_TO_SLIM.get(leaf, leaf)}' if head else leaf


def _listing(title, names):
  shown = ''.join(f'\n    {name}' for name in names[:_SHOWN])
  more = f'\n    ... and {len(names) - _SHOWN} more' if len(names) > _SHOWN else ''
  return f'\n  {title} ({len(names)}):{shown}{more}'


def load_slim_checkpoint(model, path, skip_logits=False, scope=None,
                         checkpoint_scope=None):
  """Loads a tf-slim checkpoint into a model, strictly.

  Every weight of the model must be found in the checkpoint with the same
  shape, and every model variable of the checkpoint (under its scope, not
  counting `global_step` and optimizer slots) must be used; otherwise nothing
  is assigned and one error lists what is missing, unexpected and
  mis-shaped.

  Args:
    model: A model built by `build_model` (or from `resnet_v2` functions).
    path: A checkpoint prefix (e.g. '.../resnet_v2_50.ckpt') or a directory.
    skip_logits: If True, leave the model's `logits` weights as they are and
      ignore the checkpoint's, to fine-tune to another class count.
    scope: The model's network scope; defaults to `model.name`.
    checkpoint_scope: The checkpoint's network scope, if it differs (e.g.
      'resnet_v2_50' for a model built from blocks with scope 'resnet_v2').

  Returns:
    The list of checkpoint variable names that were loaded.

  Raises:
    ValueError: If there is no readable checkpoint at `path`, or it does not
      match the model.
  """
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
    raise ValueError(f'No readable checkpoint at {path!r}: give the prefix '
                     "of a TF checkpoint (the path before '.index').") from e
  shapes = reader.get_variable_to_shape_map()
  scope = scope or model.name
  checkpoint_scope = checkpoint_scope or scope

  def checkpoint_name(weight_path):
    name = slim_name(weight_path)
    if name.startswith(scope + '/'):
      name = checkpoint_scope + name[len(scope):]
    return name

  logits = f'{checkpoint_scope}/logits/'
  missing, misshaped, plan = [], [], []
  for weight in model.weights:
    name = checkpoint_name(weight.path)
    if skip_logits and name.startswith(logits):
      continue
    if name not in shapes:
      missing.append(name)
    elif tuple(shapes[name]) != tuple(weight.shape):
      misshaped.append(f'{name}: checkpoint {tuple(shapes[name])}, model '
                       f'{tuple(weight.shape)}')
    else:
      plan.append((weight, name))
  used = {name for _, name in plan}
  unexpected = sorted(
      name for name in shapes
      if name.startswith(checkpoint_scope + '/') and name not in used
      and not name.endswith(_TRAINING_STATE_SUFFIXES)
      and not (skip_logits and name.startswith(logits)))
  if missing or misshaped or unexpected:
    message = (f'The checkpoint {path!r} does not match model {model.name!r}:'
               + _listing('missing from the checkpoint', sorted(missing))
               + _listing('unexpected in the checkpoint', unexpected)
               + _listing('mis-shaped', misshaped))
    if not plan:
      scopes = sorted({name.split('/')[0] for name in shapes})
      message += (f'\n  Nothing matched: the checkpoint holds scopes {scopes}; '
                  'pass checkpoint_scope= to map the model\'s scope '
                  f'{scope!r} onto one of them.')
    if any(name.startswith(logits) for name in missing + misshaped):
      message += ('\n  To fine-tune to another number of classes, pass '
                  'skip_logits=True.')
    raise ValueError(message)
  for weight, name in plan:
    weight.assign(reader.get_tensor(name).astype(weight.dtype))
  return [name for _, name in plan]
