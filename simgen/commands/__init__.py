"""CLI commands, one module per topic.

Each module defines click commands and a ``register(groups)`` function that
attaches them to the groups in ``groups`` (``main``, ``simulate``, ``export``,
and any group an earlier module added).  :mod:`simgen.cli` discovers and
registers every module here, so adding a command never means editing
``cli.py``.  Keep imports of heavy libraries inside command bodies.
"""
