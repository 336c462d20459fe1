"""Replay: real datasets and synthetic behaviour as contract-v1 events, into Kafka or files."""
