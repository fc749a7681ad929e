"""Hooks are recorded inside the block and always removed, even when the forward raises."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import tiny_net
from generator.hooks import hook_count, record_outputs


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_records_the_named_outputs_and_removes_its_hooks():
    net = tiny_net()
    x = torch.randn(2, 3, 32, 32)
    assert hook_count(net) == 0
    with torch.no_grad(), record_outputs(net, ["conv1", "relu2"]) as outs:
        assert hook_count(net) == 2
        net(x)
    assert hook_count(net) == 0
    with torch.no_grad():
        assert torch.equal(outs["conv1"], net.conv1(x))
        assert torch.equal(outs["relu2"], net[:5](x))
    assert not outs["conv1"].requires_grad


def test_hooks_removed_when_the_forward_raises():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        with record_outputs(net, ["0", "1"]) as outs:
            assert hook_count(net) == 2
            net(torch.randn(1, 3, 8, 8))
    assert hook_count(net) == 0
    assert set(outs) == {"0", "1"}  # what ran before the failure was still recorded


def test_hooks_removed_when_a_name_is_unknown():
    net = tiny_net()
    with pytest.raises(KeyError):
        with record_outputs(net, ["conv1", "nope"]):
            pass
    assert hook_count(net) == 0


def test_detach_false_keeps_the_graph():
    net = nn.Sequential(nn.Conv2d(3, 2, 3))
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with record_outputs(net, ["0"], detach=False) as outs:
        net(x)
    outs["0"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_hook_count_counts_every_kind():
    net = tiny_net()
    handles = [
        net.conv1.register_forward_hook(lambda *a: None),
        net.conv2.register_forward_pre_hook(lambda *a: None),
        net.fc.register_full_backward_hook(lambda *a: None),
    ]
    assert hook_count(net) == 3
    for h in handles:
        h.remove()
    assert hook_count(net) == 0
