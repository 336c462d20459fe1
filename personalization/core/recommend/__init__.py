"""Item recommendations from behaviour, in plain Python (no Flink): the models, the baselines and
the top-N selection that the quality run measures and the job's adapters will hold in state.

- ``cooccurrence.ItemKNN``: session-based item-to-item co-occurrence (bounded, decayed counts).
- ``factorization.ImplicitMF``: a latent-factor model trained by SGD (BPR) one event at a time.
- ``baselines``: popularity, trending (event-time window, global and per context) and recently viewed.
- ``selection``: top-N with exclusions, diversity per category and frequency capping from impressions.
- ``recommender.Recommender``: all of the above fed by the same interactions, and the blend.

May import: the rest of ``core``; nothing outside it (``core``'s contract).
"""
