"""Experiment drivers: orchestrate simulate, augment, train and evaluate, and write reports.

They hold no model code: every model is trained and run through :mod:`simgen.train`.  Each
driver is a short sequence of named steps — plain functions that can be run alone — and
returns a result dataclass whose ``to_dict()`` is its JSON report:

* :func:`.sim2real_tem.run_sim2real` → ``Sim2RealResult`` (steps in ``sim2real_tem``,
  ``sim2real_real``, ``sim2real_judge``, ``sim2real_compare``; report in ``sim2real_report``);
* :func:`.sim2real_film.run_film_experiment` → ``FilmResult``;
* :func:`.fewshot_ldm.run_fewshot` → ``FewShotResult``;
* :func:`.track_video.track_video` → ``TrackVideoResult``;
* :func:`.ablation.run_ablation` → ``AblationResult`` (default training hooks in ``ablation_yolo``).
"""
