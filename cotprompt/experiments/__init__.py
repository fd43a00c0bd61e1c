"""The field's experiments in one command: base-to-new, cross-dataset transfer, domain
generalisation and few-shot sweeps over datasets x methods x seeds, resumable and shardable, with
per-run results and aggregated tables and plots. See ``docs/protocols.md``."""
