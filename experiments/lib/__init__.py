"""The machinery the recipes share; not run directly.

Data flows one way: `config` (the settings, their flags and checks) -> `cli`
(absl flags <-> Config) -> `train` (the run and its loop), which uses
`network` (what --network means, the model, from resnet_v2), `cluster`
(where this process runs: the `Placement`), `data` -> `input_pipeline`
(with `seeds`) -> `preprocessing` (examples), `optimization` (length,
schedule, optimizer), `steps` (the compiled functions), `reporting` (logs,
summaries, metrics.jsonl), `linear_eval` (few-shot probes) and `export` (the
SavedModel). `saved_config` and `run_dir` keep the run directory, `files`
writes every file of a run, and `errors` holds the mistakes a user can fix.
`hyperrule` is BiT-HyperRule's choices, for the fine-tuning recipe.
"""
