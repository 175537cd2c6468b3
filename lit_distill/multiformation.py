"""Multi-formation (IDC): one stored image holds ``factor x factor`` tiles, each decoded into a
full-size training image, so a storage budget of ``ipc`` images per class trains on
``ipc * factor**2`` (smaller-detail) images. Used by DANCE and TGDD with factor 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

# Value outside the image when its side is not a multiple of the factor: mid-grey, as the
# IDC/TGDD reference decoder pads (TGDD.py, ``Synthesizer.decode_zoom``).
PAD_VALUE = 0.5


def _tile_size(size: int, factor: int) -> int:
    return math.ceil(size / factor)


def decode_multiformation(images: Tensor, factor: int) -> Tensor:
    """Multi-formation (IDC): every image's ``factor x factor`` tiles, each upsampled to full size.

    The image is cut into tiles of ``ceil(H / factor)`` x ``ceil(W / factor)`` pixels; when a side
    is not a multiple of ``factor`` it is first padded at the bottom/right with :data:`PAD_VALUE`
    (as the reference decoder does). Each tile is resized back to (H, W), bilinear
    (``align_corners=False``).

    Args:
        images: (N, C, H, W) stored images.
        factor: tiles per side; 1 returns ``images`` itself.

    Returns:
        (factor**2 * N, C, H, W), tile-major as in the reference: every image's top-left tile,
        then every image's next tile in row-major tile order, ..., the bottom-right tiles last.
        Differentiable w.r.t. ``images``.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    th, tw = _tile_size(h, factor), _tile_size(w, factor)
    padded = F.pad(images, (0, factor * tw - w, 0, factor * th - h), value=PAD_VALUE)
    # (N, C, fy, th, fx, tw) -> (fy, fx, N, C, th, tw): tile index outermost.
    tiles = padded.reshape(n, c, factor, th, factor, tw).permute(2, 4, 0, 1, 3, 5)
    tiles = tiles.reshape(factor * factor * n, c, th, tw)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def encode_multiformation(images: Tensor, factor: int, mode: str = "area") -> Tensor:
    """The inverse of :func:`decode_multiformation` up to resampling: tile images into one.

    Args:
        images: (factor**2 * N, C, H, W) full-size images, tile-major (``images[k * N + j]``
            becomes tile ``k`` of stored image ``j``).
        factor: tiles per side.
        mode: downsampling: ``area`` (averaging, which does not alias) or ``nearest`` (what the
            IDC/TGDD code's ``F.interpolate`` does by default).

    Returns:
        (N, C, H, W): each image downsampled to the tile size and placed in its tile; pixels of
        tiles that fall outside (H, W) are dropped, as the decoder pads them back.
    """
    if factor == 1:
        return images
    total, c, h, w = images.shape
    n = total // (factor * factor)
    th, tw = _tile_size(h, factor), _tile_size(w, factor)
    if mode not in ("area", "nearest"):
        raise ValueError(f"downsampling mode {mode!r}: use 'area' or 'nearest'")
    small = F.interpolate(images, size=(th, tw), mode=mode)
    canvas = small.reshape(factor, factor, n, c, th, tw).permute(2, 3, 0, 4, 1, 5)
    return canvas.reshape(n, c, factor * th, factor * tw)[:, :, :h, :w]


def decode_per_class(
    images: Tensor, targets: Tensor, factor: int, ipc: int
) -> tuple[Tensor, Tensor]:
    """Decode class-major stored images, keeping class-major order.

    Args:
        images: (k * ipc, C, H, W) stored images of k classes, class by class.
        targets: one row per stored image: labels (k * ipc,) or logits (k * ipc, K).
        factor: multi-formation factor.
        ipc: stored images per class.

    Returns:
        (k * ipc * factor**2, C, H, W) images and their targets; within a class, tile-major
        (tile 0 of its ipc images, then tile 1, ...). Each decoded image has its stored image's
        target.
    """
    if factor == 1:
        return images, targets
    k, tiles = images.shape[0] // ipc, factor * factor
    decoded = decode_multiformation(images, factor)
    decoded = decoded.reshape(tiles, k, ipc, *decoded.shape[1:]).transpose(0, 1)
    rest = targets.shape[1:]
    rows = targets.reshape(k, 1, ipc, *rest).expand(k, tiles, ipc, *rest)
    return decoded.reshape(-1, *images.shape[1:]), rows.reshape(-1, *targets.shape[1:])


def check_factor(factor: int, image_shape: Sequence[int]) -> None:
    """Raise ValueError unless every tile of a ``factor x factor`` split holds real pixels."""
    if factor < 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    for size in image_shape[1:]:
        if (factor - 1) * _tile_size(size, factor) >= size:
            raise ValueError(
                f"factor {factor} is too large for images of side {size}: the last tiles would "
                "hold only padding; use a smaller factor (2 is the usual choice)"
            )
