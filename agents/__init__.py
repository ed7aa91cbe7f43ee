"""SB3 training, multi-agent training, the evaluation loop, the compare harness and the CLI."""
