"""`vqclip ui`: a local web page to compare the clip, learn and forget spaces live, and a gallery of the outputs.

Needs the optional extra: pip install -e ".[ui]" (Gradio). `runner` and `gallery` do the work without Gradio;
`app` builds the page.
"""

from __future__ import annotations

from ..errors import MissingExtraError, pip_extra

INSTALL_HINT = f"vqclip ui needs Gradio, an optional extra: {pip_extra('ui')}"


def require_gradio() -> None:
    """Refuse with the install command when Gradio is missing (before any model is loaded)."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # an offline tool: no telemetry requests
    try:
        import gradio  # noqa: F401 - only whether it imports
    except ImportError as e:
        raise MissingExtraError(INSTALL_HINT) from e
