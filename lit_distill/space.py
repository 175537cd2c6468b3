"""Image spaces: pixels in [0, 1], or the network's input space (normalised or ZCA-whitened).

Real images are always held as pixels. A method stores its synthetic images in one of the two
spaces, and augments in one of them, independently:

* ``pixel``: TGDD stores pixels and clamps them to [0, 1] after every update;
* ``input``: DM and the trajectory-matching family (MTT, DATM, MCT, DPD) optimise the network
  inputs themselves, never clamped, where their learning rates were tuned;
* every reference applies DSA *after* normalisation or ZCA (augmentation in ``input`` space):
  brightness ±0.5 is in normalised units, and crop, cutout, scale and rotate fill with 0, the
  dataset mean. Augmenting pixels instead (``pixel``) makes the same ops about 5x stronger in
  brightness and fills with black.

``preprocess`` is the datamodule's pixel-to-input map (:class:`lit_distill.data.Normalize` or
:class:`lit_distill.data.ZCA`); both are affine and invertible, so images move between the
spaces exactly (up to float rounding), and exports are always written in pixel space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor, nn

ImageSpace = Literal["pixel", "input"]
SPACES = ("pixel", "input")


def check_space(name: str, value: str) -> None:
    """Raise a ValueError naming the setting unless ``value`` is an image space."""
    if value not in SPACES:
        raise ValueError(f"{name}={value!r} is not an image space: use 'pixel' or 'input'")


def convert(
    images: Tensor, source: ImageSpace, target: ImageSpace, preprocess: nn.Module
) -> Tensor:
    """``images`` from space ``source`` to space ``target`` (differentiable)."""
    if source == target:
        return images
    return preprocess(images) if target == "input" else preprocess.inverse(images)


def network_inputs(
    batches: list[tuple[Tensor, ImageSpace]],
    preprocess: nn.Module,
    augment: Callable[..., Tensor | tuple[Tensor, ...]] | None = None,
    augment_space: ImageSpace = "input",
) -> list[Tensor]:
    """Bring image batches to the network's input space, augmenting them on the way.

    Args:
        batches: ``(images, space they are in)`` pairs; all of them go through one call of
            ``augment`` (a siamese DSA shares its random parameters between them).
        preprocess: pixels -> network input.
        augment: ``augment(*images) -> images`` (None: no augmentation).
        augment_space: the space the augmentation is applied in.

    Returns:
        The network inputs, in the order of ``batches``.
    """
    space = augment_space if augment is not None else "input"
    images = [convert(x, source, space, preprocess) for x, source in batches]
    if augment is not None:
        out = augment(*images)
        images = list(out) if isinstance(out, tuple) else [out]
    return [convert(x, space, "input", preprocess) for x in images]
