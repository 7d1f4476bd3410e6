"""Figures, plot tables and the HTML/markdown report."""
