"""ferops."""
