"""`vqclip models {list,download,convert}`: the registry of named VQGAN checkpoints and projections, and the cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_cache_arg, add_clip_args, add_quiet_arg, command_parser


def register(sub) -> None:
    """`vqclip models` and its actions: list, download, convert, check."""
    p = command_parser(sub, "models", help="list, download and convert VQGAN checkpoints and registered projections",
                       examples=["vqclip models list", "vqclip models download vqgan_imagenet_f16_16384"],
                       description="Named VQGAN checkpoints and the paper's released learn/forget projections: list "
                                   "them with their cache status, download them (verified; VQGAN downloads resume) "
                                   "and convert them to pickle-free .safetensors.")
    models = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    _register_list(models)
    _register_download(models)
    _register_convert(models)
    _register_check(models)


def _register_list(models) -> None:
    """`vqclip models list`: the registry with cache status, as tables or JSON."""
    ls = command_parser(models, "list", help="registered models and projections, sizes, verification and cache status",
                        description="Registered VQGAN checkpoints and projections, with their size, how they are "
                                    "verified and whether they are in the cache.",
                        examples=["vqclip models list", "vqclip models list --json --cache-dir /data/vqclip-cache"])
    add_cache_arg(ls)
    ls.add_argument("--json", action="store_true",
                    help="print one JSON object per model and projection (with \"type\": vqgan or projection) instead of tables")
    add_quiet_arg(ls, "accepted by every command; list shows no progress")
    ls.set_defaults(func=cmd_list)


def _register_download(models) -> None:
    """`vqclip models download NAME...`: fetch, verify and convert registered models and projections."""
    dl = command_parser(models, "download", examples=["vqclip models download vqgan_imagenet_f16_16384",
                                                      "vqclip models download ViT-B-32/openai:forget"],
                        help="download, verify and convert registered models and projections",
                        description="Download a registered model's config and checkpoint (resuming a partial "
                                    "download), verify them, and convert the checkpoint to .safetensors. Files "
                                    "already in the cache (e.g. copied in by hand) are verified, not fetched. "
                                    "A projection name (e.g. ViT-B-32/openai:forget) fetches the authors' "
                                    "Google Drive folder with gdown, identifies learn and forget, checks and "
                                    "converts them.")
    dl.add_argument("names", nargs="+", metavar="NAME",
                    help="registered model or projection name(s); see `vqclip models list`")
    add_cache_arg(dl)
    dl.add_argument("--no-convert", action="store_true", help="only download and verify; convert on first use")
    dl.add_argument("--remove-original", action="store_true",
                    help="delete the Lightning .ckpt after conversion (generation needs only the .safetensors)")
    add_quiet_arg(dl, "no progress bar")
    dl.set_defaults(func=cmd_download)


def _register_convert(models) -> None:
    """`vqclip models convert`: a taming checkpoint to one compact .safetensors."""
    cv = command_parser(models, "convert", examples=[
                            "vqclip models convert --checkpoint last.ckpt --config model.yaml --name my_vqgan",
                            "vqclip models convert --checkpoint last.ckpt --config model.yaml --output my.safetensors"],
                        help="convert a taming checkpoint to a compact .safetensors",
                        description="Read a taming VQGAN checkpoint (Lightning .ckpt, state dict or .safetensors) "
                                    "safely and write only the weights generation needs, with the config inside, "
                                    "to one .safetensors file.")
    cv.add_argument("--config", metavar="YAML", help="taming model.yaml (optional with --name of a registered "
                                                     "model whose config is in the cache)")
    cv.add_argument("--checkpoint", required=True, metavar="CKPT", help="the checkpoint to convert")
    cv.add_argument("--name", metavar="NAME",
                    help="store it in the cache under NAME, so --vqgan NAME uses it (a registered name fills that "
                         "model's cache slot); default: the checkpoint's file name")
    cv.add_argument("--output", metavar="PATH", help="write here instead of the cache")
    cv.add_argument("--overwrite", action="store_true",
                    help="replace an existing file at --output (or the converted model already in the cache)")
    add_cache_arg(cv)
    add_quiet_arg(cv, "accepted by every command; convert shows no progress")
    cv.set_defaults(func=cmd_convert)


def _register_check(models) -> None:
    """`vqclip models check`: what a generate command with these flags needs, present or missing."""
    ck = command_parser(models, "check", examples=["vqclip models check", "vqclip models check --space forget",
                                                    "vqclip models check --recipe paper --space learn"],
                        help="what a generate command needs, present or missing, with where to put each (no run)",
                        description="List every file `vqclip generate` with these flags needs (the CLIP weights, "
                                    "the VQGAN's config and checkpoint, the learn / forget projection), whether it "
                                    "is in the cache, and for each missing one where to get it and the exact path "
                                    "to put it at - the list a command prints when it cannot download them. "
                                    "Nothing is loaded or downloaded. Exits with status 1 when something is missing.")
    ck.add_argument("--space", action="append", default=[], choices=("clip", "learn", "forget"),
                    help="a space to generate in (repeatable; default clip)")
    ck.add_argument("--recipe", default=None, choices=("nerdyrodent", "paper", "vqclip"),
                    help="the recipe whose VQGAN is needed (default vqclip)")
    ck.add_argument("--vqgan", default=None, metavar="NAME", help="a registered VQGAN instead of the recipe's")
    ck.add_argument("--paper-dataset", action="store_true", help="also the paper's typographic-attack photos "
                    "(`vqclip reproduce typographic`)")
    add_clip_args(ck)
    add_cache_arg(ck)
    add_quiet_arg(ck, "accepted by every command; check shows no progress")
    ck.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from ..generation.recipes import recipe_vqgan
    from ..preflight import format_table, plan_assets

    needs = plan_assets(clip=args.clip, pretrained=args.pretrained, cache=args.cache_dir,
                        vqgan=recipe_vqgan(args.recipe or "vqclip", args.vqgan, None),
                        spaces=[(s, None) for s in args.space], paper_dataset=args.paper_dataset)
    print(format_table(needs))
    return 1 if any(not n.present for n in needs) else 0


def _table(rows: list[dict]) -> str:
    headers = ("NAME", "KIND", "F", "CODES", "SIZE", "HASH", "CACHE")
    lines = [[("* " if r["default"] else "  ") + r["name"], r["kind"], str(r["factor"] or "?"),
              str(r["n_embed"] or "?"), r["size"], r["verification"], r["status"]] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    widths[0] = max(widths[0], len(headers[0]) + 2)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format("  " + headers[0], *headers[1:])] + [fmt.format(*line) for line in lines]
    return "\n".join(s.rstrip() for s in out)


def _projection_table(rows: list[dict]) -> str:
    headers = ("PROJECTION", "d", "SIZE", "SOURCE", "CACHE")
    lines = [[r["name"], str(r["dim"]) if r["dim"] else f"{r.get('expected_dim') or ''}?", r.get("size", ""),
              r["source"], r["status"]] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(s.rstrip() for s in [fmt.format(*headers)] + [fmt.format(*line) for line in lines])


def cmd_list(args: argparse.Namespace) -> int:
    from ..cache import cache_dir
    from ..models.registry import list_assets, vqgan_root
    from ..projections import list_projection_assets
    from ..projections.published import PAPER_DRIVE_FOLDER

    rows = list_assets(args.cache_dir)
    projections = list_projection_assets(args.cache_dir)
    if args.json:
        for row in rows:
            print(json.dumps({"type": "vqgan", **row}))
        for row in projections:
            print(json.dumps({"type": "projection", **row}))
        return 0
    print(_table(rows))
    print(f"\n* default. Cache: {vqgan_root(args.cache_dir)} (set with --cache-dir or $VQCLIP_CACHE; "
          f"root {cache_dir(args.cache_dir)}).")
    print("No sha256 is published for these checkpoints: downloads are checked for size and loaded strictly, "
          "but their content cannot be verified.\n")
    print(_projection_table(projections))
    print(f"\nProjections: {cache_dir(args.cache_dir) / 'projections'}/<clip>/<space>.safetensors, where "
          "`--space learn|forget` looks. The paper's (Materzynska, Torralba, Bau, CVPR 2022) come from the authors' "
          f"folder {PAPER_DRIVE_FOLDER} on first use; no hash is published: each file is checked for shape, "
          "finite values and orthonormal rows, and its sha256 is recorded in the conversion. Other CLIPs: "
          "`vqclip train --space learn|forget --clip NAME --pretrained TAG`.")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..models.registry import ensure_converted, fetch_asset, VQGAN_ASSETS
    from ..projections import ensure_projection, PROJECTION_ASSETS, unknown_registered_name

    for name in args.names:  # check every name before fetching anything
        if name not in VQGAN_ASSETS and name not in PROJECTION_ASSETS:
            raise unknown_registered_name(name, "NAME")
    for name in args.names:
        if name in PROJECTION_ASSETS:
            print(f"{name}: {ensure_projection(name, args.cache_dir, progress=not args.quiet, arg='NAME')}")
        elif args.no_convert:
            config, ckpt = fetch_asset(name, args.cache_dir, progress=not args.quiet, arg="NAME")
            print(f"{name}: {ckpt} (config {config})")
        else:
            path = ensure_converted(name, args.cache_dir, progress=not args.quiet,
                                    remove_original=args.remove_original, arg="NAME")
            print(f"{name}: {path}")
    return 0


def _refuse_projection_file(checkpoint: str) -> None:
    """A learn / forget matrix passed as a VQGAN checkpoint is answered as the projection it is."""
    from ..errors import bad_arg
    from ..projections.authors import MAX_FILE_BYTES, read_matrix_file
    from ..projections.files import space_from_name

    path = Path(checkpoint).expanduser()
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return  # a VQGAN checkpoint is far larger than any projection
    except OSError:
        return
    W, _, _ = read_matrix_file(path)
    if W is None or W.ndim != 2:
        return
    space = space_from_name(path.name)
    kind = f"a {space} projection" if space else "a projection matrix"
    raise bad_arg("--checkpoint", f"this is {kind} ({'×'.join(map(str, W.shape))}), not a VQGAN checkpoint",
                  str(path), f"Use it with `vqclip generate --projection {path}` (add --space learn|forget if its "
                  "name does not say), or put the paper's files in the published folder `vqclip models check "
                  "--space forget` names, where vqclip checks and converts them.")


def cmd_convert(args: argparse.Namespace) -> int:
    from ..cache import slug
    from ..errors import bad_arg
    from ..io import disk_errors, writable_folder
    from ..models.registry import VQGAN_ASSETS, asset_dir, convert_named, converted_path, get_asset

    _refuse_projection_file(args.checkpoint)
    config = args.config
    if config is None and args.name in VQGAN_ASSETS:
        asset = get_asset(args.name)
        cached = asset_dir(asset.name, args.cache_dir) / asset.config.filename
        if not cached.is_file():
            raise bad_arg("--config", f"needed: the config of {asset.name} is not in the cache", None,
                          f"Pass --config YAML or put the model.yaml at {cached}.")
        config = cached
    name = args.name or slug(Path(args.checkpoint).stem)
    if args.name is not None and args.name not in VQGAN_ASSETS and slug(args.name) != args.name:
        raise bad_arg("--name", "may hold only letters, digits, '.', '_' and '-'", args.name,
                      f"Use e.g. {slug(args.name)}.")
    out = Path(args.output).expanduser() if args.output else converted_path(name, args.cache_dir)
    if out.suffix != ".safetensors":
        raise bad_arg("--output", "must end in .safetensors", str(out), "Name the output file NAME.safetensors.")
    if out.exists() and not args.overwrite:
        where = "--output" if args.output else "--name"
        raise bad_arg(where, "a file already exists there and is never replaced silently", str(out),
                      f"Pass --overwrite to replace it, or choose another {where}.")
    where = "--output" if args.output else "--cache-dir"
    writable_folder(out.parent, arg=where)  # the probe is O_EXCL: a link planted in the folder is never followed
    with disk_errors(where, "nothing was written (no partial file is left)"):
        convert_named(config, args.checkpoint, out, name, config_arg="--config", checkpoint_arg="--checkpoint")
    use = f"--vqgan {name}" if not args.output else f"--vqgan-checkpoint {out}"
    print(f"{out}\nUse it with {use} (no config needed: the file carries it).")
    return 0
