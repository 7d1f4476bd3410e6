"""LightningModules: one method (loss, sampling, metrics) per file, over ``genlab.nn`` networks."""
