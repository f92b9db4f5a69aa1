"""Progress bars of the testbed's stages (tqdm, off when `enabled` is False)."""

from __future__ import annotations


def bar(total: int, desc: str, enabled: bool):
    """A bar of `total` items that leaves no line behind when it closes."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=not enabled, leave=False, dynamic_ncols=True)
