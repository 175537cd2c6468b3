"""Differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021).

Images are augmented in pixel space [0, 1], before any normalisation or ZCA. Synthetic images may
leave [0, 1] while they are optimised, so no op clamps: a clamp would zero their gradient there.
Every op is a linear or affine function of the pixels, hence differentiable w.r.t. them.

"Siamese" means that every batch given to one call (typically a real and a synthetic batch, of
any sizes) gets the same op choice and the same parameters, one set shared by all their samples,
as in DC/DSA/DM. ``per_sample=True`` draws one set per sample instead (how MTT augments when it
trains experts and evaluates), for a single batch.

Random draws happen on the generator's device (a CPU ``torch.Generator`` in practice) and only the
small parameter tensors travel to the images' device, so a generator state replays bit for bit.

Scale and rotate use plain ``affine_grid``/``grid_sample`` rather than kornia: the reference code
samples the entries of the *inverse* (output-to-input) matrix, sx, sy ~ U[1/1.2, 1.2], which
kornia's forward scale parameter does not reproduce, and it samples with ``align_corners=False``
(MTT's ``rand_scale``/``rand_rotate``). Crop and cutout move or mask whole pixels, as the
reference does, so they are exact index operations rather than resampling.
"""

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DSAMode = Literal["single", "all", "idc"]

#: Valid ops, in the order mode "all" applies them (the reference's multi-op order for the
#: default strategy "color_crop_cutout_flip_scale_rotate").
OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")

#: Mode "idc" applies one of these per call, between colour and cutout (IDC's ``DiffAug``).
GEOMETRIC_OPS = ("crop", "scale", "rotate")

Params = tuple[Tensor, ...]
#: One call's random choices: the ops in order, with their parameters.
Plan = list[tuple[str, Params]]


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """The ops named in ``strategy`` ("color_crop", "none", ...), in the canonical order of OPS."""
    if strategy.strip().lower() in ("", "none"):
        return ()
    names = strategy.lower().split("_")
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise ValueError(
            f"unknown DSA op(s) {unknown} in strategy {strategy!r}; valid ops are "
            f"{', '.join(OPS)}, joined by '_' (e.g. 'color_crop'), or 'none' for no augmentation"
        )
    return tuple(op for op in OPS if op in names)


class _Sampler:
    """Draws of ``n`` values each (one per sample, or 1 when shared), all from one generator.

    They happen on the generator's device (CPU for the default generator), so the same
    generator state gives the same parameters whatever device the images live on.
    """

    def __init__(self, n: int, generator: torch.Generator | None) -> None:
        self.n, self.generator = n, generator
        self.device = generator.device if generator is not None else torch.device("cpu")

    def uniform(self, low: float = 0.0, high: float = 1.0) -> Tensor:
        return low + (high - low) * torch.rand(self.n, generator=self.generator, device=self.device)

    def integer(self, low: int, high: int) -> Tensor:
        """Integers in [low, high)."""
        return torch.randint(low, high, (self.n,), generator=self.generator, device=self.device)

    def choice(self, options: Sequence[str]) -> str:
        """One of ``options`` uniformly, once per call whatever ``n``."""
        index = torch.randint(len(options), (1,), generator=self.generator, device=self.device)
        return options[int(index)]


class DSA(nn.Module):
    """Differentiable siamese augmentation of one or several image batches.

    Args:
        strategy: ops joined by "_" from color, crop, cutout, flip, scale, rotate; "none" or ""
            for the identity.
        mode: "single" applies ONE op of the strategy per call, chosen uniformly (DSA/MTT);
            "all" applies every op, in the order of ``OPS``; "idc" applies flip, then colour,
            then ONE of crop/scale/rotate, then cutout (each only if in the strategy), the
            order of IDC's ``DiffAug`` used by DANCE and TGDD.
        per_sample: draw parameters per sample (one batch only) instead of once per call. The
            op choice stays one per call.
        flip_p: probability of a horizontal flip.
        scale: sx and sy are drawn independently from U[1/scale, scale].
        rotate_deg: rotation angle drawn from U[-rotate_deg, rotate_deg] degrees.
        crop_ratio: translation by up to round(crop_ratio * size) pixels, zero fill.
        cutout_ratio: side of the zeroed square, as a fraction of the image side.
        brightness: offset (U - 0.5) * brightness added to every pixel.
        saturation: factor U * saturation around the per-pixel channel mean.
        contrast: factor U + contrast around the image mean.
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout_flip_scale_rotate",
        mode: DSAMode = "single",
        per_sample: bool = False,
        # Defaults: ParamDiffAug of the DC/DSA/MTT code (docs/methods.md, "Augmentation").
        flip_p: float = 0.5,
        scale: float = 1.2,
        rotate_deg: float = 15.0,
        crop_ratio: float = 0.125,  # +-4 px at 32 px
        cutout_ratio: float = 0.5,  # a 16x16 square at 32 px
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ) -> None:
        super().__init__()
        if mode not in get_args(DSAMode):
            raise ValueError(f"unknown DSA mode {mode!r}; use one of {get_args(DSAMode)}")
        if not 0.0 <= flip_p <= 1.0 or scale < 1.0 or not 0.0 <= cutout_ratio <= 1.0:
            raise ValueError(
                f"DSA needs 0 <= flip_p <= 1, scale >= 1 and 0 <= cutout_ratio <= 1; "
                f"got flip_p={flip_p}, scale={scale}, cutout_ratio={cutout_ratio}"
            )
        self.strategy, self.mode, self.per_sample = strategy, mode, per_sample
        self.ops = parse_strategy(strategy)
        self.flip_p, self.scale, self.rotate_deg = flip_p, scale, rotate_deg
        self.crop_ratio, self.cutout_ratio = crop_ratio, cutout_ratio
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast

    def extra_repr(self) -> str:
        return f"strategy={self.strategy!r}, mode={self.mode!r}, per_sample={self.per_sample}"

    def forward(
        self, *batches: Tensor, generator: torch.Generator | None = None
    ) -> Tensor | tuple[Tensor, ...]:
        """Augment every batch (N_i, C, H, W) with the same random choices.

        Returns:
            The augmented batch, or a tuple in the order of ``batches`` when several are given.
        """
        self._check_batches(batches)
        plan = self.draw(batches[0].shape, generator)
        outputs = tuple(self.apply(x, plan) for x in batches)
        return outputs[0] if len(outputs) == 1 else outputs

    def draw(self, shape: Sequence[int], generator: torch.Generator | None = None) -> Plan:
        """This call's random choices for images of ``shape`` (N, C, H, W), to :meth:`apply` to
        one or several batches (a siamese pair may be augmented at different times)."""
        if not self.ops:
            return []
        sample = _Sampler(shape[0] if self.per_sample else 1, generator)
        height, width = shape[-2:]
        return [(op, self._draw(op, sample, height, width)) for op in self._choose(sample)]

    def apply(self, images: Tensor, plan: Plan) -> Tensor:
        """Augment ``images`` with a plan from :meth:`draw` (same ops, same parameters)."""
        return _apply_plan(images, plan)

    def _check_batches(self, batches: tuple[Tensor, ...]) -> None:
        if not batches:
            raise ValueError("DSA needs at least one image batch (N, C, H, W)")
        shapes = [tuple(x.shape[1:]) for x in batches]
        if any(x.dim() != 4 for x in batches) or len(set(shapes)) != 1:
            raise ValueError(
                f"DSA batches must be 4-D (N, C, H, W) with the same C, H, W; got shapes "
                f"{[tuple(x.shape) for x in batches]}"
            )
        if self.per_sample and len(batches) > 1:
            raise ValueError(
                "per_sample=True draws parameters per sample, which cannot be shared between "
                f"{len(batches)} batches; augment one batch per call, or use per_sample=False"
            )

    def _choose(self, sample: _Sampler) -> list[str]:
        """The ops of this call, in the order they apply."""
        if self.mode == "all":
            return list(self.ops)
        if self.mode == "single":
            return [sample.choice(self.ops)]
        geometric = [op for op in GEOMETRIC_OPS if op in self.ops]
        chosen = [op for op in ("flip", "color") if op in self.ops]
        chosen += [sample.choice(geometric)] if geometric else []
        return chosen + (["cutout"] if "cutout" in self.ops else [])

    def _draw(self, op: str, sample: _Sampler, height: int, width: int) -> Params:
        """The parameters of ``op`` for images of ``height`` x ``width``."""
        draw = {
            "color": self._draw_color,
            "crop": self._draw_crop,
            "cutout": self._draw_cutout,
            "flip": self._draw_flip,
            "scale": self._draw_scale,
            "rotate": self._draw_rotate,
        }[op]
        return draw(sample, height, width)

    def _draw_color(self, sample: _Sampler, height: int, width: int) -> Params:
        offset = (sample.uniform() - 0.5) * self.brightness
        return offset, sample.uniform() * self.saturation, sample.uniform() + self.contrast

    def _draw_crop(self, sample: _Sampler, height: int, width: int) -> Params:
        max_dy, max_dx = _round(height * self.crop_ratio), _round(width * self.crop_ratio)
        return sample.integer(-max_dy, max_dy + 1), sample.integer(-max_dx, max_dx + 1)

    def _draw_cutout(self, sample: _Sampler, height: int, width: int) -> Params:
        # Centre in [0, H] for an even side, [0, H) for an odd one, as in the reference code;
        # the square may stick out of the image and is then clipped.
        cut_h, cut_w = _round(height * self.cutout_ratio), _round(width * self.cutout_ratio)
        top = sample.integer(0, height + 1 - cut_h % 2) - cut_h // 2
        left = sample.integer(0, width + 1 - cut_w % 2) - cut_w // 2
        return top, left, top + cut_h, left + cut_w

    def _draw_flip(self, sample: _Sampler, height: int, width: int) -> Params:
        return (sample.uniform() < self.flip_p,)

    def _draw_scale(self, sample: _Sampler, height: int, width: int) -> Params:
        sx = sample.uniform(1.0 / self.scale, self.scale)
        sy = sample.uniform(1.0 / self.scale, self.scale)
        zero = torch.zeros_like(sx)
        return (torch.stack([sx, zero, zero, zero, sy, zero], dim=1).view(-1, 2, 3),)

    def _draw_rotate(self, sample: _Sampler, height: int, width: int) -> Params:
        angle = (sample.uniform() - 0.5) * 2.0 * math.radians(self.rotate_deg)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        return (torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3),)


def _round(value: float) -> int:
    """Round half up, as the reference code does with ``int(value + 0.5)``."""
    return int(value + 0.5)


def _apply_plan(x: Tensor, plan: list[tuple[str, Params]]) -> Tensor:
    for op, params in plan:
        x = _APPLY[op](x, *params)
    return x


def _factor(param: Tensor, x: Tensor) -> Tensor | float:
    """A shared parameter as a Python number (no host-to-device copy), else (N, 1, 1, 1)."""
    if param.numel() == 1:
        return param.item()
    return param.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _index(param: Tensor, x: Tensor) -> Tensor | int:
    """A shared integer parameter as a Python int, else (N, 1) on the images' device."""
    if param.numel() == 1:
        return int(param)
    return param.to(x.device).view(-1, 1)


def _color(x: Tensor, offset: Tensor, saturation: Tensor, contrast: Tensor) -> Tensor:
    x = x + _factor(offset, x)
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * _factor(saturation, x) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * _factor(contrast, x) + image_mean


def _crop(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """``out[i, j] = x[i + dy, j + dx]``, zero where that falls outside the image."""
    height, width = x.shape[-2:]
    pad_y, pad_x = int(dy.abs().max()), int(dx.abs().max())
    padded = F.pad(x, (pad_x, pad_x, pad_y, pad_y))
    if dy.numel() == 1:  # shared: a plain slice (deterministic backward on every device)
        top, left = pad_y + int(dy), pad_x + int(dx)
        return padded[..., top : top + height, left : left + width]
    n, channels = x.shape[:2]
    rows = torch.arange(height, device=x.device) + pad_y + dy.to(x.device).view(-1, 1)
    cols = torch.arange(width, device=x.device) + pad_x + dx.to(x.device).view(-1, 1)
    rows = rows.view(n, 1, height, 1).expand(n, channels, height, width + 2 * pad_x)
    shifted = padded.gather(2, rows)
    return shifted.gather(3, cols.view(n, 1, 1, width).expand(n, channels, height, width))


def _cutout(x: Tensor, top: Tensor, left: Tensor, bottom: Tensor, right: Tensor) -> Tensor:
    """Zero rows [top, bottom) x columns [left, right), clipped to the image."""
    rows = torch.arange(x.shape[-2], device=x.device)
    cols = torch.arange(x.shape[-1], device=x.device)
    in_rows = (rows >= _index(top, x)) & (rows < _index(bottom, x))
    in_cols = (cols >= _index(left, x)) & (cols < _index(right, x))
    keep = ~(in_rows[..., :, None] & in_cols[..., None, :])  # (H, W) or (N, H, W)
    return x * keep.unsqueeze(-3).to(x.dtype)


def _flip(x: Tensor, flip: Tensor) -> Tensor:
    if flip.numel() == 1:
        return x.flip(3) if bool(flip) else x
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    """Sample ``x`` at ``theta @ (u, v, 1)`` for every output point (u, v) in [-1, 1]^2."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [theta.shape[0], *x.shape[1:]], align_corners=False)
    grid = grid.expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_APPLY = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _affine,
    "rotate": _affine,
}
