"""Pipeline stages: ``genlab <stage>`` runs ``genlab.stages.<stage>.run(cfg)``.

A stage is an entry point, never a library: no stage imports another. What several stages share
lives a layer down (``genlab.recipes``, ``genlab.saved``, ``genlab.data.prepared``), so each stage's DVC
deps name only the code it runs (``tests/test_deps.py`` checks both).
"""
