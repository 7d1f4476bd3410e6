"""Training recipes and task plumbing that more than one stage runs.

A stage module is an entry point (``genlab <stage>``) and never a library: what two stages share lives
here, one recipe per module, so that each stage's DVC deps name exactly the code it runs.
"""
