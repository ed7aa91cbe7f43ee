"""Real-model runtime."""
