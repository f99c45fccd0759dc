"""``dcrn train``: train a DCRN on a folder-per-class video set and/or labelled streams."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from dcrn.app.argtypes import (
    bounded,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed,
    thread_count,
    writable_file,
    writable_folder,
)

log = logging.getLogger("dcrn.train")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, type=Path, help="data folder (class folders, streams, or train/ val/)")
    data.add_argument(
        "--out", required=True, type=writable_file, help="best checkpoint; OUT.last.pt keeps the latest epoch"
    )
    data.add_argument("--clip-len", type=positive_int, default=32, help="frames per training item (default 32)")
    data.add_argument(
        "--sampling", default="consecutive", choices=["consecutive", "random_stride", "uniform"], help="clip sampling"
    )
    data.add_argument("--stride", type=positive_int, default=1, help="frame step (random_stride: the largest step)")
    data.add_argument(
        "--val-fraction", type=fraction(high_open=True), default=0.1, help="held-out fraction of source groups"
    )
    data.add_argument("--val-groups", default="", help="comma-separated source groups to hold out for validation")
    data.add_argument("--split-list", type=Path, help="UCF101-style training list (Class/clip.avi per line)")
    data.add_argument("--val-list", type=Path, help="UCF101-style validation list")
    data.add_argument("--hmdb-splits", type=Path, help="folder of HMDB51 '<class>_test_splitN.txt' files")
    data.add_argument("--hmdb-split", type=positive_int, default=1, help="which HMDB51 split (default 1)")
    data.add_argument("--no-cache", action="store_true", help="decode videos on every read instead of once")
    data.add_argument(
        "--workers",
        type=bounded(int, 0, 256, name="workers"),
        default=0,
        help="DataLoader worker processes (default 0)",
    )
    data.add_argument("--no-augment", action="store_true", help="no crop / colour / flip augmentation")
    data.add_argument(
        "--flip", default="none", help="horizontal flip map: none, all, or pairs like move_left:move_right,..."
    )
    data.add_argument("--crop-scale", type=fraction(low_open=True), nargs=2, default=(0.7, 1.0), metavar=("MIN", "MAX"))
    data.add_argument(
        "--color-jitter", type=non_negative_float, default=0.2, help="brightness/contrast/saturation strength"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--encoder", default="seed", help="seed, mobilenet_v2, mobilenet_v3_small, resnet18, ...")
    model.add_argument("--cell", default="gru", help="gru, lstm, motion_avg, convrnn, convgru, convlstm, convgru_delta")
    model.add_argument("--encoder-widths", type=_ints, default=(16, 32, 64, 128), help="seed CNN block widths")
    model.add_argument(
        "--encoder-norm", default="none", choices=["none", "batch"], help="seed CNN: BatchNorm after each conv"
    )
    model.add_argument("--pool", default="flatten", choices=["flatten", "avg"], help="feature map -> vector")
    model.add_argument("--hidden-size", type=positive_int, default=128)
    model.add_argument("--head-hidden", type=non_negative_int, default=0)
    model.add_argument("--dropout", type=fraction(high_open=True), default=0.0)
    model.add_argument(
        "--input-size",
        type=bounded(int, 16, 1024, name="input_size"),
        default=64,
        help="frames are resized to S x S (default 64)",
    )
    model.add_argument("--pretrained", action="store_true", help="start the encoder from ImageNet weights")
    model.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="fast mode: freeze the encoder, compute per-frame features once, train cell and head only",
    )
    model.add_argument(
        "--feature-cache", type=writable_folder, help="with --freeze-encoder: also keep features in this folder"
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=positive_int, default=10)
    opt.add_argument("--batch-size", type=positive_int, default=16)
    opt.add_argument("--optimizer", default="adamw", choices=["adam", "adamw", "sgd", "rmsprop"])
    opt.add_argument("--lr", type=positive_float, default=2e-3)
    opt.add_argument("--weight-decay", type=non_negative_float, default=1e-4)
    opt.add_argument("--momentum", type=fraction(high_open=True), default=0.9, help="SGD / RMSprop momentum")
    opt.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"])
    opt.add_argument("--warmup-epochs", type=non_negative_float, default=0.5)
    opt.add_argument("--grad-clip", type=non_negative_float, default=1.0, help="max gradient norm (0: off)")
    opt.add_argument("--label-smoothing", type=fraction(high_open=True), default=0.0)
    opt.add_argument(
        "--loss-skip-frames",
        type=non_negative_int,
        default=0,
        help="the first N frames of every item count in no loss (default 0)",
    )
    opt.add_argument(
        "--bptt", type=non_negative_int, default=0, help="truncated BPTT chunk length in frames (0: whole item)"
    )
    opt.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    opt.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    opt.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads (default: torch's choice)")
    opt.add_argument("--seed", type=seed, default=0)
    opt.add_argument("--max-steps-per-epoch", type=non_negative_int, default=0, help="cap on steps per epoch (0: all)")
    opt.add_argument("--resume", action="store_true", help="continue from OUT.last.pt")
    opt.add_argument("--init", type=Path, help="start from this checkpoint's architecture and weights")
    opt.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from dcrn.models.train import TrainOptions, train

    options = TrainOptions(
        data=args.data,
        out=args.out,
        encoder=args.encoder,
        cell=args.cell,
        encoder_widths=tuple(args.encoder_widths),
        encoder_norm=args.encoder_norm,
        pool=args.pool,
        hidden_size=args.hidden_size,
        head_hidden=args.head_hidden,
        dropout=args.dropout,
        input_size=args.input_size,
        pretrained=args.pretrained,
        freeze_encoder=args.freeze_encoder,
        feature_cache=args.feature_cache,
        clip_len=args.clip_len,
        sampling=args.sampling,
        stride=args.stride,
        val_fraction=args.val_fraction,
        val_groups=tuple(g.strip() for g in args.val_groups.split(",") if g.strip()),
        split_list=args.split_list,
        val_list=args.val_list,
        hmdb_splits=args.hmdb_splits,
        hmdb_split=args.hmdb_split,
        cache=not args.no_cache,
        workers=args.workers,
        augment=not args.no_augment,
        flip=args.flip,
        crop_scale=tuple(args.crop_scale),
        color_jitter=args.color_jitter,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        grad_clip=args.grad_clip,
        label_smoothing=args.label_smoothing,
        loss_skip_frames=args.loss_skip_frames,
        bptt=args.bptt,
        amp=not args.no_amp,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        resume=args.resume,
        init=args.init,
        max_steps_per_epoch=args.max_steps_per_epoch,
        progress=not args.no_progress,
        command="dcrn " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("train") :])
        if "train" in sys.argv
        else "",
    )
    result = train(options)
    acc = "n/a" if result.best_val_accuracy is None else f"{result.best_val_accuracy:.4f}"
    log.info(
        "saved %s (best epoch %d, val accuracy %s) in %.0f s", result.best_path, result.best_epoch, acc, result.wall_s
    )
    return 0
