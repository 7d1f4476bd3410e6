"""genlab: a reproducible research pipeline for deep generative models."""
__version__ = "0.1.0"
