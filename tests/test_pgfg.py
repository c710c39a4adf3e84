"""PGFG's networks and losses on synthetic tensors: shapes at both resolutions, gradients,
determinism, the motion residual's role, and the adversarial losses' definitions."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from helpers import assert_close

from faceanime.errors import InputError
from faceanime.pgfg import (
    DenseBlock,
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    LossConfig,
    tiny_configs,
)
from faceanime.pgfg.losses import d_loss, g_loss, gradient_penalty
from faceanime.pgfg.networks import flow_init, prior_flow, warp_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(size: int, output: str = "residual") -> GeneratorConfig:
    """A tiny network; the warp's start from the prior's own points (the dense start needs a
    mesh: tests/test_pgfg_data.py)."""
    tiny, _ = tiny_configs()
    return replace(tiny, size=size, levels=3 if size == 128 else 4, predict=output,
                   flow_init="sparse")


def _inputs(size: int, batch: int = 2, seed: int = 0, channels: int = 6):
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, 3, size, size, generator=g)
    p_s = torch.rand(batch, channels, size, size, generator=g)
    p_t = torch.rand(batch, channels, size, size, generator=g)
    # Offsets (channels 4-5) are small, as real ones are (grid units: 2 = the crop).
    if channels == 6:
        p_s[:, 4:], p_t[:, 4:] = 0.1 * p_s[:, 4:] - 0.05, 0.1 * p_t[:, 4:] - 0.05
    return source, p_s, p_t


def test_dense_block_concatenates_every_earlier_map():
    block = DenseBlock(5, 7, growth=3, layers=4)
    # Layer i sees the input and the i maps before it.
    assert [layer[1].in_channels for layer in block.layers] == [5, 8, 11, 14]
    assert block.transition[1].in_channels == 5 + 4 * 3
    assert block(torch.rand(2, 5, 9, 9)).shape == (2, 7, 9, 9)


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("output", ["warp", "residual", "blend", "direct"])
def test_generator_shapes_and_range(size, output):
    torch.manual_seed(0)
    net = Generator(_config(size, output))
    source, p_s, p_t = _inputs(size)
    out = net(source, p_s, p_t)
    assert out.shape == (2, 3, size, size)
    gen = net.generate(source, p_s, p_t)
    assert gen.shape == (2, 3, size, size) and gen.min() >= 0 and gen.max() <= 1
    feats = net.prior_encoder(p_s)
    levels = net.config.levels
    assert [f.shape[-1] for f in feats] == [size // 2 ** i for i in range(levels + 1)]


@pytest.mark.parametrize("size", [128, 256])
def test_discriminator_is_a_patch_critic(size):
    net = Discriminator(DiscriminatorConfig(channels=8, layers=3), prior_channels=6)
    source, p_s, _ = _inputs(size)
    scores = net(p_s, source)
    assert scores.shape == (2, 1, size // 8, size // 8)
    # Conditional: the same image under another prior scores differently.
    assert not torch.allclose(scores, net(p_s.flip(-1), source))


@pytest.mark.parametrize("size", [128, 256])
def test_every_parameter_gets_a_gradient(size):
    torch.manual_seed(0)
    net = Generator(_config(size))
    disc = Discriminator(DiscriminatorConfig(channels=8, layers=2), prior_channels=6)
    source, p_s, p_t = _inputs(size)
    fake = net(source, p_s, p_t)
    (fake.square().mean() + disc(p_t, fake).mean()).backward()
    for name, p in [*net.named_parameters(), *disc.named_parameters()]:
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_same_seed_same_network_and_batch_independence():
    config = _config(128)
    torch.manual_seed(3)
    a = Generator(config)
    torch.manual_seed(3)
    b = Generator(config)
    source, p_s, p_t = _inputs(128, batch=3)
    out_a, out_b = a(source, p_s, p_t), b(source, p_s, p_t)
    assert torch.equal(out_a, out_b)
    assert torch.equal(out_a, a(source, p_s, p_t))
    # No batch statistics: a sample's output does not depend on its batch mates.
    assert_close(a(source[1:2], p_s[1:2], p_t[1:2]), out_a[1:2], atol=1e-5)
    # Batched inference equals one pass.
    assert_close(a.generate(source, p_s, p_t, batch_size=2), out_a.clamp(0, 1), atol=1e-5)


@pytest.mark.parametrize("output", ["warp", "residual", "blend", "direct"])
def test_zero_residual_output_depends_on_source_alone(output):
    torch.manual_seed(0)
    net = Generator(_config(128, output))
    source, p, q = _inputs(128)
    with torch.no_grad():
        still_p, still_q = net(source, p, p), net(source, q, q)
        moved = net(source, p, q)
    # E(p) - E(p) = 0 at every scale, whatever p is.
    assert torch.equal(still_p, still_q)
    # A real motion residual changes the output.
    assert float((moved - still_p).abs().mean()) > 1e-4
    # And the source does too.
    with torch.no_grad():
        assert not torch.allclose(net(source.flip(-1), p, p), still_p)


@pytest.mark.parametrize("output", ["warp", "residual"])
def test_generator_starts_near_a_copy_of_the_source(output):
    torch.manual_seed(0)
    # Without the priors' own flow (tested on real pairs in test_pgfg_data.py).
    net = Generator(replace(_config(128, output), prior_flow=False, flow_init="none"))
    source, p_s, p_t = _inputs(128, channels=4)
    with torch.no_grad():
        change = (net(source, p_s, p_t) - source).abs().mean()
    assert float(change) < 0.05


def test_prior_flow_interpolates_offsets_and_fades_outside():
    size = 64
    mask = torch.zeros(1, 1, size, size)
    mask[..., 20:44:3, 20:44:3] = 1  # a sparse grid of points over the "face"
    offset = torch.zeros(1, 2, size, size)
    offset[:, 0] = 0.1 * mask[:, 0]  # every point moved by the same x offset
    flow = prior_flow(offset, mask, 2.0)
    # Between the points the same offset (normalised convolution), far away none.
    assert_close(flow[0, 0, 25:40, 25:40], torch.full((15, 15), 0.1), atol=1e-4)
    assert float(flow[0, :, :5].abs().max()) < 1e-6
    assert float(flow[0, 1].abs().max()) < 1e-6


def test_flow_init_keeps_the_exact_flow_and_continues_it_outside():
    size = 64
    flow = torch.zeros(1, 3, size, size)
    flow[:, 2, 20:44, 20:44] = 1  # the face: known there
    flow[:, 0, 20:44, 20:44] = torch.linspace(0.0, 0.2, 24)  # a stretch in x
    start = flow_init(flow, 2.0)
    # The exact flow, untouched, where known; continued just outside; nothing far away.
    assert torch.equal(start[:, :, 20:44, 20:44], flow[:, :2, 20:44, 20:44])
    beyond = start[0, 0, 30, 44:50]
    assert 0.7 * 0.2 < float(beyond[0]) <= 0.2
    assert bool((beyond[1:] < beyond[:-1]).all()) and float(beyond[-1]) < 0.01
    assert float(start[0, :, :5].abs().max()) < 1e-6


def test_dense_start_needs_the_face_flow():
    net = Generator(replace(_config(128, "warp"), flow_init="dense"))
    source, p_s, p_t = _inputs(128)
    with pytest.raises(InputError, match="face flow"):
        net(source, p_s, p_t)
    flow = torch.zeros(2, 3, 128, 128)
    assert net(source, p_s, p_t, flow).shape == (2, 3, 128, 128)
    with pytest.raises(InputError, match="flow_init"):
        GeneratorConfig(flow_init="optical")
    with pytest.raises(InputError, match="sparse"):
        GeneratorConfig(flow_init="sparse", prior_flow=False)


def test_warp_image_moves_content():
    image = torch.zeros(1, 1, 16, 16)
    image[..., 8, 8] = 1
    flow = torch.zeros(1, 2, 16, 16)
    flow[:, 0] = 2 * 3 / 15  # sample 3 px to the right: content moves left by 3
    out = warp_image(image, flow)
    assert float(out[0, 0, 8, 5]) == pytest.approx(1.0, abs=1e-5)


def test_generator_input_checks():
    net = Generator(_config(128))
    source, p_s, p_t = _inputs(128)
    with pytest.raises(InputError, match="p_t must be"):
        net(source, p_s, p_t[:, :4])
    with pytest.raises(InputError, match="source must be"):
        net(source[..., :64], p_s, p_t)


@pytest.mark.parametrize("bad", [dict(size=192), dict(predict="paint"), dict(levels=6),
                                 dict(growth=0), dict(prior_mask=False)])
def test_generator_config_rejects(bad):
    with pytest.raises(InputError):
        GeneratorConfig(**bad)


def test_loss_config_rejects_unknown_gan():
    with pytest.raises(InputError, match="adversarial loss"):
        LossConfig(gan="lsgan")
    assert not LossConfig(gan="none").uses_discriminator
    assert not LossConfig(adversarial=0).uses_discriminator


def test_hinge_and_wgan_losses():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # hinge: relu(1 - real) = [0, .5, 2] -> 2.5/3; relu(1 + fake) = [0, 1, 2] -> 1.
    assert_close(d_loss(real, fake, "hinge"), torch.tensor(2.5 / 3 + 1.0))
    assert_close(d_loss(real, fake, "wgan-gp"), fake.mean() - real.mean())
    assert_close(g_loss(fake, "hinge"), -fake.mean())


def test_gradient_penalty_of_a_linear_critic():
    # D(p, x) = <w, x> has gradient w everywhere: the penalty is (|w| - 1)^2.
    w = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def critic(prior, x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
    gp = gradient_penalty(critic, torch.zeros(5, 4, 4, 4), real, fake)
    assert_close(gp, (w.norm() - 1) ** 2, atol=1e-5)


@pytest.mark.parametrize(("prior_flow", "start"), [(True, "sparse"), (False, "none")])
def test_checkpoints_from_before_the_dense_start_keep_their_start(tmp_path, prior_flow, start):
    """A checkpoint written before ``flow_init`` existed was trained from the prior points'
    flow (or none without ``prior_flow``): it loads that way, not as the new default."""
    import json

    from faceanime.pgfg.checkpoint import load_checkpoint, save_checkpoint
    from faceanime.pgfg.config import TrainConfig

    config = replace(_config(128, "warp"), prior_flow=prior_flow, flow_init=start)
    weights = save_checkpoint(tmp_path, "old", Generator(config), None, None, LossConfig(),
                              TrainConfig(), {"model": "sfm"})
    document = weights.with_suffix(".json")
    values = json.loads(document.read_text())
    del values["generator"]["flow_init"]
    document.write_text(json.dumps(values))
    assert load_checkpoint(weights).generator.flow_init == start
    assert GeneratorConfig().flow_init == "dense"
