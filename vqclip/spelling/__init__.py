"""Learn / forget to spell: word lists, rendering, the five-tuple dataset, feature cache, training, retrieval (paper §3–§6)."""
