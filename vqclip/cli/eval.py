"""`vqclip eval {retrieval,typographic,ocr}`: the paper's evaluations, each in its own module."""

from __future__ import annotations

import importlib

from .common import command_parser

# module name under vqclip.cli -> it defines `register(eval_subparsers)`
EVALUATIONS = ("eval_retrieval", "eval_typographic", "eval_ocr")


def register(sub) -> None:
    p = command_parser(sub, "eval", help="evaluate spaces: word retrieval, typographic attacks, OCR by retrieval",
                       description="Evaluate CLIP and learned projections side by side (the paper's "
                                   "evaluations: docs/method.md §6). "
                                   "`vqclip eval EVALUATION --help` for each.",
                       examples=["vqclip eval retrieval --images /data/imagenet/val",
                                 "vqclip eval typographic --dataset typographic_attack_dataset/",
                                 "vqclip eval ocr --annotations IIIT5K/testdata.mat"])
    evals = p.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    for name in EVALUATIONS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{name}":
                continue
            raise
        module.register(evals)
