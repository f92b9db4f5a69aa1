"""Hostile input files, driven through the CLI: each ends in a precise one-line error (never a traceback, never
the last-resort "unexpected error"), and nothing outside vqclip's own outputs changes.

Also the library-level checks behind them: the feature cache, word lists and class maps, OCR cache entries and
annotation paths that try to leave their folder.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from vqclip.cli import main
from vqclip.errors import VqclipError
from vqclip.models.tiny import make_vqgan, write_taming_files
from vqclip.models.vqgan import save_converted

from test_hardening_promptfile import ALIAS_BOMB


# ------------------------------------------------------------------------------------------------ the world

@pytest.fixture(scope="module")
def features_folder(tmp_path_factory, tiny_clip):
    """A complete feature cache of a few tuples, made once; each test damages its own copy."""
    import random

    from PIL import ImageDraw

    from vqclip.spelling.dataset import DataConfig, build_dataset
    from vqclip.spelling.features import extract_features
    from vqclip.spelling.images import image_folder

    root = tmp_path_factory.mktemp("feat")
    rng = random.Random(0)
    for c in ("apple", "pear"):
        (root / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            im = Image.new("RGB", (40, 40), tuple(rng.randrange(256) for _ in range(3)))
            ImageDraw.Draw(im).ellipse((5, 5, 30, 30), fill=(200, 30 * i, 30))
            im.save(root / "imgs" / c / f"{i}.jpg")
    ds = build_dataset(image_folder(root / "imgs"), tiny_clip.input_size,
                       config=DataConfig(words=6, class_renders=1, val_fraction=0.0, test_fraction=0.0))
    return extract_features(tiny_clip, ds, out=root / "features", batch_size=4, shard_size=4, progress=False)


def _copy_features(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(p == s or s in p.parents for s in skip):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _gen(world: Path, *extra: str) -> list[str]:
    return ["generate", "an apple", "--clip", world.clip, "--steps", "1", "--size", "32", "32", "--cutn", "1",
            "--device", "cpu", "--out", str(world / "out"), *extra]


def _damage_meta(edit):
    def setup(world):
        meta = json.loads((world.features / "meta.json").read_text())
        (world.features / "meta.json").write_text(json.dumps(edit(meta)))
    return setup


def _replace_shard(world):
    from safetensors.torch import save_file

    save_file({"x_i": torch.zeros(4, 3), "x_t": torch.zeros(4, 3), "x_it": torch.zeros(4, 3),
               "valid": torch.ones(4, dtype=torch.bool)}, str(world.features / "shard-00000.safetensors"))


def _bad_yaml(key, value):
    def setup(world):
        cfg = yaml.safe_load(world.config.read_text())
        cfg["model"]["params"]["ddconfig"][key] = value
        world.config.write_text(yaml.safe_dump(cfg))
    return setup


def _write(name, data: bytes):
    def setup(world):
        (world / name).write_bytes(data)
    return setup


def _cached_zero_projection(world):
    from vqclip.projections import projection_path, save_projection

    save_projection(projection_path("learn", world.clip_identity), torch.zeros(4, 32), "learn",
                    world.clip_identity)


BINARY = bytes(range(256)) * 4
TRAIN = ["train", "--space", "learn", "--epochs", "1", "--no-progress", "--out-file", "{out}/p.safetensors"]

# (name, setup, argv with {w} = the world folder, text the error must contain)
CASES = [
    ("zero-byte checkpoint", _write("empty.ckpt", b""),
     lambda w: _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w / "empty.ckpt")), "empty file"),
    ("truncated safetensors", lambda w: (w / "cut.safetensors").write_bytes(w.converted.read_bytes()[:3000]),
     lambda w: _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w / "cut.safetensors")),
     "could not read the checkpoint"),
    ("ch_mult empty", _bad_yaml("ch_mult", []),
     lambda w: _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w.ckpt)), "`ch_mult`"),
    ("ch not a number", _bad_yaml("ch", "abc"),
     lambda w: _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w.ckpt)), "`ch`"),
    ("negative size", _bad_yaml("z_channels", -3),
     lambda w: _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w.ckpt)), "`z_channels`"),
    ("cached zero projection", _cached_zero_projection,
     lambda w: _gen(w, "--space", "learn", "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w.ckpt)),
     "Delete that file"),
    ("meta.json not JSON", _write("features/meta.json", b"\xff\xfe{"),
     lambda w: ["train", "--features", str(w.features), *TRAIN[1:]], "meta.json"),
    ("meta.json missing keys", _damage_meta(lambda m: {"format": m["format"], "clip_model": m["clip_model"]}),
     lambda w: ["train", "--features", str(w.features), *TRAIN[1:]], "meta.json"),
    ("meta.json zero sizes", _damage_meta(lambda m: {**m, "shard_size": 0}),
     lambda w: ["train", "--features", str(w.features), *TRAIN[1:]], "shard_size"),
    ("shard of the wrong shape", _replace_shard,
     lambda w: ["train", "--features", str(w.features), *TRAIN[1:]], "shard-00000.safetensors"),
    ("words.json not UTF-8", _write("features/words.json", b'{"words": [{"word": "\xff\xfe", "real": 1}]}'),
     lambda w: ["train", "--features", str(w.features), *TRAIN[1:]], "words.json"),
    ("binary class map", _write("classes.txt", BINARY),
     lambda w: ["train", "--clip", w.clip, "--images", str(w.images), "--class-map", str(w / "classes.txt"),
                *TRAIN[1:]], "--class-map"),
    ("binary word list", _write("words.txt", BINARY),
     lambda w: ["train", "--clip", w.clip, "--images", str(w.images), "--word-list", str(w / "words.txt"),
                *TRAIN[1:]], "--word-list"),
    ("binary --words for score", _write("words.txt", BINARY),
     lambda w: ["score", str(w / "imgs"), "--words", str(w / "words.txt"), "--out", str(w / "out")], "--words"),
    ("YAML alias bomb", _write("bomb.yaml", ALIAS_BOMB.encode()),
     lambda w: ["batch", str(w / "bomb.yaml"), "--dry-run", "--out", str(w / "out")], "alias"),
    ("JSON nested deep", _write("deep.json", b"[" * 5000 + b"]" * 5000),
     lambda w: ["batch", str(w / "deep.json"), "--dry-run", "--out", str(w / "out")], "levels deep"),
    ("--seeds 0-100000000", _write("p.txt", b"an apple\n"),
     lambda w: ["batch", str(w / "p.txt"), "--seeds", "0-100000000", "--dry-run", "--out", str(w / "out")],
     "at most 10000 seeds"),
]


# ------------------------------------------------------------------- issue 28: every hostile input gets a rule

class _Reduce:
    """Pickles as `fn(*args)`: the 40-byte pickle bombs of the issue."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


BOMBS = {"bytearray": _Reduce(bytearray, (1 << 30,)), "set-range": _Reduce(set, (range(2**27),)),
         "list-range": _Reduce(list, (range(2**30),))}


def _pickle_bomb(kind, zipped=False):
    import pickle

    def setup(world):
        if zipped:
            torch.save({"w": torch.zeros(2), "x": BOMBS[kind]}, world / "bomb.pt")
        else:
            (world / "bomb.pt").write_bytes(pickle.dumps(BOMBS[kind], protocol=2))
    return setup


def _state_file(make):
    def setup(world):
        state = make_vqgan().state_dict()
        torch.save(make(state), world / "odd.pt")
    return setup


def _taming_yaml(edit=None, text=None):
    def setup(world):
        if text is not None:
            (world / "odd.yaml").write_bytes(text)
            return
        cfg = yaml.safe_load(world.config.read_text())
        edit(cfg["model"]["params"]["ddconfig"])
        (world / "odd.yaml").write_text(yaml.safe_dump(cfg))
    return setup


def _clip_dir(edit=None, weights=True):
    def setup(world):
        src = Path(world.clip[len("local-dir:"):])
        dst = world / "clip"
        dst.mkdir()
        for f in src.iterdir():
            if weights or not f.name.endswith(".safetensors"):
                (dst / f.name).write_bytes(f.read_bytes())
        if edit:
            cfg = json.loads((dst / "open_clip_config.json").read_text())
            edit(cfg["model_cfg"])
            (dst / "open_clip_config.json").write_text(json.dumps(cfg))
    return setup


def _set(tower, key, value):
    def edit(model_cfg):
        (model_cfg[tower] if tower else model_cfg)[key] = value
    return edit


def _needs_missing(module):
    import importlib.util

    def edit(model_cfg):
        if importlib.util.find_spec(module) is not None:
            pytest.skip(f"{module} is installed here")
        if module == "transformers":
            model_cfg["text_cfg"]["hf_tokenizer_name"] = "bert-base-uncased"
        else:
            model_cfg["vision_cfg"]["timm_model_name"] = "vit_base_patch16_224"
    return edit


def _projection(make):
    def setup(world):
        from safetensors.torch import save_file

        q, _ = torch.linalg.qr(torch.randn(32, 4, generator=torch.Generator().manual_seed(0)))
        save_file({"W": make(q.T.contiguous())}, str(world / "W.safetensors"))
    return setup


def _wrong_registered_conversion(world):
    from vqclip.models.registry import converted_path

    path = converted_path("vqgan_imagenet_f16_16384", world / "cache")
    path.parent.mkdir(parents=True)
    save_converted(make_vqgan(), path)


def _swap_words(world):
    data = json.loads((world.features / "words.json").read_text())
    words = data["words"]
    words[0]["word"], words[1]["word"] = words[1]["word"], words[0]["word"]
    (world.features / "words.json").write_text(json.dumps(data))


def _ckpt(w, path):
    return _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(path))


def _convert(w, path, config=None):
    return ["models", "convert", "--config", str(config or w.config), "--checkpoint", str(path),
            "--output", "{out}/x.safetensors"]


def _gen_clip(w, *extra):
    args = _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w.ckpt), *extra)
    args[args.index("--clip") + 1] = f"local-dir:{w / 'clip'}"
    return args


CASES += [
    *[(f"pickle bomb {k}{' (zip)' if z else ''}", _pickle_bomb(k, z), lambda w: _ckpt(w, w / "bomb.pt"),
       "pickle bomb") for k in BOMBS for z in (False, True)],
    ("pickle bomb via models convert", _pickle_bomb("bytearray"), lambda w: _convert(w, w / "bomb.pt"),
     "pickle bomb"),
    *[(f"checkpoint {name} ({cmd})", _state_file(make), (lambda w: _ckpt(w, w / "odd.pt")) if cmd == "generate"
       else (lambda w: _convert(w, w / "odd.pt")), expect)
      for name, make, expect in (
          ("meta tensors", lambda s: {k: v.to("meta") for k, v in s.items()}, "`meta` device"),
          ("sparse tensors", lambda s: {k: v.to_sparse() if v.ndim == 2 else v for k, v in s.items()}, "not a dense"),
          ("state dict a list", lambda s: {"state_dict": list(s.values())}, "it is a list"),
          ("integer keys", lambda s: {i + 100: v for i, v in enumerate(s.values())}, "parameter names"))
      for cmd in ("generate", "convert")],
    ("VQGAN YAML nested 10000 deep", _taming_yaml(text=b"model: " + b"[" * 10000 + b"]" * 10000 + b"\n"),
     lambda w: _gen(w, "--vqgan-config", str(w / "odd.yaml"), "--vqgan-checkpoint", str(w.ckpt)), "--vqgan-config"),
    ("VQGAN YAML binary", _taming_yaml(text=BINARY),
     lambda w: _convert(w, w.ckpt, w / "odd.yaml"), "binary"),
    ("VQGAN of 300 B parameters", _taming_yaml(lambda d: d.update(ch=4096, ch_mult=[1] * 8, num_res_blocks=64)),
     lambda w: _gen(w, "--vqgan-config", str(w / "odd.yaml"), "--vqgan-checkpoint", str(w.ckpt)), "parameters"),
    ("CLIP context_length 0", _clip_dir(_set("text_cfg", "context_length", 0)), _gen_clip, "context_length"),
    ("CLIP embed_dim 0", _clip_dir(_set(None, "embed_dim", 0)), _gen_clip, "embed_dim"),
    ("CLIP vocab_size 0", _clip_dir(_set("text_cfg", "vocab_size", 0)), _gen_clip, "vocab_size"),
    ("CLIP layers 100000", _clip_dir(_set("text_cfg", "layers", 100000)), _gen_clip, "layers"),
    ("CLIP HF tokenizer, transformers missing", _clip_dir(_needs_missing("transformers")), _gen_clip,
     "needs the package transformers"),
    ("CLIP timm tower, timm missing", _clip_dir(_needs_missing("timm")), _gen_clip, "needs the package timm"),
    ("CLIP timm tower unknown to timm", _clip_dir(_set("vision_cfg", "timm_model_name", "no_such_model")),
     _gen_clip, "timm_model_name"),
    ("CLIP folder without weights", _clip_dir(weights=False), _gen_clip, "no weights file"),
    ("--pretrained ''", lambda w: None,
     lambda w: _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w.ckpt), "--clip", "ViT-B-32",
                    "--pretrained", ""), "--pretrained"),
    *[(f"projection {name}", _projection(make),
       lambda w: _gen(w, "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w.ckpt), "--space", "learn",
                      "--projection", str(w / "W.safetensors")), expect)
      for name, make, expect in (("W x 1e-30", lambda W: W * 1e-30, "singular values"),
                                 ("W x 1e30", lambda W: W * 1e30, "singular values"),
                                 ("20000 x 32", lambda W: torch.randn(20000, 32), "orthonormal"),
                                 ("bool", lambda W: W > 0, "floating-point"),
                                 ("int", lambda W: (W * 100).to(torch.int32), "floating-point"),
                                 ("complex", lambda W: W.to(torch.complex64), "floating-point"))],
    ("convert a tiny model into a registered name", lambda w: None,
     lambda w: ["models", "convert", "--name", "vqgan_imagenet_f16_16384", "--config", str(w.config),
                "--checkpoint", str(w.ckpt), "--cache-dir", "{out}/cache"], "registered"),
    ("--vqgan NAME holding another model", _wrong_registered_conversion,
     lambda w: _gen(w, "--vqgan", "vqgan_imagenet_f16_16384", "--cache-dir", str(w / "cache")), "registered"),
    ("train --gamma nan", lambda w: None,
     lambda w: ["train", "--features", str(w.features), "--gamma", "nan", *TRAIN[1:]], "--gamma"),
    ("testbed --gamma nan", lambda w: None,
     lambda w: ["testbed", "--quick", "--gamma", "nan", "--out", "{out}/tb"], "--gamma"),
    ("words.json with other words", _swap_words,
     lambda w: ["train", "--features", str(w.features), *TRAIN[1:]], "words.json"),
    ("JSON prompt file with a 10**4000 integer", _write("big.json", b'[{"prompt": "a", "steps": 1' + b"0" * 4000
                                                         + b'}, {"prompt": "b", "lr": 1' + b"0" * 4000 + b"}]"),
     lambda w: ["batch", str(w / "big.json"), "--dry-run", "--out", str(w / "out")], "must be"),
]



# ------------------------------------------------- issue 28: every reader of untrusted JSON / YAML is bounded

HOSTILE = {"binary": BINARY, "not UTF-8": b'{"a": "\xff\xfe\xfd"}',
           "nested 10**5 deep": b"[" * 100_000 + b"]" * 100_000}
YAML_HOSTILE = {**HOSTILE, "nested 10**5 deep": b"steps: " + b"[" * 100_000 + b"]" * 100_000 + b"\n"}


def _planted(rel, data, image=None):
    def setup(world):
        path = world / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if image:
            Image.new("RGB", (16, 16), (200, 0, 0)).save(path.parent / image)
    return setup


def _reproduce(w):
    return ["reproduce", "typographic", "--clip", w.clip, "--device", "cpu", "--out", str(w / "r"), "-q"]


READERS = [  # (entry point, the hostile file, an image beside it, argv, expected text)
    ("grid run.json", "g/run.json", "image.png", lambda w: ["grid", str(w / "g"), "--out-file", "{out}/g.png"],
     "run.json"),
    ("grid manifest.jsonl", "g/manifest.jsonl", "image.png",
     lambda w: ["grid", str(w / "g"), "--out-file", "{out}/g.png"], "manifest.jsonl"),
    ("score run.json", "s/run.json", "image.png", lambda w: ["score", str(w / "s"), "--out", "{out}/s", "-q"],
     "run.json"),
    ("batch resume batch.json", "b/batch.json", None,
     lambda w: ["batch", str(w / "p.txt"), "--out", str(w / "b"), "--dry-run"], "batch.json"),
    ("eval typographic annotation.json", "ds/annotation.json", "IMG_1.JPG",
     lambda w: ["eval", "typographic", "--dataset", str(w / "ds"), "--clip", w.clip, "--device", "cpu",
                "--spaces", "clip", "--no-progress", "--out", "{out}/e"], "--dataset"),
    ("animate resume animation.json", "a/animation.json", None,
     lambda w: ["animate", "an apple", "--frames", "2", "--steps-per-frame", "1", "--out", str(w / "a"),
                "--clip", w.clip, "--size", "32", "32", "--cutn", "1", "--device", "cpu",
                "--vqgan-config", str(w.config), "--vqgan-checkpoint", str(w.ckpt)], "--out"),  # not resumable, kept
    ("reproduce report.json", "r/report.json", None, _reproduce, "report.json"),
]


def _reader_cases():
    out = []
    for name, rel, image, argv, expect in READERS:
        for kind, data in HOSTILE.items():
            def setup(world, rel=rel, data=data, image=image):
                (world / "p.txt").write_text("an apple\n")
                _planted(rel, data, image)(world)
            out.append((f"{name} {kind}", setup, argv, expect))
    for kind, data in YAML_HOSTILE.items():
        out.append((f"generate --config {kind}", _planted("c.yaml", data),
                    lambda w: _gen(w, "--config", str(w / "c.yaml")), "--config"))
    return out


CASES += _reader_cases()


def _grid_of_one(w):
    """A run folder grid can draw (run.json and its image)."""
    folder = w / "g"
    folder.mkdir()
    Image.new("RGB", (16, 16), (0, 200, 0)).save(folder / "image.png")
    (folder / "run.json").write_text(json.dumps({"vqclip_version": "0", "settings": {"prompts": ["a"]},
                                                 "image": "image.png", "status": "finished"}))
    return ["grid", str(folder), "--out-file", "{out}/g.png"]


def _synthetic(w, *extra):
    for obj in ("apple", "cup"):
        (w / "src" / obj).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (50, 40), (20, 200, 90)).save(w / "src" / obj / "a.png")
    return ["eval", "typographic", "--synthetic", str(w / "src"), "--synthetic-out", "{out}/syn", "--spaces", "clip",
            "--clip", w.clip, "--device", "cpu", "--no-progress", "--out", "{out}/e", *extra]


CASES += [  # flags whose size was unbounded (issue 28)
    ("grid --font-size 100000", lambda w: None, lambda w: [*_grid_of_one(w), "--font-size", "100000"],
     "--font-size"),
    ("grid --thumb 100000", lambda w: None, lambda w: [*_grid_of_one(w), "--thumb", "100000"], "--thumb"),
    ("grid --label-width 10000000", lambda w: None, lambda w: [*_grid_of_one(w), "--label-width", "10000000"],
     "--label-width"),
    ("grid page of 1024 px thumbnails", lambda w: None,
     lambda w: [*_grid_of_one(w), "--thumb", "1024", "--max-rows", "64"], "Lower --thumb"),
    ("eval typographic --synthetic --size 100000", lambda w: None, lambda w: _synthetic(w, "--size", "100000"),
     "--size"),
    ("eval typographic --max-images -5", lambda w: None, lambda w: _synthetic(w, "--max-images", "-5"),
     "--max-images"),
    ("eval typographic binary --attack-words", _write("words.bin", BINARY),
     lambda w: _synthetic(w, "--attack-words", str(w / "words.bin")), "--attack-words"),
]


class World(type(Path())):
    pass


@pytest.fixture()
def world(tmp_path, tiny_clip_id, tiny_clip, features_folder):
    w = World(tmp_path / "w")
    w.mkdir()
    w.clip, w.clip_identity = tiny_clip_id, tiny_clip.identity
    w.config, w.ckpt = write_taming_files(w / "vq")
    w.converted = save_converted(make_vqgan(), w / "vq" / "tiny.safetensors")
    w.features = _copy_features(features_folder, w / "features")
    w.images = features_folder.parent / "imgs"  # read only
    (w / "imgs").mkdir()
    Image.new("RGB", (16, 16), (255, 255, 255)).save(w / "imgs" / "a.png")
    return w


@pytest.mark.parametrize("name,setup,argv,expect", CASES, ids=[c[0] for c in CASES])
def test_hostile_inputs_end_in_one_precise_line_and_change_nothing(world, capsys, name, setup, argv, expect):
    setup(world)
    args = [a.replace("{out}", str(world / "out")) for a in argv(world)]
    before = _snapshot(world, (world / "out",))
    code = main(args)
    out, err = capsys.readouterr()
    assert code not in (0, None), (name, err)
    assert "Traceback" not in out + err and "unexpected error" not in err, err
    first = err.strip().splitlines()[0]
    assert "error:" in first and expect in err, err
    if not args[0] == "batch":  # batch lists every problem of the prompt files, one per line
        assert len(err.strip().splitlines()) == 1, err
    assert _snapshot(world, (world / "out",)) == before


# ------------------------------------------------------------------------------------- feature cache (library)

@pytest.mark.parametrize("damage,expect", [
    (lambda f: (f / "meta.json").write_text("[1, 2]"), "must hold a JSON object"),
    (lambda f: (f / "meta.json").write_text(json.dumps({**json.loads((f / "meta.json").read_text()),
                                                        "tuples": "many"})), "`tuples`"),
    (lambda f: (f / "meta.json").write_text(json.dumps({**json.loads((f / "meta.json").read_text()),
                                                        "tuples": 10 ** 12, "shard_size": 1})), "shards"),
    (lambda f: (f / "meta.json").write_text(json.dumps({**json.loads((f / "meta.json").read_text()),
                                                        "classes": ["a"]})), "class_prompts"),
    (lambda f: (f / "words.json").write_bytes(b"\x80\x81"), "words.json"),
    (lambda f: (f / "text.safetensors").write_bytes(b"junk"), "incomplete"),
])
def test_damaged_feature_caches_are_named_errors(tmp_path, features_folder, damage, expect):
    from vqclip.spelling.features import load_features

    folder = _copy_features(features_folder, tmp_path / "f")
    damage(folder)
    with pytest.raises(VqclipError, match=expect) as e:
        load_features(folder)
    assert "\n" not in str(e.value)


def test_feature_cache_with_nan_or_out_of_range_ids_is_refused(tmp_path, features_folder):
    from safetensors.torch import load_file, save_file

    from vqclip.spelling.features import load_features

    folder = _copy_features(features_folder, tmp_path / "f")
    shard = load_file(str(folder / "shard-00000.safetensors"))
    shard["x_i"][0, 0] = float("nan")
    save_file(shard, str(folder / "shard-00000.safetensors"))
    with pytest.raises(VqclipError, match="x_i holds NaN"):
        load_features(folder)
    folder = _copy_features(features_folder, tmp_path / "g")
    plan = load_file(str(folder / "plan.safetensors"))
    plan["word_ids"][0] = 10 ** 6
    save_file(plan, str(folder / "plan.safetensors"))
    with pytest.raises(VqclipError, match="word_ids must index"):
        load_features(folder)
    assert len(load_features(features_folder)) == 6  # the undamaged original still loads


# ---------------------------------------------------------------------------------- word lists and class maps

def test_binary_and_non_utf8_word_files_are_refused(tmp_path):
    from vqclip.evaluate.sources import read_words_file
    from vqclip.spelling.images import load_class_map
    from vqclip.spelling.words import WordList

    (tmp_path / "bin.txt").write_bytes(BINARY)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    for read, arg in ((WordList.load, "--word-list"), (load_class_map, "--class-map"), (read_words_file, "--words")):
        with pytest.raises(VqclipError, match=f"{arg}: is a binary file"):
            read(tmp_path / "bin.txt")
        with pytest.raises(VqclipError, match=f"{arg}: is not UTF-8 text"):
            read(tmp_path / "latin1.txt")
    (tmp_path / "map.json").write_text("42")
    with pytest.raises(VqclipError, match="must be an object"):
        load_class_map(tmp_path / "map.json")
    (tmp_path / "w.json").write_text(json.dumps({"words": [{"word": 5, "real": True}]}))
    with pytest.raises(VqclipError, match="--word-list"):
        WordList.load(tmp_path / "w.json")


# ------------------------------------------------------------------------------------------------ OCR cache

@pytest.mark.parametrize("entry", [
    {"confidence": float("nan")}, {"confidence": float("inf")}, {"confidence": 7.0}, {"confidence": -1.0},
    {"box": [[0, 0], [1, 0], [1, float("nan")], [0, 1]]}, {"box": [[0, 0]]},
])
def test_ocr_cache_entries_that_no_reader_makes_are_not_trusted(tmp_path, entry):
    from vqclip.evaluate.ocr import Detection, OcrCache

    cache = OcrCache("reader", tmp_path / "c")
    good = Detection(((0, 0), (1, 0), (1, 1), (0, 1)), "apple", 0.9)
    cache.put("ab" * 32, [good])
    assert cache.get("ab" * 32) == [good]
    bad = {**good.to_dict(), **entry}
    path = cache._path("ab" * 32)
    path.write_text(json.dumps({"sha256": "ab" * 32, "detections": [bad]}))
    assert cache.get("ab" * 32) is None
    path.write_text(json.dumps({"sha256": "cd" * 32, "detections": [good.to_dict()]}))
    assert cache.get("ab" * 32) is None  # an entry for another image


def test_ocr_cache_ignores_a_non_finite_entry_and_reads_again(tmp_path):
    from vqclip.evaluate.ocr import Detection, OcrCache, ocr_images

    class Reader:
        key, calls = "r", 0

        def read(self, images):
            Reader.calls += len(images)
            return [[Detection(((0, 0), (1, 0), (1, 1), (0, 1)), "apple", 0.5)] for _ in images]

    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "a.png")
    cache = OcrCache("r", tmp_path / "c")
    first = ocr_images([tmp_path / "a.png"], Reader(), cache, progress=False)
    path = cache._path(first[0].sha256)
    data = json.loads(path.read_text())
    data["detections"][0]["confidence"] = float("nan")
    path.write_text(json.dumps(data))
    again = ocr_images([tmp_path / "a.png"], Reader(), cache, progress=False)
    assert not again[0].cached and Reader.calls == 2
    assert math.isfinite(again[0].detections[0].confidence)


# ------------------------------------------------------------------------------------ annotation paths

def test_iiit5k_image_names_cannot_leave_the_folder(tmp_path):
    np = pytest.importorskip("numpy")
    sio = pytest.importorskip("scipy.io")
    from vqclip.evaluate.iiit5k import read_iiit5k

    root = tmp_path / "IIIT5K"
    (root / "test").mkdir(parents=True)
    Image.new("RGB", (30, 10)).save(root / "test" / "ok.png")
    Image.new("RGB", (30, 10)).save(tmp_path / "secret.png")  # exists: only the rule keeps it out
    names = ["test/ok.png", "../secret.png", str(tmp_path / "secret.png"), "test/../../secret.png"]
    dt = [("ImgName", "O"), ("GroundTruth", "O")]
    table = np.zeros((1, len(names)), dtype=dt)
    for i, n in enumerate(names):
        table[0, i] = (n, "WORD")
    sio.savemat(str(root / "testdata.mat"), {"testdata": table})
    data = read_iiit5k(root)
    assert [c.path for c in data.crops] == [root / "test" / "ok.png"]
    assert sorted(s["path"] for s in data.skipped) == sorted(names[1:])
    assert all("leaves the images folder" in s["reason"] for s in data.skipped)


def test_typographic_annotation_names_cannot_leave_the_folder(tmp_path):
    from vqclip.evaluate.typographic import read_annotation_dataset

    root = tmp_path / "photos"
    root.mkdir()
    Image.new("RGB", (20, 20)).save(root / "IMG_1.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "private.png")
    entry = {"true object": "cup", "typographic attack label": "ipod"}
    (root / "annotation.json").write_text(json.dumps({"IMG_1.png": entry, "../private.png": entry,
                                                       str(tmp_path / "private.png"): entry}))
    ds = read_annotation_dataset(root)
    assert [s.path for s in ds.samples] == [root / "IMG_1.png"]
    assert sum("leaves the dataset folder" in s["reason"] for s in ds.skipped) == 2


@pytest.mark.parametrize("name,ok", [("a.png", True), ("sub/./b.png", True), ("sub/../a.png", True),
                                     ("../a.png", False), ("/etc/passwd", False), ("sub/../../a", False),
                                     ("C:/x.png", False), ("..\\..\\x.png", False), ("", False)])
def test_inside_keeps_names_in_their_folder(tmp_path, name, ok):
    from vqclip.evaluate.common import inside

    assert (inside(tmp_path, name) is not None) == ok


# ------------------------------------------------------------------------------------------ decompression bombs

@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A ~50 kB PNG that declares 400 M pixels (beyond Pillow's error limit)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (20000, 20000)).save(path, optimize=True)
    assert path.stat().st_size < 200_000
    return path


def test_decompression_bombs_are_refused_before_decoding(tmp_path, bomb):
    from vqclip.evaluate.ocr import load_rgb
    from vqclip.generation.images import check_image_file
    from vqclip.untrusted import open_image

    with pytest.raises(OSError, match="too large to decode"):
        open_image(bomb)
    warned = tmp_path / "big.png"  # above Pillow's warning limit, below its error limit: refused all the same
    Image.new("1", (10000, 10000)).save(warned, optimize=True)
    with pytest.raises(OSError, match="decompression bomb"):
        open_image(warned)
    with pytest.raises(VqclipError, match="--init-image: could not read the image"):
        check_image_file(str(bomb), "--init-image")
    with pytest.raises(ValueError, match="unreadable image"):
        load_rgb(bomb)
    small = tmp_path / "ok.png"
    Image.new("RGB", (64, 32)).save(small)
    with open_image(small) as im:
        assert im.size == (64, 32)


def test_generate_with_a_bomb_as_init_image_is_one_line(world, capsys, bomb):
    code = main(_gen(world, "--vqgan-config", str(world.config), "--vqgan-checkpoint", str(world.ckpt),
                     "--init-image", str(bomb)))
    err = capsys.readouterr().err
    assert code not in (0, None) and len(err.strip().splitlines()) == 1 and "--init-image" in err
    assert "unexpected error" not in err
