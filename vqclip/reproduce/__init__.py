"""`vqclip reproduce`: rerun the paper's headline experiments and put the measured numbers beside the published ones.

Materzynska, Torralba, Bau, CVPR 2022 (docs/method.md §6):

- typographic attacks on the authors' 180 photos: zero-shot accuracy in clip / learn / forget
  (`vqclip.reproduce.typographic`);
- text in generated images: VQGAN+CLIP in the three spaces on real and nonsense words, EasyOCR at confidence
  > 0 and > 0.25 (`vqclip.reproduce.ocr`);
- a report folder with both tables, every setting, model hashes and timings (`vqclip.reproduce.report`).

Nothing here generates, scores or evaluates by itself: it joins the registry, the batch runner, the OCR scorer,
the typographic evaluation and the grid, which do the work.
"""

from .paper import PAPER, compare_rate

__all__ = ["PAPER", "compare_rate"]
