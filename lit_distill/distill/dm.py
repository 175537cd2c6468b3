"""DM: distribution matching with freshly initialised feature extractors (the TGDD baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_distill.augment import DSA
from lit_distill.distill.base import DistillationModule
from lit_distill.distill.matching import class_losses, largest_activation, real_class_means
from lit_distill.distill.update import StepOutcome
from lit_distill.seeding import generator
from lit_distill.space import ImageSpace, check_space, network_inputs

# Keys of DM/TGDD's random streams: the iteration's networks, and each class's draws.
NETS_STREAM = 4
CLASS_STREAM = 5

#: On the CPU, real images per no-grad forward keep every layer's output under this size: glibc
#: serves larger blocks with fresh pages from the system (a page fault per 4 KiB) rather than
#: reusing freed memory, which costs more than the arithmetic (benchmarks/tgdd_speed.py).
REAL_CHUNK_BYTES = 8 * 2**20


class DMModule(DistillationModule):
    """Distribution matching (Zhao & Bilen, WACV 2023): match per-class mean features of real
    and synthetic images under a randomly initialised network, a new one every iteration.

    The loss is summed over classes and one optimiser step is taken per iteration, but the
    backward runs class by class (gradients accumulate), so peak memory is that of one class's
    graph, whatever the number of classes and IPC. The real side needs no graph: on a GPU the
    real batches of several classes (each with its class's augmentation) go through the
    extractor in one forward of up to ``real_forward_batch`` images, which saves launches; on the
    CPU they go in small chunks whose activations stay in memory the allocator reuses (a large
    block comes fresh from the system, a page fault per page), and the networks run in the
    channels-last layout (faster convolutions and pooling).

    Random draws: the networks of iteration ``i`` come from a stream keyed by ``(seed, i)``,
    and each class's real batch, augmentation and synthetic subset from one keyed by
    ``(seed, i, class)``. Under DDP the classes are split between the ranks (rank ``r`` of
    ``W`` takes classes ``r, r + W, ...``) and their gradients are summed, so W processes
    compute exactly the single-process update, each doing 1/W of the work.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        arch: feature-extractor architecture (``lit_distill.models``).
        arch_kwargs: its options.
        augment: DSA strategy applied siamese-wise to each class's real and synthetic batch.
        augment_mode: DSA flavour (``idc``: flip/color/cutout always plus one geometric op).
        augment_space: where DSA runs: ``input`` (after normalisation, as every reference
            does) or ``pixel``.
        real_batch: real images per class and iteration.
        syn_batch: at most this many decoded synthetic images per class and iteration
            (``None``: all of them).
        real_forward_batch: real images per no-grad forward (several classes at once). ``None``:
            1024 on a GPU; on the CPU as many as keep each layer's output under 8 MiB (16 for
            ConvNet-3 width 128 at 32 px).
        channels_last: run the networks in the channels-last memory layout (same values).
            ``None``: on the CPU only (measured faster there; on a GPU unmeasured).
        image_space: DM optimises the normalised images themselves, unclamped (``input``).
        **kwargs: the :class:`DistillationModule` arguments (ipc, factor, init, lr_images,
            momentum_images, iterations, image_every, export_dir, real_on_device, seed).
    """

    method = "dm"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        arch: str = "convnet3",
        arch_kwargs: dict[str, Any] | None = None,
        augment: str = "color_crop_cutout",
        augment_mode: Literal["single", "all", "idc"] = "idc",
        augment_space: ImageSpace = "input",
        real_batch: int = 128,
        syn_batch: int | None = None,
        real_forward_batch: int | None = None,
        channels_last: bool | None = None,
        image_space: ImageSpace = "input",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_classes, image_shape, mean, std, dataset, image_space=image_space, **kwargs
        )
        check_space("augment_space", augment_space)
        optional = [size for size in (real_forward_batch, syn_batch) if size is not None]
        if min([real_batch, *optional]) < 1:
            raise ValueError(
                f"real_batch, real_forward_batch and syn_batch must be positive, got "
                f"{real_batch}, {real_forward_batch}, {syn_batch}"
            )
        self.augment = DSA(augment, mode=augment_mode)
        # Working networks: snapshots or fresh weights are copied into them each iteration.
        # Kept out of the module's children so they are neither checkpointed nor DDP-wrapped.
        self._nets = {"extractor": self.build_network(), "template": self.build_network()}

    @property
    def alpha(self) -> float:
        """Weight of the distribution constraint (none in DM)."""
        return 0.0

    def on_fit_start(self) -> None:
        super().on_fit_start()
        on_cpu = self.device.type == "cpu"
        channels_last = on_cpu if self.hparams.channels_last is None else self.hparams.channels_last
        layout = torch.channels_last if channels_last else torch.contiguous_format
        for name in ("extractor", "critic"):
            if name in self._nets:
                self._nets[name].to(self.device, memory_format=layout)
        self.real_chunk = self.hparams.real_forward_batch
        if self.real_chunk is None:
            probe = largest_activation(self._nets["extractor"], self.image_shape, self.device)
            self.real_chunk = max(1, REAL_CHUNK_BYTES // probe) if on_cpu else 1024

    def pick_networks(self, rng: torch.Generator) -> tuple[nn.Module, nn.Module | None]:
        """A freshly initialised extractor (seeded from ``rng``) and no critic."""
        # The template stays on the CPU: a seed then gives the same weights on every device,
        # and only the CPU generator is forked; the copy to the extractor is one small transfer.
        template = self._nets["template"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=rng)))
            for module in template.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        extractor = self._nets["extractor"]
        extractor.load_state_dict(template.state_dict())
        return extractor, None

    def synthetic_batch(self, stored: Tensor, rng: torch.Generator) -> Tensor:
        """The decoded images of one class's ``stored`` images (at most ``syn_batch``)."""
        syn = self.synthetic.decode(stored)
        limit = self.hparams.syn_batch
        if limit is not None and syn.shape[0] > limit:
            syn = syn[torch.randperm(syn.shape[0], generator=rng)[:limit].to(syn.device)]
        return syn

    def distill_step(self, rng: torch.Generator) -> StepOutcome:
        step = int(self.iteration)
        extractor, critic = self.pick_networks(generator(self.hparams.seed, NETS_STREAM, step))
        critic = critic if self.alpha > 0 else None
        hp = self.hparams
        scale = self.loss_scale()
        images = self.synthetic.images
        if images.grad is None:  # one gradient buffer; each class adds into its own rows
            images.grad = torch.zeros_like(images)
        totals = torch.zeros(2, device=self.device)
        mine = list(range(self.global_rank, self.num_classes, self.trainer.world_size))
        per_forward = max(1, self.real_chunk // hp.real_batch)  # classes per real forward
        for first in range(0, len(mine), per_forward):
            classes = mine[first : first + per_forward]
            streams = [generator(hp.seed, CLASS_STREAM, step, c) for c in classes]
            plans, real = [], []
            for c, stream in zip(classes, streams, strict=True):
                pixels = self.real.sample(c, hp.real_batch, stream).to(self.device)
                plans.append(self.augment.draw(pixels.shape, stream))
                real.append(self.inputs(pixels, "pixel", plans[-1]))
            means = real_class_means(extractor, real, self.real_chunk)
            for c, stream, plan, mean in zip(classes, streams, plans, means, strict=True):
                # The class's stored images as a leaf of their own: its backward touches only
                # them (a backward through a slice of the whole set would allocate a gradient
                # of the whole set for every class).
                rows = self.synthetic.class_rows(c)
                stored = images[rows].detach().requires_grad_(True)
                syn = self.inputs(self.synthetic_batch(stored, stream), self.synthetic.space, plan)
                mmd, ce = class_losses(extractor, critic, mean, syn, c)
                ((mmd + self.alpha * ce) * scale).backward()  # one class's graph at a time
                images.grad[rows] += stored.grad
                totals += torch.stack([mmd.detach(), ce.detach()])
        mmd, ce = totals
        logs = {"train/mmd": mmd}
        if self.alpha > 0:
            logs["train/constraint"] = ce
        return StepOutcome(mmd + self.alpha * ce, reduce="sum", logs=logs)

    def inputs(self, images: Tensor, space: str, plan) -> Tensor:
        """Network inputs of ``images`` (in ``space``), augmented with a class's DSA plan."""
        (out,) = network_inputs(
            [(images, space)],
            self.preprocess,
            augment=lambda x: self.augment.apply(x, plan),
            augment_space=self.hparams.augment_space,
        )
        return out
