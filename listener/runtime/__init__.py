"""The daemon around the pipeline: composition, resume state, probes, metrics, logs."""
