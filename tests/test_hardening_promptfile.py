"""Hostile prompt files and seed lists: bounded memory, no RecursionError, loading linear in length."""

from __future__ import annotations

import time

import pytest

from vqclip.batch import PromptFileError, load_prompt_files, parse_seeds
from vqclip.errors import VqclipError

ALIAS_BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
prompts: [{prompt: *g}]
"""


def problems(path):
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([path])
    return [str(p) for p in e.value.problems]


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 400
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:") and "alias" in found[0]


def test_a_few_aliases_for_shared_settings_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    items = "\n".join(f"  - {{prompt: word{i}, <<: *common}}" for i in range(50))
    path.write_text(f"defaults: &common {{steps: 3, cutn: 2}}\nprompts:\n{items}\n")
    loaded = load_prompt_files([path])
    assert len(loaded) == 50 and loaded[7].overrides == {"steps": 3, "cutn": 2}


@pytest.mark.parametrize("name,text", [("deep.json", "[" * 5000 + "]" * 5000),
                                       ("deep900.json", "[" * 900 + "]" * 900),
                                       ("deep.yaml", "- " * 3000 + "x\n"),
                                       ("deepmap.yaml", "".join(f"{' ' * i}k{i}:\n" for i in range(200)) + "  " * 200
                                        + "x\n")])
def test_deep_nesting_is_a_problem_not_a_recursion_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    found = problems(path)
    assert len(found) == 1 and "levels deep" in found[0] and found[0].startswith(str(path))


def test_huge_seed_ranges_are_refused_without_listing_them(tmp_path):
    start = time.process_time()
    with pytest.raises(VqclipError, match="--seeds: a seed list may hold at most 10000 seeds"):
        parse_seeds("0-100000000")
    path = tmp_path / "seeds.yaml"
    path.write_text("- {prompt: apple, seeds: 0-100000000}\n- {prompt: pear, seeds: '0-5000,6000-12000'}\n")
    found = problems(path)
    assert len(found) == 2 and all("at most 10000 seeds" in p for p in found)
    assert time.process_time() - start < 2
    assert len(parse_seeds("0-9999")) == 10000


def test_values_quoted_in_messages_are_shortened(tmp_path):
    path = tmp_path / "big.json"
    path.write_text('[{"prompt": ["' + "x" * 100000 + '"]}]')
    found = problems(path)
    assert len(found) == 1 and len(found[0]) < 600


def _cpu_seconds(path, n):
    path.write_text("\n".join(f"prompt number {i}" for i in range(n)))
    start = time.process_time()
    assert len(load_prompt_files([path])) == n
    return time.process_time() - start


def test_loading_is_linear_in_the_number_of_prompts(tmp_path):
    # 8x the prompts: linear loading takes ~8x the time, the old quadratic one ~64x.
    small = _cpu_seconds(tmp_path / "small.txt", 5000)
    large = _cpu_seconds(tmp_path / "large.txt", 40000)
    assert large < 25 * max(small, 0.01), (small, large)


# --------------------------------------------------------------- issue 28: FIFOs, devices, huge numbers

def test_fifo_prompt_file_is_refused_at_once(tmp_path):
    import os

    fifo = tmp_path / "prompts.txt"
    os.mkfifo(fifo)
    start = time.perf_counter()
    found = problems(fifo)
    assert time.perf_counter() - start < 2 and "FIFO" in found[0]


def test_symlink_to_dev_zero_is_refused_at_once(tmp_path):
    link = tmp_path / "prompts.txt"
    link.symlink_to("/dev/zero")
    start = time.perf_counter()
    found = problems(link)
    assert time.perf_counter() - start < 2 and "device" in found[0]


def test_oversized_prompt_file_is_refused_before_reading(tmp_path, monkeypatch):
    import vqclip.batch.promptfile as pf

    monkeypatch.setattr(pf, "MAX_FILE_BYTES", 100)
    path = tmp_path / "p.txt"
    path.write_text("an apple\n" * 50)
    assert "bytes" in problems(path)[0]


@pytest.mark.parametrize("text", ['[{"prompt": "a", "lr": 1' + "0" * 4000 + "}]",
                                  '[{"prompt": "a", "steps": 1' + "0" * 4000 + "}]",
                                  '[{"prompt": "a", "steps": 1' + "0" * 5000 + "}]",
                                  "- {prompt: a, noise: 1" + "0" * 5000 + "}"])
def test_huge_numbers_in_structured_files_are_problems(tmp_path, text):
    path = tmp_path / ("p.yaml" if text.startswith("-") else "p.json")
    path.write_text(text)
    found = problems(path)
    assert found and "must be" in found[0] or "vqclip reads" in found[0]
