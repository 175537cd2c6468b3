"""The learnable synthetic set: stored images, labels, multi-formation and initialisation.

Images are kept in pixel space ([0, 1], clamped) or in the network's input space (normalised or
ZCA-whitened, never clamped; see :mod:`lit_distill.space`), in class-major order: class 0's ``ipc``
stored images, then class 1's, and so on. With multi-formation (IDC, used by DANCE and TGDD) one
stored image holds ``factor x factor`` tiles and decodes into ``factor**2`` training images, so
the same storage budget yields more, smaller-detail images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_distill.data.images import LabeledImages
from lit_distill.errors import DatasetFormatError, SyntheticSetError
from lit_distill.multiformation import (
    PAD_VALUE,
    check_factor,
    decode_per_class,
    encode_multiformation,
)
from lit_distill.space import ImageSpace, check_space, convert

# Default soft labels are one-hot logits times this: softmax then puts at least
# 1 - (K - 1) * exp(-10) on the class (99.96 % for 10 classes, 99.5 % for 100), i.e. the hard
# label, while staying finite and learnable. DATM replaces them by experts' logits.
ONE_HOT_LOGIT = 10.0
# Noise initialisation: N(0.5, 0.25^2) clipped to [0, 1] (TGDD.py: ``randn / 4 + 0.5``, clamped).
NOISE_MEAN, NOISE_STD = 0.5, 0.25
# Real images classified per call when looking for correctly classified ones (bounded memory).
CANDIDATE_CHUNK = 256


def _model_device(classifier: Callable[[Tensor], Tensor], default: torch.device) -> torch.device:
    """Where ``classifier`` expects its input: its parameters' device if it has any."""
    if isinstance(classifier, nn.Module):
        for tensor in classifier.parameters():
            return tensor.device
    return default


class SyntheticSet(nn.Module):
    """The learnable synthetic dataset: images, labels and, when a method learns one, an lr.

    The set holds exactly what the method learns, and nothing else is a parameter: the images
    always; the label logits only with ``soft_labels`` (DATM, DPD); the student learning rate
    only when ``lr`` is given (the trajectory-matching family). Methods put every parameter of
    the set in an optimiser group (:meth:`learned`).

    Attributes:
        images: parameter (num_classes * ipc, C, H, W), float32, class-major, in :attr:`space`.
        label_logits: parameter (num_classes * ipc, num_classes) with ``soft_labels``, else None.
        lr: scalar parameter, the student learning rate (trajectory matching), else None.
        labels: int64 buffer, the class of every stored image.
        space: ``"pixel"`` or ``"input"`` (see :mod:`lit_distill.space`).
    """

    def __init__(
        self,
        num_classes: int,
        ipc: int,
        image_shape: Sequence[int],
        factor: int = 1,
        soft_labels: bool = False,
        lr: float | None = None,
        space: ImageSpace = "pixel",
    ) -> None:
        """Create a set of mid-grey images (call :meth:`initialize` before use).

        Args:
            num_classes: number of classes.
            ipc: stored images per class.
            image_shape: (C, H, W).
            factor: multi-formation factor; each stored image decodes into ``factor**2``.
            soft_labels: learn one logit vector per stored image (DATM) instead of hard labels.
            lr: initial student learning rate (trajectory matching's ``lr_teacher``); None when
                the method learns no learning rate.
            space: the space the images are stored (and optimised) in.
        """
        super().__init__()
        if num_classes < 1 or ipc < 1:
            raise ValueError(
                f"need at least one class and one image per class, got num_classes={num_classes}"
                f", ipc={ipc}"
            )
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        check_factor(factor, image_shape)
        check_space("space", space)
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"the initial student learning rate must be positive, got {lr}")
        self.num_classes, self.ipc, self.factor, self.space = num_classes, ipc, factor, space
        self.image_shape = tuple(int(s) for s in image_shape)
        count = num_classes * ipc
        self.images = nn.Parameter(torch.full((count, *self.image_shape), PAD_VALUE))
        self.register_buffer("labels", torch.arange(num_classes).repeat_interleave(ipc))
        if soft_labels:
            one_hot = F.one_hot(self.labels, num_classes).float() * ONE_HOT_LOGIT
            self.label_logits = nn.Parameter(one_hot)
        else:
            self.register_parameter("label_logits", None)
        if lr is None:
            self.register_parameter("lr", None)
        else:
            self.lr = nn.Parameter(torch.tensor(float(lr)))

    @property
    def num_images(self) -> int:
        """Number of training images after multi-formation."""
        return self.num_classes * self.ipc * self.factor**2

    @property
    def soft_labels(self) -> bool:
        return self.label_logits is not None

    def learned(self) -> dict[str, nn.Parameter]:
        """What this set learns, by group name: ``images``, and ``labels`` / ``lr`` if present."""
        groups = {"images": self.images, "labels": self.label_logits, "lr": self.lr}
        return {name: p for name, p in groups.items() if p is not None}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, ipc={self.ipc}, image_shape={self.image_shape}, "
            f"factor={self.factor}, soft_labels={self.soft_labels}, "
            f"learns_lr={self.lr is not None}, space={self.space!r}"
        )

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def initialize(
        self,
        mode: Literal["real", "noise", "correct"],
        real: LabeledImages | None = None,
        generator: torch.Generator | None = None,
        classifier: Callable[[Tensor], Tensor] | None = None,
        preprocess: nn.Module | None = None,
        pick: Literal["random", "first"] = "random",
        downsample: Literal["area", "nearest"] = "area",
    ) -> None:
        """Set the images (labels are left as they are).

        Args:
            mode: ``"real"``: random real images of each class; ``"correct"``: random real
                images that ``classifier`` classifies correctly (DATM); ``"noise"``: Gaussian
                noise, see :data:`NOISE_MEAN`. With ``factor > 1`` each stored image tiles
                ``factor**2`` downsampled real images of its class (the reference "mix"
                initialisation), so decoding gives back (resampled) real images.
            real: the real training images (``"real"``, ``"correct"``).
            generator: random stream (the global RNG when None); use a CPU generator.
            classifier: ``pixels (N, C, H, W) in [0, 1] -> logits`` (``"correct"``), called
                without gradients (put networks in eval mode); it gets the pixels on its
                parameters' device (this set's device for plain functions).
            preprocess: pixels -> network input; needed when the set lives in input space
                (the initial pixels are mapped there).
            pick: ``"real"`` takes random images of each class, or its first ones in dataset
                order (what the IDC/TGDD code does).
            downsample: how ``factor > 1`` shrinks images into tiles: ``area`` averaging, or
                ``nearest`` (the IDC/TGDD code).

        Raises:
            DatasetFormatError: a class has fewer than ``ipc * factor**2`` real images.
            SyntheticSetError: ``real`` does not match this set, or too few correctly
                classified images.
        """
        if self.space == "input" and preprocess is None:
            raise ValueError("a synthetic set in input space needs preprocess= to initialise")
        if pick not in ("random", "first"):
            raise ValueError(f"init pick {pick!r}: use 'random' or 'first'")
        self._initialize_pixels(mode, real, generator, classifier, pick, downsample)
        if self.space == "input":
            self.images.copy_(convert(self.images, "pixel", "input", preprocess))

    def _initialize_pixels(
        self,
        mode: str,
        real: LabeledImages | None,
        generator: torch.Generator | None,
        classifier: Callable[[Tensor], Tensor] | None,
        pick: str = "random",
        downsample: str = "area",
    ) -> None:
        if mode == "noise":
            device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(self.images.shape, generator=generator, device=device)
            self.images.copy_((noise * NOISE_STD + NOISE_MEAN).clamp_(0.0, 1.0))
            return
        if mode not in ("real", "correct"):
            raise ValueError(f"unknown init mode {mode!r}: use 'real', 'correct' or 'noise'")
        self._check_real(real, mode, classifier)
        need = self.ipc * self.factor**2
        for c in range(self.num_classes):
            if mode == "real" and pick == "first":
                chosen = real.pixels(real.indices_of(c)[:need])
            elif mode == "real":
                chosen = real.sample(c, need, generator)
            else:
                chosen = self._correct_images(real, c, need, generator, classifier)
            chosen = chosen.to(self.images.device)
            stored = encode_multiformation(chosen, self.factor, downsample)
            self.images[c * self.ipc : (c + 1) * self.ipc] = stored

    def _check_real(
        self, real: LabeledImages | None, mode: str, classifier: Callable | None
    ) -> None:
        if real is None:
            raise ValueError(f"init mode {mode!r} needs the real images (real=...)")
        if mode == "correct" and classifier is None:
            raise ValueError("init mode 'correct' needs a classifier (e.g. a trained expert)")
        if real.num_classes != self.num_classes or tuple(real.image_shape) != self.image_shape:
            raise SyntheticSetError(
                f"cannot initialise a synthetic set of {self.num_classes} classes of "
                f"{self.image_shape} from {real!r}: use the dataset the set is distilled from"
            )
        need = self.ipc * self.factor**2
        try:
            real.check_ipc(need)
        except DatasetFormatError as err:
            if self.factor == 1:
                raise
            raise DatasetFormatError(
                f"ipc={self.ipc} with factor {self.factor} needs {need} real images per class "
                f"to initialise: {err}"
            ) from err

    def _correct_images(
        self,
        real: LabeledImages,
        c: int,
        need: int,
        generator: torch.Generator | None,
        classifier: Callable[[Tensor], Tensor],
    ) -> Tensor:
        """``need`` random images of class ``c`` that ``classifier`` gets right, in draw order."""
        rows = real.indices_of(c)
        rows = rows[torch.randperm(len(rows), generator=generator)]
        device = _model_device(classifier, self.images.device)
        found: list[Tensor] = []
        count = 0
        for chunk in rows.split(CANDIDATE_CHUNK):
            pixels = real.pixels(chunk).to(device)
            correct = classifier(pixels).argmax(dim=1) == c
            found.append(pixels[correct][: need - count])
            count += found[-1].shape[0]
            if count == need:
                return torch.cat(found)
        raise SyntheticSetError(
            f"only {count} of the {len(rows)} images of class {c} ({real.classes[c]!r}) are "
            f"classified correctly, {need} needed for init='correct': lower ipc, use a better "
            "trained classifier, or use init='real'"
        )

    @torch.no_grad()
    def initialize_soft_labels(self, logits: Tensor) -> None:
        """Set the learnable label logits (DATM: the experts' logits on the initial images).

        Args:
            logits: (num_classes * ipc, num_classes), one row per stored image, shared by the
                ``factor**2`` images it decodes into.
        """
        if self.label_logits is None:
            raise ValueError("this synthetic set has hard labels: create it with soft_labels=True")
        if tuple(logits.shape) != tuple(self.label_logits.shape):
            raise ValueError(
                f"soft labels must have shape {tuple(self.label_logits.shape)} (one row per "
                f"stored image), got {tuple(logits.shape)}"
            )
        self.label_logits.copy_(logits)

    # ------------------------------------------------------------------ use
    def decoded(self, classes: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """Training images and targets after multi-formation, class-major.

        Args:
            classes: only these classes, in this order (all when None).

        Returns:
            Images (n, C, H, W), differentiable w.r.t. :attr:`images`, and targets: int64
            labels (n,) with hard labels, the logits (n, num_classes) with soft labels.
        """
        images = self.images
        targets = self.labels if self.label_logits is None else self.label_logits
        if classes is not None:
            rows = self._rows(classes)
            images, targets = images[rows], targets[rows]
        return decode_per_class(images, targets, self.factor, self.ipc)

    def _rows(self, classes: Sequence[int]) -> Tensor:
        """Indices of the stored images of ``classes``, class by class."""
        classes = [int(c) for c in classes]
        if any(not 0 <= c < self.num_classes for c in classes):
            raise IndexError(f"classes {classes} out of range [0, {self.num_classes})")
        device = self.images.device
        first = torch.tensor(classes, dtype=torch.long, device=device) * self.ipc
        return (first[:, None] + torch.arange(self.ipc, device=device)).reshape(-1)

    def class_images(self, c: int) -> Tensor:
        """Decoded training images of class ``c`` (differentiable)."""
        return self.decoded([c])[0]

    def class_rows(self, c: int) -> slice:
        """The stored rows of class ``c`` (class-major: a contiguous block)."""
        if not 0 <= c < self.num_classes:
            raise IndexError(f"class {c} out of range [0, {self.num_classes})")
        return slice(c * self.ipc, (c + 1) * self.ipc)

    def decode(self, stored: Tensor) -> Tensor:
        """Training images of stored images of ONE class (multi-formation, differentiable)."""
        targets = torch.zeros(stored.shape[0], dtype=torch.long, device=stored.device)
        return decode_per_class(stored, targets, self.factor, stored.shape[0])[0]

    @torch.no_grad()
    def clamp_(self) -> None:
        """Put pixels back into [0, 1] after an update (images in input space are never
        clamped: nothing bounds them there)."""
        if self.space == "pixel":
            self.images.clamp_(0.0, 1.0)

    def pixels(self, preprocess: nn.Module) -> Tensor:
        """The stored images as pixels (detached), whatever space they live in."""
        return convert(self.images.detach(), self.space, "pixel", preprocess)
