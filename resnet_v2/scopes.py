"""Slim-style scopes for Keras 3 layers built on symbolic inputs.

tf-slim named every variable by the `variable_scope`s it was created in
(`resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/weights`). Keras 3 gives each
variable a `path` from the `keras.name_scope`s open when its layer is built,
plus the layer's own name, so the same nesting reproduces slim's names.

One Keras rule stands in the way: operation names must be unique inside a
functional model, while slim reuses short names (`conv1` appears in every
unit). `call_layer` therefore builds a layer under its short slim name, which
fixes the variable paths, and then renames the layer to its full path with
`.` for `/` (`resnet_v2_50.block1.unit_1.bottleneck_v2.conv1`), which is
unique and is what `model.get_layer` takes.

End-point keys are slim's scope names, so this module also keeps the stack of
scopes opened with `variable_scope`.
"""

import contextlib
import threading

import keras

_STATE = threading.local()


def _stack():
  if not hasattr(_STATE, 'scopes'):
    _STATE.scopes = []
  return _STATE.scopes


def current_scope():
  """Returns the path of the scopes opened with `variable_scope`, or ''."""
  return '/'.join(_stack())


def scope_name(name):
  """Returns `name` inside the current scope, e.g. 'resnet_v2_50/conv1'."""
  prefix = current_scope()
  return f'{prefix}/{name}' if prefix else name


@contextlib.contextmanager
def variable_scope(name):
  """Opens a scope for both variable paths and end-point names.

  Args:
    name: The scope's name; must not contain '/'.

  Yields:
    The full scope path, e.g. 'resnet_v2_50/block1'.

  Raises:
    ValueError: If `name` is empty or contains '/'.
  """
  if not name or '/' in name:
    raise ValueError(f'A scope name must be non-empty and without "/", got {name!r}.')
  with keras.name_scope(name):
    _stack().append(name)
    try:
      yield current_scope()
    finally:
      _stack().pop()


def call_layer(layer, inputs, **kwargs):
  """Calls a freshly made Keras layer so its weights get slim-style paths.

  Args:
    layer: An unbuilt Keras layer whose `name` is its slim scope name
      (e.g. 'conv1', 'BatchNorm').
    inputs: The symbolic input(s).
    **kwargs: Passed to the layer call (e.g. `training`).

  Returns:
    The layer's output.
  """
  outputs = layer(inputs, **kwargs)
  # Layers without weights (pooling) are never built, so have no path.
  layer.name = (layer.path or scope_name(layer.name)).replace('/', '.')
  return outputs


def collect_named_outputs(collections, alias, outputs):
  """Records `outputs` under `alias` in each end-point dict of `collections`.

  Slim used graph collections; here a collection is a plain dict, passed down
  with `arg_scope(..., outputs_collections=end_points)`.

  Args:
    collections: None, a dict, or a list/tuple of dicts.
    alias: The key, normally a full scope path.
    outputs: The tensor to record.

  Returns:
    `outputs`, unchanged.
  """
  if collections is None:
    return outputs
  if isinstance(collections, dict):
    collections = [collections]
  for collection in collections:
    collection[alias] = outputs
  return outputs
