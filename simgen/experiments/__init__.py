"""Experiment drivers: orchestrate simulate, augment, train and evaluate, and write reports.

They hold no model code: every model is trained and run through :mod:`simgen.train`.
"""
