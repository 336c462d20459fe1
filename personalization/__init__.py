"""Real-time behavioral personalization: Kafka -> PyFlink -> Redis."""

__version__ = "0.2.0"  # the one place of the version: pyproject.toml reads it, `pz --version` prints it
