"""The prediction engine: evaluation tasks, prompts, batching, decoding, label ranking, sharding, resumable parts."""
