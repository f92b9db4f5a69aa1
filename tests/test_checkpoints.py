"""Safe checkpoint reading: Lightning pickles load as data, anything that could run code is refused."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.models.checkpoints import (Inert, UnsafeCheckpointError, _safe_reconstructor, describe_key_mismatch,
                                       is_safetensors, read_checkpoint, state_dict_of, strip_prefix)
from vqclip.models.tiny import write_lightning_ckpt


class _Payload:
    """Pickles as a call to `func(*args)`: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.fixture()
def lightning_ckpt(tmp_path):
    state = {"encoder.w": torch.randn(3, 4), "decoder.b": torch.arange(5.0)}
    return write_lightning_ckpt(state, tmp_path / "last.ckpt"), state


def test_weights_only_alone_refuses_a_lightning_checkpoint(lightning_ckpt):
    # The fixture must exercise the fallback: torch's own weights-only reader rejects the trainer objects.
    path, _ = lightning_ckpt
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_lightning_checkpoint_loads_tensors_and_neuters_trainer_objects(lightning_ckpt):
    path, state = lightning_ckpt
    for name in [m for m in sys.modules if m.startswith("pytorch_lightning")]:
        sys.modules.pop(name)
    obj = read_checkpoint(path)
    for key, value in state.items():
        assert torch.equal(obj["state_dict"][key], value)
    (callback_cls, entry), = obj["callbacks"].items()
    assert issubclass(callback_cls, Inert) and callback_cls.__qualname__ == "ModelCheckpoint"
    assert isinstance(entry["object"], Inert)
    assert torch.equal(entry["best_model_score"], torch.tensor(0.5))  # tensors inside placeholders survive
    assert isinstance(obj["hyper_parameters"], Inert)  # omegaconf DictConfig, never built for real
    assert type(obj["hyper_parameters"]).__module__.startswith("omegaconf")
    assert "pytorch_lightning" not in sys.modules  # nothing was imported to read it
    assert state_dict_of(obj).keys() == state.keys()


@pytest.mark.parametrize("func,args,global_name", [
    (os.system, ("touch {marker}",), "system"),
    (eval, ("open({marker!r}, 'w')",), "builtins.eval"),
    (subprocess.call, (["touch", "{marker}"],), "subprocess.call"),
])
def test_malicious_checkpoint_is_refused_without_running(tmp_path, func, args, global_name):
    marker = tmp_path / "pwned"
    args = tuple(a.format(marker=str(marker)) if isinstance(a, str) else [x.format(marker=str(marker)) for x in a]
                 for a in args)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "callbacks": _Payload(func, *args)}, path)
    with pytest.raises(UnsafeCheckpointError, match=global_name) as e:
        read_checkpoint(path, arg="--vqgan-checkpoint")
    assert "--vqgan-checkpoint" in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()


def test_raw_pickle_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises(VqclipError):
        read_checkpoint(path)
    assert not marker.exists()


def test_reconstructor_builds_only_placeholders():
    with pytest.raises(UnsafeCheckpointError):
        _safe_reconstructor(dict, object, None)
    cls = type("X", (Inert,), {})
    assert isinstance(_safe_reconstructor(cls, object, None), cls)


def test_truncated_checkpoint_is_a_clear_error(lightning_ckpt, tmp_path):
    path, _ = lightning_ckpt
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VqclipError, match="truncated") as e:
        read_checkpoint(cut)
    assert str(cut) in str(e.value) and "--vqgan-checkpoint" in str(e.value)


def test_not_a_checkpoint_and_missing_file(tmp_path):
    junk = tmp_path / "page.ckpt"
    junk.write_text("<html>Not found</html>")
    with pytest.raises(VqclipError, match="could not read"):
        read_checkpoint(junk)
    with pytest.raises(VqclipError, match="not found"):
        read_checkpoint(tmp_path / "absent.ckpt")


def test_safetensors_and_plain_state_dicts(tmp_path):
    from safetensors.torch import save_file

    state = {"a.weight": torch.randn(2, 2), "b.bias": torch.randn(3)}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    assert is_safetensors(tmp_path / "w.safetensors") and not is_safetensors(tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        loaded = state_dict_of(read_checkpoint(tmp_path / name))
        assert all(torch.equal(loaded[k], v) for k, v in state.items()) and loaded.keys() == state.keys()


def test_state_dict_errors_and_helpers():
    with pytest.raises(VqclipError, match="no state dict"):
        state_dict_of([1, 2])
    with pytest.raises(VqclipError, match="no tensors"):
        state_dict_of({"epoch": 3})
    assert set(strip_prefix({"module.a": 1, "module.b": 2})) == {"a", "b"}
    assert set(strip_prefix({"module.a": 1, "b": 2})) == {"module.a", "b"}
    msg = describe_key_mismatch([f"k{i}" for i in range(20)], ["x"], limit=3)
    assert "missing 20: k0, k1, k10 (+17 more)" in msg and "unexpected 1: x" in msg
