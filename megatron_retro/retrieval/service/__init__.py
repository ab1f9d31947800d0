"""Sharded gRPC retrieval service: shard files, shard server, multi-shard client, launcher."""
