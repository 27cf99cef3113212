"""Semantic search over stored conversations: embedders, the vector index and its queries."""
