"""Evaluations of the paper (§6): OCR text detection in generated images, typographic attacks, OCR by retrieval."""
