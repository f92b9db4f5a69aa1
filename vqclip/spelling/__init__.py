"""Learn / forget to spell: word lists, rendering, the five-tuple dataset, feature cache, training, retrieval.

The method is docs/method.md §3–§6."""
