"""tinyqwen.checks: forbidden components, the integrity guard, dtype-aware comparisons."""

from __future__ import annotations

import threading
import time

import pytest
import torch
import torch.nn.functional as F

import tinyqwen.loss
from tinyqwen.checks import (
    ForbiddenCall,
    TamperingError,
    assert_close,
    assert_equal,
    learner_call,
    tolerance,
)
from tinyqwen.norm import RMSNorm

CE = [
    "torch.nn.functional.cross_entropy",
    "tinyqwen.loss.cross_entropy",
    "torch.Tensor.log_softmax",
    "torch.log_softmax",
    "torch.nn.functional.log_softmax",
]
x = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
t = torch.tensor([1, 2, 3, 4])


def own_cross_entropy(x, t):
    return (torch.logsumexp(x, -1) - x.gather(-1, t[:, None])[:, 0]).mean()


def test_the_learners_own_code_runs_and_matches():
    assert_close(learner_call(own_cross_entropy, x, t, forbid=CE), F.cross_entropy(x, t))


@pytest.mark.parametrize(
    "wrapper",
    [
        lambda x, t: F.cross_entropy(x, t),
        lambda x, t: tinyqwen.loss.cross_entropy(x, t),
        lambda x, t: -x.log_softmax(-1).gather(-1, t[:, None]).mean(),
        lambda x, t: torch.nn.CrossEntropyLoss()(x, t),  # calls F.cross_entropy inside
    ],
    ids=["functional", "tinyqwen", "tensor method", "nn module"],
)
def test_a_wrapper_around_a_forbidden_component_fails(wrapper):
    with pytest.raises(ForbiddenCall, match="must not use"):
        learner_call(wrapper, x, t, forbid=CE)
    # and everything works again afterwards
    assert_close(F.cross_entropy(x, t), own_cross_entropy(x, t))
    assert x.log_softmax(-1).shape == x.shape


def test_a_forbidden_class_cannot_be_built_or_called():
    norm = RMSNorm(10)
    with pytest.raises(ForbiddenCall):
        learner_call(lambda: RMSNorm(10)(x), forbid=["tinyqwen.norm.RMSNorm"])
    with pytest.raises(ForbiddenCall):
        learner_call(lambda: norm(x), forbid=["tinyqwen.norm.RMSNorm"])
    assert norm(x).shape == x.shape


def test_a_saved_reference_to_a_python_function_is_caught_too():
    saved = tinyqwen.loss.cross_entropy
    with pytest.raises(ForbiddenCall):
        learner_call(lambda: saved(x, t), forbid=["tinyqwen.loss.cross_entropy"])


def _patch_allclose(x):
    torch.allclose = lambda *a, **k: True
    return x


def _leave_a_thread(x):
    threading.Thread(target=time.sleep, args=(1,), daemon=True).start()
    return x


def _change_builtin(x):
    import builtins

    builtins.len = lambda obj: 0
    return x


@pytest.mark.parametrize(
    "evil", [_patch_allclose, _leave_a_thread, _change_builtin], ids=lambda f: f.__name__
)
def test_tampering_is_detected_and_undone(evil):
    original = torch.allclose
    with pytest.raises(TamperingError, match="put back"):
        learner_call(evil, x)
    assert torch.allclose is original and len([1, 2]) == 2


def test_results_are_plain_copies():
    class Sneaky(torch.Tensor):
        pass

    with pytest.raises(TypeError, match="return tensors"):
        learner_call(lambda: object())
    with pytest.raises(TypeError):
        learner_call(lambda: torch.zeros(2).as_subclass(Sneaky))
    src = torch.zeros(3)
    got = learner_call(lambda: {"a": (src, 1.5)})
    assert got["a"][0] is not src and got["a"][1] == 1.5


def test_tolerance_follows_the_dtype_and_the_scale():
    assert tolerance(torch.float64) < tolerance(torch.float32) < tolerance(torch.bfloat16)
    assert tolerance(torch.float32, 4000.0) == pytest.approx(4000 * tolerance(torch.float32))
    assert tolerance(torch.int64) == 0.0


def test_assert_close_accepts_another_correct_formulation_and_rejects_a_wrong_one():
    pos = torch.arange(4096.0)[:, None]
    inv = 1e6 ** (-torch.arange(0, 64, 2, dtype=torch.float32) / 64)
    angle32 = pos * inv  # the text's formula in float32
    angle64 = (pos.double() * inv.double()).float()  # the same in float64, rounded once
    # cos of the angle: the rounding error is set by the angle's size, not by cos's size
    assert_close(torch.cos(angle64), torch.cos(angle32), scale=float(angle32.max()))
    with pytest.raises(AssertionError, match="off by"):
        assert_close(torch.cos(angle32 + 1), torch.cos(angle32), scale=float(angle32.max()))


def test_assert_close_names_what_is_wrong():
    with pytest.raises(AssertionError, match="shape"):
        assert_close(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(AssertionError, match="dtype"):
        assert_close(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(AssertionError, match="NaN"):
        assert_close(torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(AssertionError, match="item 1"):
        assert_close((1.0, 2.0), (1.0, 3.0))
    with pytest.raises(AssertionError, match="expected a int"):
        assert_equal(3.0, 3)
    assert_equal(torch.tensor([1, 2]), torch.tensor([1, 2]))


def test_copying_or_pickling_a_model_is_not_tampering():
    import copy
    import pickle

    from tinyqwen.model import Qwen3Config, Qwen3ForCausalLM

    class Fresh(torch.nn.Module):  # never copied before: Python caches __slotnames__ on first copy
        pass

    model = Qwen3ForCausalLM(Qwen3Config.preset("ci"))
    assert learner_call(lambda: len(pickle.dumps(copy.deepcopy(model))) > 0)
    assert learner_call(lambda: copy.deepcopy(Fresh()) is not None)
