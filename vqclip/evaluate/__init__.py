"""Evaluations of the paper (docs/method.md §6): text in generated images, typographic attacks, OCR by retrieval."""
