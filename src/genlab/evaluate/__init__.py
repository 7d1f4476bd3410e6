"""Evaluation math (metrics, fits), independent of training: plain functions on tensors/arrays."""
