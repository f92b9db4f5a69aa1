"""Every training tuple is used each epoch, as in the official code (issue 15, fix 5); too short a training is
said so (issue 15, new-user item); the metrics do not import the trainer (issue 15, item 10)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vqclip.spelling.retrieval as retrieval
from vqclip.spelling.train import TrainConfig, train_projection, training_steps, too_few_steps_warning

from test_spelling_train import planted

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_last_partial_batch_of_an_epoch_is_trained_on(monkeypatch):
    import vqclip.spelling.train as trainer

    data = planted(n=50, n_words=40)  # 40 training tuples, batch 16: 16 + 16 + 8
    seen = []
    original = trainer._batch

    def spy(f, idx, device):
        seen.append(idx.tolist())
        return original(f, idx, device)

    monkeypatch.setattr(trainer, "_batch", spy)
    result = train_projection(data.part("train"), None, TrainConfig(space="learn", dim=4, epochs=2, batch_size=16))
    assert [r["step"] for r in result.history] == [3, 6]
    assert [len(i) for i in seen] == [16, 16, 8] * 2
    assert sorted(sum(seen[:3], [])) == list(range(40))  # each tuple once per epoch


def test_drop_last_keeps_the_old_behaviour_as_an_option():
    data = planted(n=50, n_words=40)
    result = train_projection(data.part("train"), None, TrainConfig(space="learn", dim=4, epochs=2, batch_size=16,
                                                                     drop_last=True))
    assert [r["step"] for r in result.history] == [2, 4]


def test_a_single_leftover_tuple_joins_the_previous_batch():
    # InfoNCE needs two items: 33 tuples in batches of 16 train as 16 + 17
    assert training_steps(33, 16, 1) == 2 and training_steps(34, 16, 1) == 3
    assert training_steps(34, 16, 1, drop_last=True) == 2 and training_steps(10, 16, 3) == 3


def test_a_training_too_short_to_move_w_is_warned_about_in_one_line():
    # the new user's case: 192 images -> ~154 training tuples, batch 128, 30 epochs = 60 steps at lr 1e-4
    line = too_few_steps_warning(154, TrainConfig(space="forget", epochs=30, batch_size=128, lr=1e-4), 512)
    assert line is not None and "\n" not in line
    assert "60 optimisation steps" in line and "--batch-size" in line and "--epochs" in line
    # ImageNetV2's ~8,000 training tuples with the defaults are enough
    assert too_few_steps_warning(8000, TrainConfig(space="forget", epochs=30, batch_size=128, lr=1e-4), 512) is None
    # a larger learning rate moves W as far in fewer steps
    assert too_few_steps_warning(154, TrainConfig(space="forget", epochs=30, batch_size=128, lr=1e-3), 512) is None


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_metrics_do_not_import_the_trainer():
    spelling = Path(retrieval.__file__).parent
    assert not {".train", "vqclip.spelling.train"} & _imports(spelling / "retrieval.py")
    assert ".retrieval" in _imports(spelling / "train.py")  # one direction only
    from vqclip.spelling.featureset import SpellingFeatures
    from vqclip.spelling.train import SpellingFeatures as Reexported

    assert SpellingFeatures is Reexported  # old imports keep working
    assert isinstance(planted(n=8, n_words=8), SpellingFeatures)
