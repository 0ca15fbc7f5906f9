"""Device-side (xp) implementations of the backend operations."""
