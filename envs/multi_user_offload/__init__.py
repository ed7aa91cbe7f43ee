"""edgelam/MultiUserOffload-v0: N users offloading LLM tasks into one shared uplink and edge server."""
