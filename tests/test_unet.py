"""The shared U-Net: shapes, the null-class (unconditional) path, time and class dependence."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genlab.config import ConfigError, UNetConfig
from genlab.nn.unet import UNet, timestep_embedding


@pytest.fixture
def net():
    torch.manual_seed(0)
    return UNet(channels=8, channel_mults=(1, 2, 2), n_classes=10).eval()


@pytest.mark.parametrize("mults", [(1,), (1, 2), (1, 2, 2), (1, 2, 3)])
def test_shapes_for_every_depth(mults):
    net = UNet(channels=8, channel_mults=mults, attention=True)
    x = torch.randn(3, 1, 28, 28)
    assert net(x, torch.rand(3), torch.tensor([0, 5, 10])).shape == (3, 1, 28, 28)


def test_null_class_is_the_default_and_differs_from_a_label(net):
    x, t = torch.randn(4, 1, 28, 28), torch.rand(4)
    null = torch.full((4,), net.null_class)
    assert net.null_class == 10
    torch.testing.assert_close(net(x, t), net(x, t, null))
    assert (net(x, t, torch.zeros(4, dtype=torch.long)) - net(x, t, null)).abs().max() > 1e-4


def test_output_depends_on_time_and_scalar_time_broadcasts(net):
    x = torch.randn(2, 1, 28, 28)
    assert (net(x, torch.zeros(2)) - net(x, torch.ones(2))).abs().max() > 1e-4
    torch.testing.assert_close(net(x, torch.tensor(0.3)), net(x, torch.full((2,), 0.3)))


def test_samples_are_processed_independently(net):
    """No batch coupling (GroupNorm, not BatchNorm): a sample's output ignores its batch mates."""
    x, t, y = torch.randn(3, 1, 28, 28), torch.rand(3), torch.tensor([1, 2, 3])
    torch.testing.assert_close(net(x, t, y)[:1], net(x[:1], t[:1], y[:1]))


def test_chunked_inference_equals_one_batch(net):
    """Without gradients a batch larger than ``eval_chunk`` is evaluated in chunks: same output as one pass."""
    x, t, y = torch.randn(7, 1, 28, 28), torch.rand(7), torch.arange(7)
    whole = net(x, t, y)                                   # 7 ≤ eval_chunk: one pass
    net.eval_chunk = 3
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y), whole.detach())
        torch.testing.assert_close(net(x, torch.tensor(0.4)), net(x, torch.full((7,), 0.4)))


def test_chunks_only_on_cpu(net, monkeypatch):
    """Chunking is a CPU cache trick: on any other device (here ``meta``) the batch goes through in one pass."""
    calls = []
    trunk = UNet.trunk
    monkeypatch.setattr(UNet, "trunk", lambda self, x, emb: calls.append(len(x)) or trunk(self, x, emb))
    net.eval_chunk = 3
    with torch.no_grad():
        net(torch.randn(7, 1, 28, 28), torch.rand(7), torch.arange(7))
        assert calls == [3, 3, 1]
        calls.clear()
        net.to("meta")(torch.randn(7, 1, 28, 28, device="meta"), torch.rand(7, device="meta"),
                       torch.arange(7, device="meta"))
    assert calls == [7]


def test_up_path_narrows_before_upsampling_which_commutes(net):
    """Going up into a level, a 1×1 conv narrows the features to that level's width (16 → 8 into 28×28,
    none where the widths agree) before the ×2 nearest upsampling — the same map as narrowing after it,
    at a quarter of the cost."""
    narrow = net.narrow[0]
    assert (narrow.in_channels, narrow.out_channels) == (16, 8) and isinstance(net.narrow[1], torch.nn.Identity)
    assert [b.conv1[-1].in_channels for b in net.up] == [8 + 8, 16 + 16, 16 + 16]       # concatenated with the skip
    h = torch.randn(2, 16, 14, 14)
    upsample = lambda z: F.interpolate(z, scale_factor=2.0, mode="nearest")
    torch.testing.assert_close(upsample(narrow(h)), narrow(upsample(h)))


def test_timestep_embedding_known_values():
    e = timestep_embedding(torch.tensor([0.0, 0.001]), 4)      # frequencies 1, 1e-2; argument 1000·t
    torch.testing.assert_close(e[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(e[1], torch.tensor([torch.sin(torch.tensor(1.0)), 0.01 * 0.99998,
                                                   torch.cos(torch.tensor(1.0)), 0.99995]), atol=1e-4, rtol=0)


def test_from_config_and_validation():
    net = UNet.from_config(UNetConfig(channels=4, channel_mults=[1, 2], attention=False, dropout=0.0), n_classes=3)
    assert net.class_emb.num_embeddings == 4 and len(net.down) == 2
    with pytest.raises(ConfigError, match="channel_mults"):     # checks run once every field is set
        UNetConfig(channels=4, channel_mults=[1, 2, 2, 2], attention=False, dropout=0.0)
