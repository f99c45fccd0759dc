"""Training: clips or stream windows -> per-frame cross-entropy -> the best checkpoint on validation.

Every frame of every item has a label (or -1, ignored), so the model learns to predict at every frame,
and to switch when a stream's action changes. Long items are cut into chunks of ``bptt`` frames for
truncated back-propagation through time: the state carries over between chunks, the gradient does not.

Each epoch writes ``OUT.last.pt`` (weights plus optimizer, scheduler and epoch in the checkpoint's
``training`` payload; ``resume`` continues from it) and, when validation improves, ``OUT`` itself.
With a frozen encoder, per-frame features are computed once and cached (:mod:`dcrn.models.features`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .augment import AugmentOptions, ClipAugment, parse_flip_map
from .checkpoint import model_from_payload, read_checkpoint, save_checkpoint
from .config import DCRNConfig
from .data import DataIndex, scan_splits
from .datasets import ClipDataset, SamplingOptions
from .dcrn import DCRN
from .errors import ConfigError
from .progress import Progress

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainOptions:
    data: Path  # data folder (class folders and/or labelled streams, or train/ and val/ inside)
    out: Path  # the best checkpoint; OUT.last.pt holds the latest epoch for resuming
    # model
    encoder: str = "seed"
    cell: str = "gru"
    encoder_widths: tuple[int, ...] = (16, 32, 64, 128)
    encoder_norm: str = "none"  # seed CNN: "batch" for BatchNorm after each convolution
    pool: str = "flatten"  # "flatten" keeps where things are in the frame (motion); "avg" drops it
    hidden_size: int = 128
    head_hidden: int = 0
    dropout: float = 0.0
    input_size: int = 64
    pretrained: bool = False  # torchvision encoders: start from ImageNet weights
    freeze_encoder: bool = False  # train only the cell and head
    feature_cache: Path | None = None  # frozen encoder: keep per-frame features on disk here too
    # data
    clip_len: int = 32  # frames per training item
    sampling: str = "consecutive"
    stride: int = 1
    val_fraction: float = 0.1  # without train/ + val/ folders or lists: held-out fraction of groups
    val_groups: tuple[str, ...] = ()
    split_list: Path | None = None
    val_list: Path | None = None
    hmdb_splits: Path | None = None
    hmdb_split: int = 1
    cache: bool = True  # decode every video once into memory
    workers: int = 0  # DataLoader worker processes (decoding when not cached)
    augment: bool = True
    flip: str = "none"  # flip map: none | all | a:b,c:d (see augment.parse_flip_map)
    crop_scale: tuple[float, float] = (0.7, 1.0)
    color_jitter: float = 0.2
    # optimisation
    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD and RMSprop
    schedule: str = "cosine"  # cosine (with warmup) | step (x0.1 at 1/2 and 3/4) | constant
    warmup_epochs: float = 0.5
    grad_clip: float = 1.0  # max gradient norm; 0: off
    label_smoothing: float = 0.0
    loss_skip_frames: int = 0  # the first N frames of every item count in no loss (the state is still warming up)
    bptt: int = 0  # truncated BPTT chunk length in frames; 0: whole items
    amp: bool = True  # mixed precision (CUDA only)
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0: torch's default
    seed: int = 0
    resume: bool = False  # continue from OUT.last.pt
    init: Path | None = None  # start from this checkpoint's config and weights (e.g. to fine-tune, or freeze)
    max_steps_per_epoch: int = 0  # 0: the whole data set every epoch
    progress: bool = True
    command: str = ""  # the command line that started training, stored in the checkpoint
    extra_meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch size must be >= 1 and the learning rate > 0")
        if self.bptt < 0:
            raise ConfigError(f"bptt must be >= 0 frames, got {self.bptt}")

    @property
    def last_path(self) -> Path:
        return Path(self.out).with_suffix(".last.pt")


@dataclass
class TrainResult:
    best_path: Path
    best_epoch: int
    best_val_accuracy: float | None
    history: list[dict]
    wall_s: float


def train(options: TrainOptions) -> TrainResult:
    started = time.monotonic()
    if options.threads:
        torch.set_num_threads(options.threads)
    device = _device(options.device)
    torch.manual_seed(options.seed)
    train_index, val_index = scan_splits(
        options.data,
        split_list=options.split_list,
        val_list=options.val_list,
        hmdb_splits=options.hmdb_splits,
        hmdb_split=options.hmdb_split,
        val_fraction=options.val_fraction,
        val_groups=options.val_groups,
        seed=options.seed,
    )
    classes = train_index.classes
    log.info(
        "%d classes; train: %d clips + %d streams; val: %s",
        len(classes),
        len(train_index.clips),
        len(train_index.streams),
        f"{len(val_index.clips)} clips + {len(val_index.streams)} streams" if val_index else "none",
    )
    resume_payload = read_checkpoint(options.last_path) if options.resume else None
    init_payload = read_checkpoint(options.init) if options.init and resume_payload is None else None
    payload = resume_payload or init_payload
    model = None
    if payload is not None:
        model = model_from_payload(payload)  # checked before allocation: a checkpoint is untrusted input
        config = model.config
    else:
        config = DCRNConfig(
            num_classes=len(classes),
            labels=classes,
            encoder=options.encoder,
            encoder_widths=tuple(options.encoder_widths),
            encoder_norm=options.encoder_norm,
            pretrained=options.pretrained,
            cell=options.cell,
            hidden_size=options.hidden_size,
            pool=options.pool,
            head_hidden=options.head_hidden,
            dropout=options.dropout,
            input_size=options.input_size,
        )
    if config.labels and tuple(config.labels) != tuple(classes):
        raise ConfigError(f"the checkpoint's classes {list(config.labels)} differ from the data's {list(classes)}")
    model = (model or DCRN(config, load_pretrained=True)).to(device)
    cached_features = options.freeze_encoder
    if options.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    train_set = _dataset(options, train_index, model, device, train=True, features=cached_features)
    if cached_features and hasattr(model.cell, "fit_input_stats") and resume_payload is None:
        # A cell that standardises its input (motion_cell.py) takes the statistics of the training features.
        model.cell.fit_input_stats([train_set.store.load(i)[0] for i in range(len(train_index))])
    val_set = _dataset(options, val_index, model, device, train=False, features=cached_features) if val_index else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(options, params)
    steps_per_epoch = math.ceil(len(train_set) / options.batch_size)
    if options.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, options.max_steps_per_epoch)
    scheduler = _scheduler(options, optimizer, steps_per_epoch)
    use_amp = options.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    best_acc, best_epoch, start_epoch = -1.0, -1, 0
    if resume_payload is not None:
        state = resume_payload.get("training") or {}
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state and use_amp:
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        best_acc, best_epoch = float(state["best_accuracy"]), int(state["best_epoch"])
        history = list(state.get("history", []))
        log.info("resuming from %s at epoch %d", options.last_path, start_epoch + 1)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1, label_smoothing=options.label_smoothing)
    normalize = _Normalizer(config, device, features=cached_features)
    for epoch in range(start_epoch, options.epochs):
        epoch_started = time.monotonic()
        train_set.epoch = epoch
        loader = DataLoader(
            train_set,
            batch_size=options.batch_size,
            shuffle=True,
            num_workers=options.workers,
            drop_last=len(train_set) > options.batch_size,
            generator=torch.Generator().manual_seed(options.seed * 1000 + epoch),
        )
        model.train()
        if options.freeze_encoder:
            model.encoder.eval()  # frozen batch-norm statistics
        stats = _Meter()
        bar = Progress(min(len(loader), steps_per_epoch), f"epoch {epoch + 1}/{options.epochs}", options.progress)
        for step, (frames, labels) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            x = normalize(frames)  # (B, T, 3, S, S) or (B, T, F)
            y = labels.to(device)  # (B, T)
            if options.loss_skip_frames:
                y[:, : options.loss_skip_frames] = -1
            loss, correct, counted = _train_step(
                model, x, y, loss_fn, optimizer, scaler, options, use_amp, features=cached_features
            )
            scheduler.step()
            stats.add(loss, correct, counted, y.numel())
            bar.update(loss=stats.loss, acc=stats.accuracy, fps=stats.frames / (time.monotonic() - epoch_started))
        bar.close()
        record = {
            "epoch": epoch + 1,
            "train_loss": round(stats.loss, 4),
            "train_accuracy": round(stats.accuracy, 4),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.monotonic() - epoch_started, 1),
        }
        if val_set is not None:
            record.update(validate(model, val_set, normalize, options.batch_size, features=cached_features))
        history.append(record)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v}" for k, v in record.items() if k != "epoch"))
        score = record.get("val_accuracy", record["train_accuracy"])
        improved = score > best_acc
        if improved:
            best_acc, best_epoch = score, epoch + 1
        meta = _meta(options, history, best_epoch, best_acc, started, val_set is not None)
        training = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "best_accuracy": best_acc,
            "best_epoch": best_epoch,
            "history": history,
        }
        save_checkpoint(options.last_path, model, meta=meta, training=training)
        if improved:
            save_checkpoint(options.out, model, meta=meta)
    wall = time.monotonic() - started
    metric = "val accuracy" if val_set is not None else "train accuracy"
    log.info("best epoch %d (%s %.4f); %.0f s in all", best_epoch, metric, best_acc, wall)
    return TrainResult(Path(options.out), best_epoch, best_acc if val_set else None, history, wall)


def _train_step(model, x, y, loss_fn, optimizer, scaler, options: TrainOptions, use_amp: bool, *, features: bool):
    """One optimizer step per BPTT chunk; returns (mean loss, correct frames, labelled frames)."""
    steps = x.shape[1]
    chunk = options.bptt or steps
    state = None
    losses, correct, counted = [], 0, 0
    for start in range(0, steps, chunk):
        xc, yc = x[:, start : start + chunk], y[:, start : start + chunk]
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            if features:  # cached encoder outputs (B, t, *feature_shape)
                logits, state = model.forward_features(xc, state)
            else:
                logits, state = model.forward_sequence(xc, state, return_state=True)  # (B, t, C)
            loss = loss_fn(logits.float().flatten(0, 1), yc.flatten())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if options.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], options.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        state = tuple(s.detach() for s in state)  # truncate: the state goes on, its gradient does not
        mask = yc >= 0
        correct += int((logits.argmax(-1) == yc)[mask].sum())
        counted += int(mask.sum())
        losses.append(float(loss.detach()))
    return float(np.mean(losses)), correct, counted


@torch.no_grad()
def validate(model: DCRN, dataset: ClipDataset, normalize, batch_size: int, *, features: bool = False) -> dict:
    """Per-frame accuracy over all labelled frames, and last-frame accuracy of the clips."""
    model.eval()
    correct = counted = clip_correct = clip_count = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    is_clip = torch.tensor([start < 0 for _, start in dataset.items])
    seen = 0
    for frames, labels in loader:
        x = normalize(frames)
        logits = model.forward_features(x)[0] if features else model.forward_sequence(x)  # (B, T, C)
        pred = logits.argmax(-1).cpu()
        mask = labels >= 0
        correct += int((pred == labels)[mask].sum())
        counted += int(mask.sum())
        clips = is_clip[seen : seen + len(labels)]
        last = mask.long().cumsum(1).argmax(1)  # the last labelled frame of each item
        hit = pred.gather(1, last[:, None])[:, 0] == labels.gather(1, last[:, None])[:, 0]
        clip_correct += int(hit[clips].sum())
        clip_count += int(clips.sum())
        seen += len(labels)
    out = {"val_accuracy": round(correct / max(counted, 1), 4)}
    if clip_count:
        out["val_clip_accuracy"] = round(clip_correct / clip_count, 4)
    return out


class _Normalizer:
    """uint8 (B, T, S, S, 3) frames -> normalised float (B, T, 3, S, S) on the device; features pass through."""

    def __init__(self, config: DCRNConfig, device: torch.device, *, features: bool) -> None:
        self.device = device
        self.features = features
        self.mean = torch.tensor(config.mean, device=device).view(1, 1, 3, 1, 1)
        self.std = torch.tensor(config.std, device=device).view(1, 1, 3, 1, 1)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.features:
            return frames.to(self.device, non_blocking=True).float()  # (B, T, F)
        x = frames.to(self.device, non_blocking=True).permute(0, 1, 4, 2, 3).float()  # (B, T, 3, S, S)
        return (x / 255 - self.mean) / self.std


class _Meter:
    def __init__(self) -> None:
        self.loss_sum = self.items = 0.0
        self.correct = self.counted = self.frames = 0

    def add(self, loss: float, correct: int, counted: int, frames: int) -> None:
        self.loss_sum += loss
        self.items += 1
        self.correct += correct
        self.counted += counted
        self.frames += frames

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.items, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.counted, 1)


def _dataset(
    options: TrainOptions, index: DataIndex, model: DCRN, device, *, train: bool, features: bool
) -> ClipDataset:
    sampling = SamplingOptions(clip_len=options.clip_len, mode=options.sampling, stride=options.stride)
    if features:
        from .features import FeatureStore

        store = FeatureStore(index, model, cache_dir=options.feature_cache, device=device)
        return ClipDataset(index, sampling, model.config.input_size, train=train, seed=options.seed, store=store)
    augment = None
    if train and options.augment:
        jitter = options.color_jitter
        augment_options = AugmentOptions(
            crop_scale=tuple(options.crop_scale), brightness=jitter, contrast=jitter, saturation=jitter
        )
        augment = ClipAugment(augment_options, parse_flip_map(options.flip, index.classes))
    return ClipDataset(
        index,
        sampling,
        model.config.input_size,
        augment=augment,
        train=train,
        cache=options.cache,
        seed=options.seed,
    )


def _optimizer(options: TrainOptions, params) -> torch.optim.Optimizer:
    lr, wd = options.lr, options.weight_decay
    if options.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if options.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if options.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=options.momentum, weight_decay=wd, nesterov=True)
    return torch.optim.RMSprop(params, lr=lr, momentum=options.momentum, weight_decay=wd)


def _scheduler(options: TrainOptions, optimizer, steps_per_epoch: int):
    total = max(1, options.epochs * steps_per_epoch)
    warmup = int(options.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if options.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if options.schedule == "step":
            return 0.1 ** sum(step >= total * f for f in (0.5, 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA GPU")
    return torch.device(name)


def _meta(options: TrainOptions, history, best_epoch, best_acc, started, has_val) -> dict:
    opts = {f.name: _plain(getattr(options, f.name)) for f in fields(options) if f.name != "extra_meta"}
    return {
        "trained_with": opts,
        "command": options.command,
        "best_epoch": best_epoch,
        "best_val_accuracy" if has_val else "best_train_accuracy": best_acc,
        "history": history,
        "train_wall_s": round(time.monotonic() - started, 1),
        **options.extra_meta,
    }


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


__all__ = ["TrainOptions", "TrainResult", "asdict", "train", "validate"]
