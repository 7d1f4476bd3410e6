"""Datasets: preparation (``prepare_*``, run once by the `prepare` stage) and loading."""
