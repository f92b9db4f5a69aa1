"""The library's names and defaults that the `vqclip` parser shows, as plain literals.

Building the parser must import no torch (`vqclip --help` in well under half a second), and the modules that
define these values import torch at the top. tests/test_cli_help.py checks that every value here equals the
library's, so a change there that is not made here fails the suite."""

from __future__ import annotations

# vqclip.devices
DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# vqclip.models.clip
DEFAULT_CLIP = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
# vqclip.evaluate.objectjudge.DEFAULT_JUDGE_CLIP: the second CLIP of `reproduce ocr --judge-clip`
JUDGE_CLIP = "ViT-B-16:laion2b_s34b_b88k"
# vqclip.generation
AUGMENTATIONS = ("affine", "perspective", "jitter", "erasing", "sharpness", "grayscale", "flip")  # cutouts
METHODS = ("zquant", "codebook")  # settings
OPTIMIZERS = ("adagrad", "adam", "adamw", "nadam", "radam", "rmsprop", "sgd")  # settings.OPTIMIZERS, sorted
LOSSES = ("cosine", "spherical")  # ops.LOSSES, sorted
RECIPES = ("nerdyrodent", "paper", "vqclip")  # recipes.RECIPES, sorted
EDGES = ("wrap", "reflect", "border", "black")  # animate
VIDEO_FORMATS = ("mp4", "gif")  # animate
ANTI_TEXT = ("negative", "textoff")  # antitext
ANTI_TEXT_DEFAULTS = {"negative_text": "written text", "negative_weight": -0.5, "textoff_mode": "target",
                      "textoff_weight": -0.5}  # antitext.DEFAULT_*
TEXT_MODES = ("target", "project")  # vqclip.spaces.TEXT_MODES
# vqclip.spelling
SPELLING_TEMPLATE = "an image of {article} {name}"  # dataset.DEFAULT_TEMPLATE
TORCHVISION_DATASETS = ("caltech101", "cifar10", "cifar100", "flowers102", "food101", "places365", "stl10")  # sorted
DEFAULT_VOCAB = 30000  # words
DEFAULT_GAMMA = 1.0  # losses
SPACE_PRESETS = ("learn", "forget")  # losses.PRESETS
# vqclip.reproduce.paper.PAPER_GENERATION
PAPER_GENERATION = {"method": "codebook", "vqgan": "vqgan_imagenet_f16_1024", "size": (480, 480), "cutn": 64,
                    "clip": "ViT-B-32", "pretrained": "openai"}
# vqclip.testbed.run.TestbedConfig: field -> (full, quick)
TESTBED_DEFAULTS = {"clip_steps": (3000, 1000), "n_pairs": (24000, 8000), "n_tuples": (6000, 3000),
                    "n_attacks": (600, 240), "proj_epochs": (300, 300), "proj_lr": (0.001, 0.001)}
