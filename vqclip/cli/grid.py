"""`vqclip grid DIR`: a labelled comparison grid (PNG pages) and an offline HTML gallery of a batch or of runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from .common import add_out_file_arg, add_quiet_arg, check_out_file, command_parser


def register(sub) -> None:
    p = command_parser(
        sub, "grid", help="comparison grid (PNG) and HTML gallery of a batch folder or a folder of runs",
        examples=["vqclip grid outputs/batch --html",
                  "vqclip grid outputs --where seed=0 --cols space --out-file cmp.png"],
        description="Draw a labelled grid of the images of a `vqclip batch` folder (or of `vqclip generate` runs "
                    "below a folder): rows are prompts, columns are spaces by default; any other field that varies "
                    "(e.g. the seed) is added to the columns. Missing or failed images are drawn as empty cells with "
                    "a note, so a batch still running can be viewed. Every image gets a place: runs that agree on every "
                    "field are told apart by their run folder. Large grids are split into pages.")
    p.add_argument("folder", metavar="DIR", help="batch folder (batch.json, manifest.jsonl) or a folder of runs")
    p.add_argument("--rows", default="prompt", metavar="FIELD",
                   help="field of the rows (default prompt): prompt, space, seed, word_type, run (the job or "
                        "run folder) or a setting such as steps, size, lr, cutn")
    p.add_argument("--cols", default="space", metavar="FIELDS",
                   help="comma list of column fields (default space); fields that still vary are appended")
    p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                   help="only images with this value, e.g. --where seed=0 (repeatable)")
    p.add_argument("--thumb", type=int, default=160, metavar="PX",
                   help=f"thumbnail size in pixels, {THUMB[0]} to {THUMB[1]} (default 160)")
    p.add_argument("--font-size", type=int, default=14, metavar="PX",
                   help=f"label font size, {FONT_SIZE[0]} to {FONT_SIZE[1]} (default 14)")
    p.add_argument("--label-width", type=int, default=None, metavar="PX",
                   help=f"width of the row-label column, {LABEL_WIDTH[0]} to {LABEL_WIDTH[1]} (default about 1.5 "
                        "thumbnails)")
    p.add_argument("--max-rows", type=int, default=16, metavar="N",
                   help=f"rows per page, 1 to {PAGE_CELLS} (default 16)")
    p.add_argument("--max-cols", type=int, default=12, metavar="N",
                   help=f"columns per page, 1 to {PAGE_CELLS} (default 12); a page is at most "
                        f"{PAGE_PIXELS // 1_000_000} M pixels")
    add_out_file_arg(p, "FILE.png", "grid file (default DIR/grid.png; pages become grid-001.png, grid-002.png, "
                                    "...)")
    p.add_argument("--html", nargs="?", const="", default=None, metavar="FILE.html",
                   help="also write a static HTML gallery (default DIR/index.html)")
    p.add_argument("--no-png", action="store_true", help="only the HTML gallery (with --html)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in the way of the grid or gallery that vqclip did not write (pages and "
                        "galleries of the same grid are always replaced)")
    add_quiet_arg(p, help="print only the files written, not the summary line")
    p.set_defaults(func=run_grid)


# Bounds on the page geometry (issue 28: --thumb 100000 or --label-width 10000000 ended in MemoryError, --font-size
# 100000 in an OS error): every flag within its range, and a whole page (at its largest) within PAGE_PIXELS.
THUMB = (16, 1024)
FONT_SIZE = (6, 128)
LABEL_WIDTH = (16, 4096)
PAGE_CELLS = 256
PAGE_PIXELS = 64_000_000  # 192 MB as RGB; the default page (160 px, 16 x 12) is ~6 M pixels


def check_grid_flags(args: argparse.Namespace) -> None:
    """Each size flag within its bounds, and the largest page they allow within PAGE_PIXELS, before any work."""
    from ..errors import bad_arg
    from ..untrusted import check_count

    for name in ("max_rows", "max_cols"):
        if getattr(args, name) < 1:
            raise bad_arg(f"--{name.replace('_', '-')}", "must be at least 1", getattr(args, name), "Try 16.")
        check_count(getattr(args, name), f"--{name.replace('_', '-')}", 1, PAGE_CELLS, "16")
    check_count(args.thumb, "--thumb", *THUMB, "160")
    check_count(args.font_size, "--font-size", *FONT_SIZE, "14")
    if args.label_width is not None:
        check_count(args.label_width, "--label-width", *LABEL_WIDTH, "240")
    pad = 6
    label_w = args.label_width or max(140, min(320, int(args.thumb * 1.5)))
    width = 2 * pad + label_w + (args.thumb + pad) * args.max_cols
    # the title (up to 8 lines) and 3 header lines, roughly; a row is its thumbnail and loss line, or up to 8 lines of
    # label (vqclip.grid.png.ROW_LINES, about 1.5 x the font size each)
    row = max(args.thumb + 2 * args.font_size, 12 * args.font_size)
    height = 20 * args.font_size + (row + pad) * args.max_rows + pad
    if width * height > PAGE_PIXELS:
        raise bad_arg("--thumb", f"a page of {args.max_rows} x {args.max_cols} thumbnails of {args.thumb} px would be "
                      f"{width} x {height} pixels, more than the {PAGE_PIXELS // 1_000_000} M vqclip draws",
                      args.thumb, "Lower --thumb, --max-rows or --max-cols.")


def run_grid(args: argparse.Namespace) -> int:
    from ..grid import GridStyle, make_grid, parse_where
    from ..errors import bad_arg

    check_out_file(args, "grid")
    check_grid_flags(args)
    if args.no_png and args.html is None:
        raise bad_arg("--no-png", "leaves nothing to write without --html", True, "Add --html, or drop --no-png.")
    cols = [c for c in args.cols.split(",") if c.strip()]
    style = GridStyle(thumb=args.thumb, font_size=args.font_size, label_width=args.label_width,
                      max_rows=args.max_rows, max_cols=args.max_cols)
    html_path = None if args.html is None else Path(args.html or Path(args.folder) / "index.html")
    written = make_grid(args.folder, args.out, args.rows, cols, parse_where(args.where), style, html_path,
                        png=not args.no_png, overwrite=args.overwrite)
    for page in written["pages"]:
        print(page)
    if written["html"]:
        print(written["html"])
    if not args.quiet:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(written["statuses"].items()))
        print(f"vqclip grid: {written['rows']} rows x {written['cols']} columns ({', '.join(written['col_fields'])}): "
              f"{counts}", file=sys.stderr)
    return 0
