import os
import stat
import threading

import pytest

from vqclip.io import append_jsonl, atomic_path, read_jsonl, write_text


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "m.jsonl"

    def writer(k):
        for i in range(200):
            append_jsonl(path, {"writer": k, "i": i, "pad": "x" * 500})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = read_jsonl(path)
    assert len(records) == 800
    assert {(r["writer"], r["i"]) for r in records} == {(k, i) for k in range(4) for i in range(200)}


def test_read_jsonl_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_atomic_temporary_keeps_the_real_extension(tmp_path):
    # writers such as ffmpeg choose the container from the file name
    with atomic_path(tmp_path / "video.mp4") as tmp:
        assert tmp.suffix == ".mp4" and tmp.name.startswith(".video.mp4.") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "video.mp4").read_bytes() == b"x"
