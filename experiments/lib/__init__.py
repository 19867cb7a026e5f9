"""The machinery the recipes share; not run directly.

Data flows one way: `config` (the settings, their flags and checks) -> `cli`
(absl flags <-> Config) -> `train` (the run and its loop), which uses
`cluster` (devices, strategy, chief), `datasets` -> `input_pipeline` ->
`preprocessing` (examples), `network` (the model, from resnet_v2),
`optimization` (length, schedule, optimizer), `steps` (the compiled
functions), `reporting` (logs, summaries, metrics.jsonl) and `export` (the
SavedModel).
"""
