"""Keep Ollama models warm: preload them, renew their leases, repair what restarts lose."""

__version__ = "0.1.0"
