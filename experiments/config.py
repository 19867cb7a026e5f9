"""The experiment configuration: everything a run needs, as plain values.

Scripts fill a `Config` from their flags; `train.run(config)` does the rest.
"""

import dataclasses
from typing import Optional, Sequence


class ConfigError(ValueError):
  """A configuration that cannot run; the message says what to change."""


@dataclasses.dataclass
class Config:
  """One experiment. See experiments/flags.py for each field's meaning."""
  # Data.
  dataset: str = 'digits'
  data_dir: Optional[str] = None
  manual_dir: Optional[str] = None
  num_classes: Optional[int] = None
  image_size: Optional[int] = None
  shuffle_buffer: int = 10_000
  # Network.
  depth: Optional[int] = None
  blocks: Optional[str] = None
  stem: str = 'imagenet'
  sync_batch_norm: bool = False
  # Run.
  model_dir: str = '/tmp/resnet_v2'
  mode: str = 'train_and_eval'
  train_steps: Optional[int] = None
  train_epochs: Optional[float] = None
  batch_size: int = 256
  steps_per_loop: int = 100
  log_every: int = 100
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  eval_every: int = 0
  # Distribution and speed.
  strategy: str = 'one_device'
  tpu: Optional[str] = None
  num_gpus: int = 0
  cpu_devices: int = 1
  input_per_replica: bool = False
  precision: str = 'auto'
  jit_compile: Optional[bool] = None  # None: auto.
  collective_timeout: float = 600.0
  startup_timeout: float = 300.0
  # Optimization.
  base_lr: float = 0.1
  lr_reference_batch: int = 256
  lr_decay: str = 'cosine'
  lr_boundary_epochs: Sequence[float] = (30, 60, 80)
  lr_boundary_steps: Optional[Sequence[int]] = None
  warmup_epochs: float = 5.0
  warmup_steps: Optional[int] = None
  warmup_lr: Optional[float] = None
  momentum: float = 0.9
  weight_decay: float = 1e-4
  label_smoothing: float = 0.0
  # Initialization, export, reproducibility.
  init_checkpoint: Optional[str] = None
  init_skip_logits: bool = False
  export_dir: Optional[str] = None
  seed: Optional[int] = None
  deterministic: bool = False
  fail_at_step: Optional[int] = None  # Testing: make the loss NaN at this step.

  def check(self):
    """Raises ConfigError for values that cannot work together."""
    choices = {
        'mode': ('train', 'eval', 'train_and_eval', 'export'),
        'strategy': ('one_device', 'mirrored', 'multi_worker', 'tpu'),
        'precision': ('auto', 'float32', 'mixed_bfloat16', 'mixed_float16'),
        'lr_decay': ('cosine', 'step', 'constant'),
        'stem': ('imagenet', 'cifar'),
    }
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ConfigError(f'--{name}={getattr(self, name)!r}; choose one of '
                          f'{", ".join(allowed)}.')
    if (self.depth is None) == (self.blocks is None):
      raise ConfigError('Give exactly one of --depth and --blocks.')
    if self.train_steps is not None and self.train_epochs is not None:
      raise ConfigError('Give at most one of --train_steps and --train_epochs.')
    for name in ('batch_size', 'steps_per_loop', 'log_every',
                 'checkpoint_every', 'keep_checkpoints', 'cpu_devices'):
      if getattr(self, name) < 1:
        raise ConfigError(f'--{name} must be at least 1, got {getattr(self, name)}.')
    if self.strategy == 'tpu' and not self.tpu:
      raise ConfigError("--strategy=tpu needs --tpu (a TPU name, or 'local' on "
                        'a TPU VM).')
