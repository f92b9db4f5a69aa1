"""What a reproduce run is asked to do, as plain values: the CLI fills `ReproduceOptions` from its flags, a script
may build one itself."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

from ..evaluate.typographic import DEFAULT_TEMPLATE
from ..models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED

PROG = "vqclip reproduce"
DEFAULT_OUT = "outputs/reproduce"
SPACES = ("clip", "learn", "forget")  # the paper's three spaces, in the order of its tables


@dataclass
class ReproduceOptions:
    """The settings of `vqclip reproduce` (one field per flag; the generation flags arrive as `settings`).

    The values are the checked ones: `group_size` parsed (`generation.groups.parse_group_size`), `shard` resolved
    (`vqclip.batch.shard.resolve_shard`), `projections` the absolute file per space or None for the paper's.
    """

    out: str = DEFAULT_OUT
    projection_learn: str | None = None
    projection_forget: str | None = None
    cache_dir: str | None = None
    quiet: bool = False
    clip: str = DEFAULT_CLIP
    pretrained: str | None = DEFAULT_PRETRAINED
    device: str = "auto"
    precision: str = "auto"
    # the command line the report records; a function is asked when the report is written (the CLI's, so that
    # a GPU it picked for this share under torchrun shows as --device)
    command: str | Callable[[], str] = ""
    # typographic attacks
    dataset: str | None = None
    template: str = DEFAULT_TEMPLATE
    batch_size: int = 32
    # text in generated images
    settings: Any = None  # vqclip.generation.Settings of every image (the paper's recipe and the flags)
    seed: int = 0
    scale: float | None = None
    words: str | None = None
    shard: Any = None  # vqclip.batch.shard.Shard
    group_size: int | str = "auto"
    ocr_batch_size: int = 8
    grid_words: int = 8
    dry_run: bool = False
    projections: dict[str, str | None] = field(default_factory=dict)
    vqgan: str | None = None
    vqgan_config: str | None = None
    vqgan_checkpoint: str | None = None
    auto_train: bool = False
    # ways of keeping text out measured beside the paper's spaces (forget+negative, ...; issue 27); the paper's
    # three columns always run with the paper's recipe
    methods: tuple[str, ...] = ()
    # the second CLIP that judges whether each real word's object is still in its images, `MODEL[:PRETRAINED]`
    # (checked: `evaluate.objectjudge.check_judge_clip`; the CLI's default with --methods is DEFAULT_JUDGE_CLIP);
    # None: no object check
    judge_clip: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The OCR table's columns: the paper's spaces, then the extra methods."""
        return SPACES + tuple(m for m in self.methods if m not in SPACES)

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any], **checked) -> "ReproduceOptions":
        """Options from a command's flag values (those with a field here; others are ignored), the `checked`
        values replacing the raw ones."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in flags.items() if k in names}, **checked})

    def projection_files(self) -> dict[str, str | None]:
        """The --projection-learn / --projection-forget files as given (None: the paper's)."""
        return {"learn": self.projection_learn, "forget": self.projection_forget}

    def command_line(self) -> str:
        return self.command() if callable(self.command) else self.command
