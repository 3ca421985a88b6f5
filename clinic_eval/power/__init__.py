"""The power and sample-size planner: the coordinator sizes a study before it opens.

Layers: ``services`` (request, run, freeze into the plan), ``selectors`` (reads), ``forms``,
``views`` (the design page's planner card), ``tasks`` (the worker). The simulation itself is
pure: ``clinic_eval.statistics.power``.
"""
