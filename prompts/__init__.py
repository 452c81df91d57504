"""LLM prompt templates, one file each, rendered by one loader (question answering adds them)."""
