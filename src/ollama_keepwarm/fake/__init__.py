"""A fake Ollama server (placeholder until the fake lands)."""
