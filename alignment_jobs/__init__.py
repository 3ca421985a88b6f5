"""Generation of arm outputs (model specs, jobs, engines, Celery tasks on queue ``gpu``).

Filled by the generation issue; it depends on clinic_eval, never the other way round.
"""
