"""Counter-based random streams: every draw a pure function of (image seed, stream, position).

Image ``i`` draws the same numbers alone or in any batch, with no per-image generator objects
or loops; the solver keys noise (stream ``3 t + 2``), jitter (``3 t + 1``), random initial masks
(2000) and the noise substrate (1000) by each image's seed.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors holding values below 2**32 (for the few keys)."""
    for _ in range(2):
        x = x ^ (x >> 16)
        x = (x * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def _hash32_bits(x: torch.Tensor) -> torch.Tensor:
    """The same mixer on int32 tensors, in place (the bulk of the numbers). int32 arithmetic wraps
    like uint32 and is several times faster than int64 on CPU; masking makes the shifts logical."""
    for _ in range(2):
        x ^= (x >> 16) & 0xFFFF
        x *= 0x45D9F3B
    x ^= (x >> 16) & 0xFFFF
    return x


def counter_uniform(seeds: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform ``(0, 1)`` float32 numbers of ``(B, *shape)``, a pure function of (image seed, stream,
    position).

    ``seeds`` is ``(B,)`` int64. Being counter-based, image ``i`` draws the same numbers whatever
    batch it is in, with no per-image generator objects or loops.
    """
    count = math.prod(shape)
    key = _hash32((_hash32(seeds & _M32) ^ (stream * 0x9E3779B1 & _M32)) & _M32)  # (B,) in [0, 2**32)
    key = torch.where(key >= 2**31, key - 2**32, key).to(torch.int32)  # the same 32 bits, as int32
    position = torch.arange(count, device=seeds.device, dtype=torch.int32)
    bits = _hash32_bits(key.view(-1, 1) + position.view(1, -1))
    # The top 24 bits fill a float32 mantissa exactly; +0.5 keeps 0 out (log in Box-Muller).
    return ((bits >> 8) & 0xFFFFFF).to(torch.float32).add_(0.5).mul_(2.0**-24).view(-1, *shape)


def counter_normal(seeds: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal ``(B, *shape)`` from :func:`counter_uniform` by Box-Muller (both outputs used)."""
    count = math.prod(shape)
    half = (count + 1) // 2
    uniform = counter_uniform(seeds, stream, (2 * half,))
    radius = uniform[:, :half].log().mul_(-2).sqrt_()
    angle = uniform[:, half:].mul(2 * math.pi)
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :count].reshape(-1, *shape)
