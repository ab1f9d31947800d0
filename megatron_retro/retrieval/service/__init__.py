"""Sharded gRPC retrieval service: shard server, multi-shard client, launcher.

Public API: ``server.run(args)`` / ``main`` (`megatron-retro serve`, options in ``args``),
``client.ShardedRetrievalClient`` (same ``search`` contract as ``Index``),
``launcher.start_service(...)`` -> ``ServiceProcesses``; ``retrieval_pb2*`` are generated.
"""
