"""Generators and discriminators for 28x28 grayscale images.

Every module here is a plain ``nn.Module`` with parameters only (no buffers), so they can be
called functionally with an explicit parameter dict::

    params = dict(model.named_parameters())
    out = torch.func.functional_call(model, params, (z,))

which is what the meta-learning loops do. **No BatchNorm**: its running statistics are
buffers that an inner loop would update in place, they leak information across the tasks of a
meta-batch, and they break ``vmap`` over tasks. The generators use GroupNorm (statistics per
image, no state); the discriminators use no normalisation, which WGAN-GP and R1 also assume
(their penalties are per-sample gradients, which batch statistics would mix).

Discriminators return **logits** ``[B]`` (no sigmoid): the losses apply ``log sigmoid``
themselves, which is numerically stable.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import checks
from .checks import GROUPS
from .images import IMAGE_SIZE

ADAM_BETAS = (0.5, 0.999)  # Adam's (beta1, beta2) for every GAN player and meta-optimiser here (the DCGAN recipe)


class MLPGenerator(nn.Module):
    """``z [B, z_dim]`` -> images ``[B, 1, 28, 28]`` in [-1, 1] (the original GAN's MLP)."""

    def __init__(self, z_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, IMAGE_SIZE * IMAGE_SIZE),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_latents(z, self.z_dim)
        return self.net(z).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


class MLPDiscriminator(nn.Module):
    """images ``[B, 1, 28, 28]`` -> logits ``[B]``."""

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 2 * hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, 1)
        return self.net(x).squeeze(-1)


class ConvGenerator(nn.Module):
    """DCGAN-style: ``z [B, z_dim]`` -> 7x7 -> 14x14 -> 28x28 images in [-1, 1].

    GroupNorm instead of BatchNorm (see the module docstring).
    """

    def __init__(self, z_dim: int = 64, width: int = 32, groups: int = GROUPS):
        super().__init__()
        self.z_dim = z_dim
        self.width = width
        self.project = nn.Linear(z_dim, 2 * width * 7 * 7)
        self.net = nn.Sequential(
            nn.GroupNorm(groups, 2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.GroupNorm(groups, width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_latents(z, self.z_dim)
        return self.net(self.project(z).view(-1, 2 * self.width, 7, 7))


def _check_latents(z: torch.Tensor, z_dim: int) -> None:
    checks.trailing_shape(
        "z", z, (z_dim,), f"[B, {z_dim}] (the generator's z_dim; draw it with torch.randn(B, {z_dim}))"
    )


def _check_images(x: torch.Tensor, channels: int) -> None:
    shown = f"[B, {channels}, {IMAGE_SIZE}, {IMAGE_SIZE}] ({channels}-channel {IMAGE_SIZE}x{IMAGE_SIZE} images)"
    checks.trailing_shape("images", x, (channels, IMAGE_SIZE, IMAGE_SIZE), shown)


def strided_conv_features(channels: int, width: int) -> list[nn.Module]:
    """Conv(4, stride 2) -> LeakyReLU -> Conv(4, stride 2) -> LeakyReLU -> Flatten: ``[B, channels, 28, 28]`` ->
    ``[B, 2 * width * 7 * 7]``; the feature layers of the discriminators and encoders (created in this order, so a
    module built from them initialises as before)."""
    return [
        nn.Conv2d(channels, width, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
    ]


class ConvDiscriminator(nn.Module):
    """DCGAN-style: images ``[B, channels, 28, 28]`` -> 14x14 -> 7x7 -> logits ``[B]``; no normalisation."""

    def __init__(self, width: int = 32, channels: int = 1):
        super().__init__()
        self.channels = channels
        self.net = nn.Sequential(*strided_conv_features(channels, width), nn.Linear(2 * width * 7 * 7, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, self.channels)
        return self.net(x).squeeze(-1)


UPSAMPLING = ("transposed", "nearest")

# nearest-neighbour doubling then a 3x3 convolution (padding 1), per output position ``2i + a``, reads the input at
# ``i - 1, i, i + 1`` with the 3 taps summed as below: a stride-2 transposed convolution whose 4 taps are
# ``[w2, w1 + w2, w0 + w1, w0]`` (``NEAREST_TAPS @ w``), so it runs at a transposed convolution's cost
NEAREST_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


class NearestDoubling(nn.Module):
    """Nearest-neighbour upsampling x2 then a 3x3 convolution (padding 1): ``[B, C_in, H, W]`` ->
    ``[B, C_out, 2H, 2W]``, free of the checkerboard pattern of a free transposed convolution. Computed exactly as a
    stride-2 transposed convolution with the 4x4 kernel ``NEAREST_TAPS W NEAREST_TAPS^T``; ``weight [C_out, C_in,
    3, 3]`` and ``bias`` are a :class:`torch.nn.Conv2d`'s (same initialisation)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = NEAREST_TAPS.to(self.weight)
        kernel = torch.einsum("ka,oiab,lb->iokl", taps, self.weight, taps)
        return F.conv_transpose2d(x, kernel, self.bias, stride=2, padding=1)


def doubling(in_channels: int, out_channels: int, upsample: str) -> nn.Module:
    """A layer that doubles the height and width: a transposed convolution (kernel 4, ``"transposed"``) or
    :class:`NearestDoubling` (``"nearest"``)."""
    if upsample == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)
    if upsample == "nearest":
        return NearestDoubling(in_channels, out_channels)
    raise ValueError(f"Unknown upsampling {upsample!r}; choose one of {', '.join(UPSAMPLING)}.")


class ContextGenerator(nn.Module):
    """``G(z, c)``: noise ``[B, z_dim]`` and one context ``[context_dim]`` -> images ``[B, 1, 28, 28]`` in [-1, 1].

    Linear([z, c]) -> 7x7 -> GroupNorm, FiLM(c), ReLU -> 14x14 -> GroupNorm, FiLM(c), ReLU -> 28x28, tanh.
    FiLM layers start at zero (identity), so an untrained context changes only the first layer.
    ``refine``: 0, or the channels of a third stage at full resolution: the last doubling then gives ``refine``
    channels at 28x28 -> GroupNorm, FiLM(c), ReLU -> 3x3 convolution to 1 channel, tanh (a layer that sees each
    pixel's neighbours after the last upsampling, where thin strokes are drawn).
    ``upsample``: each doubling is a transposed convolution (kernel 4, stride 2: ``"transposed"``) or a
    nearest-neighbour upsampling then a 3x3 convolution (``"nearest"``, free of the transposed convolution's
    checkerboard pattern, at the transposed convolution's cost: :class:`NearestDoubling`).
    """

    def __init__(
        self,
        z_dim: int = 16,
        context_dim: int = 64,
        width: int = 32,
        groups: int = GROUPS,
        upsample: str = "transposed",
        refine: int = 0,
    ):
        super().__init__()
        if refine and refine % groups:
            raise ValueError(f"refine={refine} channels do not split into {groups} groups; use a multiple of {groups}.")
        self.z_dim, self.context_dim, self.width, self.refine = z_dim, context_dim, width, refine
        self.project = nn.Linear(z_dim + context_dim, 2 * width * 7 * 7)
        self.norm1, self.film1 = nn.GroupNorm(groups, 2 * width), nn.Linear(context_dim, 4 * width)
        self.up1 = doubling(2 * width, width, upsample)
        self.norm2, self.film2 = nn.GroupNorm(groups, width), nn.Linear(context_dim, 2 * width)
        self.up2 = doubling(width, refine or 1, upsample)
        films = [self.film1, self.film2]
        if refine:
            self.norm3, self.film3 = nn.GroupNorm(groups, refine), nn.Linear(context_dim, 2 * refine)
            self.out = nn.Conv2d(refine, 1, 3, padding=1)
            films.append(self.film3)
        for film in films:
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)

    @staticmethod
    def _film(h: torch.Tensor, scale_shift: torch.Tensor) -> torch.Tensor:
        scale, shift = scale_shift.chunk(2)
        return h * (1 + scale.view(1, -1, 1, 1)) + shift.view(1, -1, 1, 1)

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        _check_latents(z, self.z_dim)
        checks.trailing_shape("context", context, (self.context_dim,), f"[{self.context_dim}] (one class's context)")
        h = self.project(torch.cat([z, context.expand(len(z), -1)], dim=1)).view(-1, 2 * self.width, 7, 7)
        h = self.up1(F.relu(self._film(self.norm1(h), self.film1(context))))
        h = self.up2(F.relu(self._film(self.norm2(h), self.film2(context))))
        if self.refine:
            h = self.out(F.relu(self._film(self.norm3(h), self.film3(context))))
        return torch.tanh(h)


class ShotEncoder(nn.Module):
    """``E(shots)``: the K shots of one class ``[K, 1, 28, 28]`` -> a context offset ``[context_dim]``.

    Each shot: Conv(4, stride 2) -> LeakyReLU -> Conv(4, stride 2) -> LeakyReLU -> Linear -> LeakyReLU; the mean
    over the shots (any K, order-free) -> Linear. The last layer starts at zero, so an untrained encoder adds nothing.
    """

    def __init__(self, context_dim: int = 64, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            *strided_conv_features(1, width), nn.Linear(2 * width * 7 * 7, 4 * width), nn.LeakyReLU(0.2)
        )
        self.head = nn.Linear(4 * width, context_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, shots: torch.Tensor) -> torch.Tensor:
        _check_images(shots, 1)
        return self.head(self.features(shots).mean(0))


class PairDiscriminator(ConvDiscriminator):
    """``D([shot, image])``: pairs ``[B, 2, 28, 28]`` (a shot of the class and a real or generated image) -> logits
    ``[B]``; the convolutional discriminator with two input channels."""

    def __init__(self, width: int = 32):
        super().__init__(width, channels=2)


ARCHITECTURES = {
    "mlp": (MLPGenerator, MLPDiscriminator),
    "conv": (ConvGenerator, ConvDiscriminator),
}


def build_gan(
    architecture: str = "conv", z_dim: int = 64, width: int = 32, seed: int = 0
) -> tuple[nn.Module, nn.Module]:
    """A fresh (generator, discriminator) pair, initialised from ``seed``."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
    checks.positive_int("z_dim", z_dim)
    if architecture == "mlp":
        checks.positive_int("width", width)
    else:
        checks.conv_width("width", width)
    gen_cls, disc_cls = ARCHITECTURES[architecture]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if architecture == "mlp":
            return gen_cls(z_dim=z_dim, hidden=8 * width), disc_cls(hidden=8 * width)
        return gen_cls(z_dim=z_dim, width=width), disc_cls(width=width)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def template(module: nn.Module) -> nn.Module:
    """An architecture-only copy of ``module`` on the ``meta`` device (parameter shapes, no values).

    The meta-learners call templates only through ``torch.func.functional_call`` with explicit
    parameter dicts, which are then the one source of truth for the weights.
    """
    return copy.deepcopy(module).to("meta")


def materialise(module_template: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """A stand-alone module holding copies of ``params`` (for code that needs real modules, e.g. ``higher``)."""
    device = next(iter(params.values())).device
    module = copy.deepcopy(module_template).to_empty(device=device)
    module.load_state_dict({k: v.detach() for k, v in params.items()})
    return module
