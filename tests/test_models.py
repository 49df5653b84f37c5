import pytest
import torch
from torch.func import functional_call

from metagan_lib.models import (
    ContextGenerator,
    NearestDoubling,
    PairDiscriminator,
    ShotEncoder,
    build_gan,
    doubling,
    materialise,
    template,
)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_gan_shapes_and_no_buffers(architecture):
    generator, discriminator = build_gan(architecture, z_dim=12, width=8, seed=0)
    images = generator(torch.randn(3, 12))
    assert images.shape == (3, 1, 28, 28) and images.abs().max() <= 1  # tanh range
    assert discriminator(images).shape == (3,)
    # no running statistics: nothing an inner loop could update in place, nothing vmap must carry
    assert not list(generator.buffers()) and not list(discriminator.buffers())


def test_build_gan_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, _ = build_gan("conv", 8, 8, seed=3)
    b, _ = build_gan("conv", 8, 8, seed=3)
    c, _ = build_gan("conv", 8, 8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.project.weight, c.project.weight)
    with pytest.raises(ValueError, match="Unknown architecture 'resnet'"):
        build_gan("resnet")


@pytest.mark.parametrize("upsample", ["transposed", "nearest"])
def test_context_networks_shapes_and_film_starts_at_identity(upsample):
    generator = ContextGenerator(z_dim=4, context_dim=6, width=8, upsample=upsample)
    discriminator = PairDiscriminator(width=8)
    z = torch.randn(5, 4)
    images = generator(z, torch.zeros(6))
    assert images.shape == (5, 1, 28, 28)
    assert discriminator(torch.cat([images, images], dim=1)).shape == (5,)
    # every FiLM layer starts at the identity: whatever the context, it neither scales nor shifts its features
    context = torch.randn(6, generator=torch.Generator().manual_seed(1))
    for film, channels in ((generator.film1, 16), (generator.film2, 8)):
        h = torch.randn(5, channels, 7, 7)
        assert torch.equal(ContextGenerator._film(h, film(context)), h)


def test_the_refine_stage_adds_a_full_resolution_layer_and_refine_0_is_the_two_stage_generator():
    torch.manual_seed(0)
    plain = ContextGenerator(z_dim=4, context_dim=6, width=8)
    torch.manual_seed(0)
    also_plain = ContextGenerator(z_dim=4, context_dim=6, width=8, refine=0)
    assert [(k, v.shape) for k, v in plain.named_parameters()] == [
        (k, v.shape) for k, v in also_plain.named_parameters()
    ]
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), also_plain.parameters()))
    refined = ContextGenerator(z_dim=4, context_dim=6, width=8, refine=16)
    names = dict(refined.named_parameters())
    assert names["up2.weight"].shape[1] == 16 and names["out.weight"].shape == (1, 16, 3, 3)  # 16 channels at 28x28
    assert names["film3.weight"].abs().sum() == 0  # FiLM starts at identity here too
    z, c = torch.randn(5, 4), torch.randn(6)
    images = refined(z, c)
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
    with pytest.raises(ValueError, match="refine=12 channels do not split into 8 groups"):
        ContextGenerator(refine=12)


def test_template_holds_no_values_and_functional_call_matches_the_module():
    generator, _ = build_gan("conv", 8, 8, seed=1)
    shell = template(generator)
    assert all(p.device.type == "meta" for p in shell.parameters())
    params = {k: v.detach() for k, v in generator.named_parameters()}
    z = torch.randn(2, 8)
    assert torch.equal(functional_call(shell, params, (z,)), generator(z).detach())
    rebuilt = materialise(shell, params)  # a real module again, holding copies
    assert torch.equal(rebuilt(z), generator(z))
    assert rebuilt.project.weight.data_ptr() != generator.project.weight.data_ptr()


def test_nearest_doubling_has_no_checkerboard_and_transposed_has_one():
    torch.manual_seed(0)
    flat = torch.ones(1, 4, 7, 7)  # a constant feature map
    nearest = doubling(4, 3, "nearest")(flat)[..., 2:-2, 2:-2]  # away from the zero-padded border
    transposed = doubling(4, 3, "transposed")(flat)[..., 2:-2, 2:-2]
    assert nearest.shape == transposed.shape == (1, 3, 10, 10)
    assert torch.allclose(nearest, nearest[..., :1, :1].expand_as(nearest))  # constant in, constant out
    assert torch.allclose(transposed[..., :-2, :], transposed[..., 2:, :])  # a pattern of period 2 ...
    assert torch.allclose(transposed[..., :, :-2], transposed[..., :, 2:])
    assert (transposed[..., 0::2, :] - transposed[..., 1::2, :]).abs().max() > 1e-3  # ... that alternates
    with pytest.raises(ValueError, match="Unknown upsampling 'bilinear'"):
        doubling(4, 3, "bilinear")
    with pytest.raises(ValueError, match="Unknown upsampling 'bilinear'; choose one of transposed, nearest"):
        ContextGenerator(upsample="bilinear")


def test_nearest_doubling_is_upsampling_then_a_3x3_convolution():
    torch.manual_seed(0)
    layer = NearestDoubling(5, 3).double()
    reference = torch.nn.Sequential(
        torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(5, 3, 3, padding=1)
    )
    reference = reference.double()
    with torch.no_grad():
        reference[1].weight.copy_(layer.weight)
        reference[1].bias.copy_(layer.bias)
    x = torch.randn(2, 5, 7, 7, dtype=torch.float64)
    assert torch.allclose(layer(x), reference(x), atol=1e-12)  # borders included
    assert layer(torch.randn(1, 5, 14, 14, dtype=torch.float64)).shape == (1, 3, 28, 28)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_wrong_input_shapes_are_named_with_the_shape_the_model_takes(architecture):
    generator, discriminator = build_gan(architecture, z_dim=12, width=8, seed=0)
    with pytest.raises(ValueError, match=r"z.shape=\(3, 64\) is not accepted: z.shape must be \[B, 12\]"):
        generator(torch.randn(3, 64))
    with pytest.raises(ValueError, match=r"images.shape=\(3, 1, 32, 32\) .* must be \[B, 1, 28, 28\]"):
        discriminator(torch.randn(3, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images.shape=\(784,\)"):
        discriminator(torch.randn(784))
    # a functional call under vmap (as the meta-learners make it) checks each task's shapes, not the batched ones
    params = {k: v.detach() for k, v in discriminator.named_parameters()}
    batched = torch.func.vmap(lambda x: functional_call(discriminator, params, (x,)))(torch.randn(2, 3, 1, 28, 28))
    assert batched.shape == (2, 3)


def test_context_networks_name_a_wrong_context_pair_or_shot_shape():
    generator = ContextGenerator(z_dim=4, context_dim=6, width=8)
    with pytest.raises(ValueError, match=r"context.shape=\(5,\) .* must be \[6\]"):
        generator(torch.randn(2, 4), torch.zeros(5))
    with pytest.raises(ValueError, match=r"z.shape=\(2, 5\) .* must be \[B, 4\]"):
        generator(torch.randn(2, 5), torch.zeros(6))
    with pytest.raises(ValueError, match=r"images.shape=\(2, 1, 28, 28\) .* must be \[B, 2, 28, 28\]"):
        PairDiscriminator(width=8)(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"images.shape=\(5, 3, 28, 28\)"):
        ShotEncoder(context_dim=6, width=8)(torch.randn(5, 3, 28, 28))
