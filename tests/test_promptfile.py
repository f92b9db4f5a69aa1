"""Prompt files: every format, per-item settings, and every bad line reported with its file and line."""

import json

import pytest

from vqclip.batch import PromptFileError, load_prompt_files, parse_seeds, parse_spaces
from vqclip.errors import VqclipError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(excinfo):
    return [str(p) for p in excinfo.value.problems]


def test_txt_comments_blank_lines_weights_and_directives(tmp_path):
    path = write(tmp_path, "p.txt", "# real words\n\n#: word_type: real\napple\n  a sign that says apple | text:-0.5  \n"
                                    "#: word_type: nonsense\n#: steps: 7\nblorf\n#: steps:\nzint\n")
    items = load_prompt_files([path])
    assert [i.prompt for i in items] == ["apple", "a sign that says apple | text:-0.5", "blorf", "zint"]
    assert [i.word_type for i in items] == ["real", "real", "nonsense", "nonsense"]
    assert [i.overrides for i in items] == [{}, {}, {"steps": 7}, {}]  # an empty directive clears the field
    assert [i.source for i in items] == [f"{path}:4", f"{path}:5", f"{path}:8", f"{path}:10"]
    assert items[1].id == "a-sign-that-says-apple-text-0-5"


def test_txt_reports_every_bad_line_with_its_number(tmp_path):
    path = write(tmp_path, "bad.txt", "apple\napple:1.5x\n#: stepz: 3\n#: seed: abc\npear:-1\napple\n")
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([path])
    found = problems(e)
    assert any(p.startswith(f"{path}:2: prompt:") and "1.5x" in p for p in found)
    assert any(p.startswith(f"{path}:3:") and "stepz" in p for p in found)
    assert any(p.startswith(f"{path}:4: seed:") and "abc" in p for p in found)
    assert any(p.startswith(f"{path}:5: prompt:") and "positive weight" in p for p in found)
    assert any(p.startswith(f"{path}:6:") and "duplicate prompt" in p and f"{path}:1" in p for p in found)
    assert len(found) == 5
    assert "nothing was run" in str(e.value)


def test_yaml_items_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "p.yaml", """# scenes
defaults:
  word_type: real
  steps: 20
prompts:
  - apple
  - no
  - prompt: a shop sign that says OPEN
    id: shop
    seed: 3
    size: 64x48
    word_type: scene
  - {prompt: "1e3", seeds: "0-2", cut-pow: 2}
""")
    items = load_prompt_files([path])
    assert [i.prompt for i in items] == ["apple", "no", "a shop sign that says OPEN", "1e3"]  # YAML words stay text
    shop = items[2]
    assert shop.id == "shop" and shop.seeds == (3,) and shop.word_type == "scene"
    assert shop.overrides == {"steps": 20, "size": (64, 48)}
    assert items[3].seeds == (0, 1, 2) and items[3].overrides["cut_pow"] == 2.0
    assert items[0].word_type == "real" and items[0].source == f"{path}:6"


def test_yaml_errors_name_the_line_of_the_bad_field(tmp_path):
    path = write(tmp_path, "bad.yaml", """prompts:
  - prompt: apple
    id: a
  - prompt: pear
    id: a
  - prompt: plum
    seed: two
  - prompt: fig
    colour: red
  - [not, an, item]
""")
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([path])
    found = problems(e)
    assert any(p.startswith(f"{path}:5: id:") and "duplicate id 'a'" in p and f"{path}:2" in p for p in found)
    assert any(p.startswith(f"{path}:7: seed:") and "two" in p for p in found)
    assert any(p.startswith(f"{path}:9:") and "colour" in p and "word_type" in p for p in found)
    assert any(p.startswith(f"{path}:10:") and "mapping" in p for p in found)


def test_json_list_and_errors(tmp_path):
    good = write(tmp_path, "p.json", json.dumps([
        "apple", {"prompt": "zorp", "word_type": "nonsense", "id": "z1", "steps": 5, "size": [64, 32]}], indent=1))
    items = load_prompt_files([good])
    assert [i.id for i in items] == ["apple", "z1"] and items[1].overrides == {"steps": 5, "size": (64, 32)}
    bad = write(tmp_path, "bad.json", '[\n  {"prompt": "apple",\n   "seed": "x"},\n  {"promt": "pear"}\n]\n')
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([bad])
    found = problems(e)
    assert any(p.startswith(f"{bad}:3: seed:") for p in found)
    assert any(p.startswith(f"{bad}:4:") and "promt" in p for p in found)
    broken = write(tmp_path, "broken.json", '[\n "apple",\n]\n')
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([broken])
    assert problems(e)[0].startswith(f"{broken}:3:") and "JSON" in problems(e)[0]


def test_csv_columns_quoted_cells_and_comment_rows(tmp_path):
    path = write(tmp_path, "p.csv", '# nonsense words\nprompt,id,word_type,seed,steps\nblick,,nonsense,,\n'
                                    '"a sign, saying ""hi""",sign,real,4,3\n"two\nlines",two,,,\n')
    items = load_prompt_files([path])
    assert [i.prompt for i in items] == ["blick", 'a sign, saying "hi"', "two\nlines"]
    assert items[1].seeds == (4,) and items[1].overrides == {"steps": 3} and items[1].source == f"{path}:4"
    assert items[2].source == f"{path}:5"


def test_csv_unknown_column_and_bad_cells(tmp_path):
    path = write(tmp_path, "cols.csv", "# header below\nprompt,colour\napple,red\n")
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([path])
    assert problems(e) == [f"{path}:2: unknown field 'colour'; valid fields: prompt, id, word_type, seed, seeds, "
                           "steps, size, lr, optimizer, method, loss, cutn, cut_pow, augment, noise, init_image, "
                           "init_weight, change_every, noise_prompts, image_prompt_mode, save_best"]
    path = write(tmp_path, "cells.csv", "prompt,seed,method\napple,1.5,zquant\npear,2,bogus\nplum,1,zquant,extra\n")
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([path])
    found = problems(e)
    assert found[0].startswith(f"{path}:2: seed:") and "1.5" in found[0]
    assert found[1].startswith(f"{path}:3: method:") and "codebook" in found[1]
    assert found[2].startswith(f"{path}:4:") and "cells" in found[2]


def test_missing_unknown_and_empty_files_are_all_reported(tmp_path):
    empty = write(tmp_path, "empty.txt", "# nothing\n\n")
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([tmp_path / "nope.txt", write(tmp_path, "p.docx", "x"), empty])
    found = problems(e)
    assert found[0] == f"{tmp_path / 'nope.txt'}: the prompt file does not exist; check the path"
    assert "unknown prompt file type '.docx'" in found[1]
    assert found[2] == f"{empty}: holds no prompts"


def test_ids_are_unique_across_files_and_stable(tmp_path):
    a = write(tmp_path, "a.txt", "Apple!\n")
    b = write(tmp_path, "b.csv", "prompt,id\napple?,apple\n")
    items = load_prompt_files([a, b])
    assert items[1].id == "apple"  # explicit ids are kept; the auto id steps aside with a hash of its prompt
    assert items[0].id.startswith("apple-") and len(items[0].id) == len("apple-") + 6
    assert [i.id for i in load_prompt_files([a, b])] == [i.id for i in items]


def test_seed_and_space_lists():
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds("3-5,9") == (3, 4, 5, 9)
    assert parse_seeds("0..2") == (0, 1, 2)
    for bad in ("a", "5-3", "1,1", "-1", "1,,2"):
        with pytest.raises(VqclipError, match="--seeds"):
            parse_seeds(bad)
    assert parse_spaces("clip, learn,forget") == ("clip", "learn", "forget")
    with pytest.raises(VqclipError, match="Valid choices"):
        parse_spaces("clip,spell")


def test_word_type_flag_is_validated_and_used(tmp_path):
    path = write(tmp_path, "p.txt", "apple\n")
    assert load_prompt_files([path], word_type="Real")[0].word_type == "real"
    with pytest.raises(VqclipError, match="--word-type"):
        load_prompt_files([path], word_type="not a type!")


def test_example_prompt_files_load_and_say_what_they_are_for():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "prompts").glob("*.*"))
    assert {f.suffix for f in files} >= {".txt", ".yaml", ".csv"}
    for f in files:
        assert f.read_text().startswith("# ") and "For:" in f.read_text().split("\n\n")[0], f
        items = load_prompt_files([f])
        assert items and all(i.word_type for i in items), f
    nonsense = load_prompt_files([Path(__file__).parent.parent / "prompts" / "nonsense-words.txt"])
    assert all(3 <= len(i.prompt) <= 8 and i.prompt.isalpha() and i.word_type == "nonsense" for i in nonsense)


@pytest.mark.parametrize("text, line, words", [
    ('prompt,id\napple,a\n"unterminated,b\n', 3, "never closed"),
    ('prompt,id\n"apple,a\npear,b\n"fig",c\n', 2, "quote"),
])
def test_csv_with_an_unclosed_quote_is_reported_with_its_line(tmp_path, text, line, words):
    path = write(tmp_path, "q.csv", text)
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([path])
    found = problems(e)
    assert len(found) == 1 and found[0].startswith(f"{path}:{line}:") and words in found[0]


def test_csv_quoted_commas_and_doubled_quotes_still_work(tmp_path):
    path = write(tmp_path, "q.csv", 'prompt,id\n"apple, red",a\n"a sign saying ""hi""",b\n')
    assert [i.prompt for i in load_prompt_files([path])] == ["apple, red", 'a sign saying "hi"']


@pytest.mark.parametrize("text", ["- {prompt: apple, seed: 9223372036854775808}\n",
                                  "- {prompt: apple, seeds: '0,9223372036854775808'}\n",
                                  "- {prompt: apple, seeds: '9223372036854775806-9223372036854775808'}\n"])
def test_seeds_beyond_the_largest_are_reported(tmp_path, text):
    path = write(tmp_path, "s.yaml", text)
    with pytest.raises(PromptFileError) as e:
        load_prompt_files([path])
    assert f"{path}:1: seed" in problems(e)[0] and "9223372036854775807" in problems(e)[0]


def test_largest_seed_is_accepted(tmp_path):
    path = write(tmp_path, "s.yaml", "- {prompt: apple, seeds: '9223372036854775806-9223372036854775807'}\n")
    assert load_prompt_files([path])[0].seeds == (2**63 - 2, 2**63 - 1)
    with pytest.raises(VqclipError, match="--seeds"):
        parse_seeds("1,18446744073709551615")
