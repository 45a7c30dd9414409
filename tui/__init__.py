"""Terminal chat UI (Textual), built on the runner's public API."""
