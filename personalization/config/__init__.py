"""Configuration: the job's settings as a validated model (pydantic), their YAML defaults, and
the translation of ``kafka.properties`` into kafka-python clients.

May import: ``personalization.core`` (durations, the experiment and recommender config types).
Imported by every layer above it; never by ``core``.
"""
