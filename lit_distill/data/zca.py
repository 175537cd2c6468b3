"""ZCA whitening fitted once on the training pixels, cached next to the data.

As in the MTT/DATM recipes (docs/methods.md, "ZCA whitening"): kornia's ``ZCAWhitening`` with
``eps=0.1`` fitted on the flattened training pixels in [0, 1], without mean/std normalisation,
and applied to every image the networks see; its inverse turns whitened images back into
pixels for saving.
"""

import hashlib
from pathlib import Path

import torch
from kornia.enhance import ZCAWhitening
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_distill.data.images import LabeledImages, read_cache, write_cache

# Regulariser added to the covariance eigenvalues: the value of the MTT/DATM reference code.
DEFAULT_EPS = 0.1


class ZCA(nn.Module):
    """ZCA whitening of images with ``num_features = C * H * W`` values; shape preserving.

    The fit lives in plain buffers (``mean``, ``transform``, ``transform_inv``, ``fitted``),
    so it travels with ``state_dict`` and ``.to(device)`` like any module state.
    """

    def __init__(self, num_features: int, eps: float = DEFAULT_EPS) -> None:
        """An identity transform until :meth:`fit` (or a fitted ``state_dict``) sets it.

        Args:
            num_features: values per image (C*H*W).
            eps: regulariser added to the covariance eigenvalues.
        """
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(1, num_features))
        self.register_buffer("transform", torch.eye(num_features))
        self.register_buffer("transform_inv", torch.eye(num_features))
        self.register_buffer("fitted", torch.tensor(False))
        # Mirror of ``fitted`` as a Python bool: reading the buffer on a GPU would synchronise
        # at every call.
        self._is_fitted = False

    @property
    def num_features(self) -> int:
        return self.mean.shape[1]

    @torch.no_grad()
    def fit(self, pixels: Tensor) -> "ZCA":
        """Fit on float pixels in [0, 1], (N, C, H, W) or (N, D), on any device."""
        kornia_zca = ZCAWhitening(eps=self.eps, compute_inv=True)
        kornia_zca.fit(pixels.flatten(1).to(torch.float32))
        self.mean.copy_(kornia_zca.mean_vector)
        self.transform.copy_(kornia_zca.transform_matrix)
        self.transform_inv.copy_(kornia_zca.transform_inv)
        self.fitted.fill_(True)
        self._is_fitted = True
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Whiten pixels in [0, 1] (any (N, ...) shape with ``num_features`` values per row)."""
        self._check_fitted()
        return _affine(x, self.transform, before=self.mean)

    def inverse(self, x: Tensor) -> Tensor:
        """Un-whiten back to [0, 1] pixel units (not clamped)."""
        self._check_fitted()
        return _affine(x, self.transform_inv, after=self.mean)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, eps={self.eps}"

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._is_fitted = bool(self.fitted)

    def _check_fitted(self) -> None:
        if not self._is_fitted:
            raise RuntimeError("ZCA is not fitted: call fit() or load a fitted state_dict")


def _affine(
    x: Tensor, matrix: Tensor, before: Tensor | None = None, after: Tensor | None = None
) -> Tensor:
    """``((x - before) @ matrix + after)`` on flattened rows, in float32, shape preserved."""
    # The whitening matrix amplifies small differences; in bf16/fp16 (autocast, or a module cast
    # to half) they would drown in rounding, so this product always runs in float32.
    with torch.autocast(device_type=x.device.type, enabled=False):
        rows = x.flatten(1).to(torch.float32)
        if before is not None:
            rows = rows - before.float()
        rows = rows @ matrix.float()
        if after is not None:
            rows = rows + after.float()
    return rows.view_as(x).to(x.dtype)


def data_fingerprint(images: LabeledImages) -> str:
    """A hash of a labelled image set (shape, classes, labels, every pixel): ~0.1 s per 150 MB."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(images.images.shape), images.classes)).encode())
    for tensor in (images.labels, images.images):
        digest.update(memoryview(tensor.cpu().contiguous().numpy()).cast("B"))
    return digest.hexdigest()


def zca_cache_path(cache_dir: Path, name: str, eps: float) -> Path:
    """Where the ZCA fit of dataset ``name`` with regulariser ``eps`` is cached."""
    return Path(cache_dir) / f"zca_{name}_eps{eps:g}.pt"


def load_or_fit_zca(
    train: LabeledImages,
    eps: float = DEFAULT_EPS,
    cache_dir: Path | None = None,
    device: torch.device | str = "cpu",
) -> ZCA:
    """The ZCA fit of ``train``: read from the cache when it matches the data, else fitted.

    A fresh fit is written to ``cache_dir`` (when given) for later runs; a cache made from other
    data (fingerprint mismatch) or that cannot be read is refitted and overwritten.

    Args:
        train: the training split (the fit uses all of it).
        eps: eigenvalue regulariser.
        cache_dir: folder of the cache file, None to always fit.
        device: where to fit (a GPU is much faster); the result is returned on the CPU.
    """
    key = f"{data_fingerprint(train)} eps={eps:g}"
    path = zca_cache_path(cache_dir, train.name, eps) if cache_dir is not None else None
    cached = read_cache(path, key) if path is not None else None
    zca = ZCA(train.images[0].numel(), eps)
    if cached is not None:
        zca.load_state_dict(cached)
        return zca
    rank_zero_info(f"Fitting ZCA whitening on the {len(train)} training images of {train.name}")
    zca = zca.to(device).fit(train.images.to(device).to(torch.float32).div_(255.0)).cpu()
    if path is not None:
        write_cache(path, key, zca.state_dict())
    return zca
