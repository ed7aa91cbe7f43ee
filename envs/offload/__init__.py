"""edgelam/Offload-v0: device / edge / cloud offloading of LLM tasks."""
