"""Projection files: where they live, how they are written, read and checked, the paper's released ones, and
which space a run optimises in (docs/architecture.md).

Layers: `resolve` (which space, from where) → `published` (the paper's release: fetch, recognise, convert) →
`authors` (reading the authors' torch files) → `files` (paths, .safetensors, --projection values) → `checks`
(the rules a matrix must pass). The maths of a space is vqclip.spaces, below all of them.
"""

from .checks import MAX_ORTHO_ERROR, check_orthonormal, check_projection_dtype, check_projection_matrix
from .files import (FORMAT, ProjectionArg, load_projection, parse_projection_arg, projection_arg_identity,
                    projection_path, read_metadata, save_projection, space_from_name)
from .published import (PROJECTION_ASSETS, ProjectionAsset, ensure_projection, get_projection_asset,
                        list_projection_assets, registered_projection, unknown_registered_name)
from .resolve import MissingProjection, cached_or_registered, clip_with_file_error, resolve_space

__all__ = ["FORMAT", "MAX_ORTHO_ERROR", "PROJECTION_ASSETS", "MissingProjection", "ProjectionArg", "ProjectionAsset",
           "cached_or_registered", "check_orthonormal", "check_projection_dtype", "check_projection_matrix",
           "clip_with_file_error", "ensure_projection", "get_projection_asset", "list_projection_assets",
           "load_projection", "parse_projection_arg", "projection_arg_identity", "projection_path", "read_metadata",
           "registered_projection", "resolve_space", "save_projection", "space_from_name",
           "unknown_registered_name"]
