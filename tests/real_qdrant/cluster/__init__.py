"""Real-Qdrant tests against the session's 3-peer cluster."""
