"""Everything Redis, and the reads downstream apps make: the key schema (``redis_store``, the one
module that names keys), the versioned writers the operators use, the reader library, the HTTP
API, erasure and audience upkeep, and the read commands of ``pz``.

May import: ``config`` and ``core``; no Flink. Imported by ``operators``, ``tools`` and the ``pz`` command (``personalization.cli``).
"""
