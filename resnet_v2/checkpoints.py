"""Loading published weights into our models, strictly.

A model built here names its weights by slim's scopes
(`resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/kernel`); each family's
file names them its own way (`weight_names`) and is read with its own library
(`weight_files`). Loading is a rename, checked strictly: every weight of the
model must be in the file with the same shape, and every weight of the file
must be used, or nothing is assigned and one error lists what is missing,
unexpected and mis-shaped. (timm, for one, copies by hard-coded name and
finds a mismatch only when a copy fails, halfway through.)
"""

from resnet_v2 import weight_files
from resnet_v2 import weight_names

_SHOWN = 10


def _listing(title, names):
  shown = ''.join(f'\n    {name}' for name in names[:_SHOWN])
  more = f'\n    ... and {len(names) - _SHOWN} more' if len(names) > _SHOWN else ''
  return f'\n  {title} ({len(names)}):{shown}{more}'


def logits_keys(family, checkpoint_scope=''):
  """The file keys of a family's classifier (the logits' kernel and bias)."""
  start = weight_names.prefix(family, checkpoint_scope)
  return [start + weight_names.key_of(family, f'logits/{leaf}')[0]
          for leaf in ('kernel', 'bias')]


def network_scope(model, scope=None):
  """The network scope of a model's weights: what `load_weights` strips.

  A model made the slim way, `keras.Model(inputs, net)` over `resnet_v2(...)`,
  a depth function or `stack_blocks_dense`, gets Keras's automatic name
  ('functional', 'functional_1', ...), while its weights sit under the scope
  the network was built in ('resnet_v2_50/conv1/kernel'). So the scope is
  read from the weights: the first part of the path that they all share.
  Only when they sit under several scopes does the model's name decide, if it
  is one of them (`build_model` names the model after its scope).

  Args:
    model: A Keras model.
    scope: The scope, if the caller knows it; returned as it is.

  Returns:
    The scope, without a trailing '/'.

  Raises:
    ValueError: If the weights sit under several scopes and the model's name
      is none of them.
  """
  if scope:
    return scope
  scopes = sorted({weight.path.split('/')[0] for weight in model.weights})
  if len(scopes) == 1:
    return scopes[0]
  if model.name in scopes or not scopes:
    return model.name
  raise ValueError(
      f'The weights of model {model.name!r} sit under several scopes, '
      f'{scopes}: pass scope= (the network scope, e.g. the scope= given to '
      'resnet_v2()), and keep layers added outside the network out of the '
      'model you load into.')


def load_weights(model, path, family='tf-slim', skip_logits=False, scope=None,
                 checkpoint_scope=None):
  """Loads a weight file of one of the families into a model, strictly.

  Arrays are read and assigned one at a time, so a file is never held in
  memory whole.

  Args:
    model: A model built by `build_model`, or `keras.Model(inputs, net)` over
      the `resnet_v2` functions, in the family's layout (see `create_model`).
    path: The file (or TF checkpoint prefix or directory), or a
      `weight_files.WeightFile`.
    family: One of `weight_names.FAMILIES`: 'tf-slim', 'keras', 'bit' or
      'timm'.
    skip_logits: If True, leave the model's `logits` weights as they are and
      ignore the file's, to fine-tune to another class count (or for a file
      without them, such as Keras's `_notop` files).
    scope: The model's network scope; by default the scope its weights
      share (see `network_scope`).
    checkpoint_scope: For tf-slim, the checkpoint's network scope, if it
      differs (e.g. 'resnet_v2_50' for a model built from blocks with scope
      'resnet_v2').

  Returns:
    The list of file keys that were loaded.

  Raises:
    ValueError: If there is no readable file at `path`, the model's scope is
      ambiguous, or the file does not match the model.
  """
  weights = _open(path)
  scope = network_scope(model, scope)
  match = _Match(model, weights, family, skip_logits, scope,
                 checkpoint_scope or scope)
  if match.missing or match.misshaped or match.unexpected:
    raise ValueError(match.message(model))
  for weight, key, layout in match.plan:
    value = weight_names.to_ours(layout, weights.read(key))
    weight.assign(value.astype(weight.dtype))
  return [key for _, key, _ in match.plan]


def _open(path):
  if isinstance(path, weight_files.WeightFile):
    return path
  try:
    return weight_files.open_weights(path)
  except ValueError as e:
    raise ValueError(f'No readable checkpoint or weight file at {path!r}: '
                     f'{e}') from None


class _Match:
  """How a model's weights pair with a file's keys, before anything is
  assigned: the pairs to load, and what is missing, mis-shaped and
  unexpected."""

  def __init__(self, model, weights, family, skip_logits, scope,
               checkpoint_scope):
    self.weights, self.family, self.scope = weights, family, scope
    self.noun = 'checkpoint' if weights.kind == 'tf_checkpoint' else 'file'
    shapes = weights.shapes
    start = weight_names.prefix(family, checkpoint_scope)
    logits = set(logits_keys(family, checkpoint_scope))
    self.logits_at_fault = False
    self.missing, self.misshaped, self.plan = [], [], []
    for weight in model.weights:
      if not weight.path.startswith(scope + '/'):
        raise ValueError(
            f'Weight {weight.path} is not under the scope {scope!r}: pass '
            'scope= (the network scope of the model).')
      key, layout = weight_names.key_of(family, weight.path[len(scope) + 1:])
      key = start + key
      if skip_logits and key in logits:
        continue
      if key not in shapes:
        self.missing.append(key)
        self.logits_at_fault |= key in logits
        continue
      shape = weight_names.shape_to_ours(layout, shapes[key])
      if shape != tuple(weight.shape):
        self.misshaped.append(f'{key}: {self.noun} {shape}, model '
                              f'{tuple(weight.shape)}')
        self.logits_at_fault |= key in logits
      else:
        self.plan.append((weight, key, layout))
    used = {key for _, key, _ in self.plan}
    ignored = weight_names.IGNORED[family]
    self.unexpected = sorted(
        key for key in shapes
        if key.startswith(start) and key not in used
        and not ignored.search(key) and not (skip_logits and key in logits))

  def message(self, model):
    """The error: what does not match, and the argument that fixes it."""
    family, noun, shapes = self.family, self.noun, self.weights.shapes
    message = (f'The {family} {noun} {self.weights.path!r} does not match '
               f'model {model.name!r} (scope {self.scope!r}):'
               + _listing(f'missing from the {noun}', sorted(self.missing))
               + _listing(f'unexpected in the {noun}', self.unexpected)
               + _listing('mis-shaped', self.misshaped))
    looks_like = weight_names.family_of(shapes)
    if not self.plan and looks_like not in (None, family):
      message += (f'\n  Nothing matched: the {noun} is laid out as '
                  f'{looks_like}\'s networks are; use a network of that '
                  'family (resnet_v2.list_models()).')
    elif not self.plan and family == 'tf-slim':
      scopes = sorted({key.split('/')[0] for key in shapes})
      message += (f'\n  Nothing matched: the checkpoint holds scopes {scopes}; '
                  'pass checkpoint_scope= to map the model\'s scope '
                  f'{self.scope!r} onto one of them.')
    if self.logits_at_fault:
      message += ('\n  To fine-tune to another number of classes, pass '
                  'skip_logits=True.')
    return message


def load_slim_checkpoint(model, path, skip_logits=False, scope=None,
                         checkpoint_scope=None):
  """Loads a tf-slim checkpoint into a model, strictly (see `load_weights`).

  The published tf-slim ResNet v2 checkpoints (`resnet_v2_{50,101,152,200}`,
  2017-04-14, 1001 ImageNet classes) name variables by scope, e.g.
  `resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/weights`: our paths with
  slim's leaf names (`weights` for `kernel`, `biases` for `bias`). Training
  state saved beside the weights (`global_step`, optimizer slots, moving
  averages) is ignored.

  Args:
    model: A model built by `build_model`, or `keras.Model(inputs, net)` over
      the `resnet_v2` functions.
    path: A checkpoint prefix (e.g. '.../resnet_v2_50.ckpt') or a directory.
    skip_logits: If True, leave the model's `logits` weights as they are and
      ignore the checkpoint's, to fine-tune to another class count.
    scope: The model's network scope; by default the scope its weights
      share (see `network_scope`).
    checkpoint_scope: The checkpoint's network scope, if it differs (e.g.
      'resnet_v2_50' for a model built from blocks with scope 'resnet_v2').

  Returns:
    The list of checkpoint variable names that were loaded.

  Raises:
    ValueError: If there is no readable checkpoint at `path`, the model's
      scope is ambiguous, or the checkpoint does not match the model.
  """
  return load_weights(model, path, 'tf-slim', skip_logits, scope,
                      checkpoint_scope)
