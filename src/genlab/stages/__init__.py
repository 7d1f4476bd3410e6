"""Pipeline stages: ``genlab <stage>`` runs ``genlab.stages.<stage>.run(cfg)``."""
