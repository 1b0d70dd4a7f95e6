"""The model framework: what runs every model, and nothing specific to one.

- ``spec.py``: ``ModelSpec`` and ``PromotionPolicy``, everything model-specific declared in one object;
- ``estimator.py``: the contract every estimator follows (``fit``, ``predict_frame``);
- ``training.py``: training sets through the feature store, the time split, fitting;
- ``evaluation.py``: prediction frames, metrics overall and per slice, baselines, bootstrap CIs;
- ``scoring_frame.py``: what a model scores at ``as_of``, read with ``get_online_features``;
- ``metrics/``: every metric by name, with its direction next to its definition;
- ``plots.py``, ``tracking.py``: MLflow plots and the run of one training.

Shared model machinery lives in ``families/``; the registered models, one module each named
after the model, in ``catalog/``.
"""
