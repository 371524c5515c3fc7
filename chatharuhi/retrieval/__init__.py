"""Retrieval: embedders, the scene index and its disk cache, lexical scoring, partitions, the chroma index."""
