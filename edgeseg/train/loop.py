"""Training loop: single process, or DistributedDataParallel under ``torchrun`` (gloo on CPU,
nccl on GPU), detected from the WORLD_SIZE / RANK environment variables torchrun sets.

Poly learning rate (power 0.9) stepped per iteration, SGD or AdamW, cross-entropy with the
dataset's ignore index and optional median-frequency class weights, random scale / crop / flip /
colour augmentation, AMP on CUDA, per-epoch validation mIoU, ``best.pt`` and ``last.pt``
checkpoints written atomically by rank 0, and ``resume`` from ``last.pt``.

``out`` follows the output-folder rule (edgeseg.out_dir): missing, empty, or an earlier training
run (only ``best.pt`` / ``last.pt`` edgeseg checkpoints), which is replaced; anything else needs
``overwrite``. ``resume`` continues the run already in ``out``.

Starting weights: ``pretrained`` (imagenet | FILE | none) or ``init`` (fine-tuning; see train/init.py),
optionally with the backbone frozen for the first ``freeze_backbone`` epochs. Training data: one or
more dataset specs, each over the ``train_split`` splits ("train+val").

Distributed: SyncBatchNorm with more than one process (``sync_bn``), the logged loss averaged over
ranks, validation on rank 0 broadcast so every rank returns the same ``TrainResult``. ``last.pt``
holds everything a resume needs to continue the same loss curve: optimizer, scheduler, GradScaler,
EMA and RNG state. With ``ema`` an exponential moving average of the weights is evaluated every
epoch and its best saved as ``best_ema.pt``.
"""
from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from edgeseg.data import Preprocessing, TrainAugment
from edgeseg.data.concat import open_datasets
from edgeseg.data.torch_dataset import TorchSegmentation, class_pixel_frequencies, median_frequency_weights
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import make_dirs
from edgeseg.models.checkpoint import Checkpoint, is_checkpoint, load_checkpoint, save_checkpoint
from edgeseg.models.registry import ModelConfig, build_model
from edgeseg.train.ema import ModelEMA
from edgeseg.train.evaluate import evaluate
from edgeseg.train.init import initialise
from edgeseg.train.sync_bn import convert_sync_batchnorm


@dataclass
class TrainConfig:
    model: str
    data: str | list[str]  # one spec or several with the same classes, trained (and validated) together
    out: Path
    epochs: int = 30
    batch_size: int = 8  # per process
    lr: float | None = None  # default: 0.01 for SGD, 1e-3 for AdamW
    optimizer: str = "sgd"
    weight_decay: float = 1e-4
    crop: tuple[int, int] | None = None  # training crop (H, W); default: the input size / frame size
    input_size: tuple[int, int] | None = None  # network input (H, W) at eval/deploy; None = frame size
    scale: tuple[float, float] = (0.5, 2.0)
    class_weights: str = "none"  # none | median
    output_stride: int | None = None
    width: float = 1.0
    separable: bool | None = None
    workers: int = 1
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    amp: bool | None = None  # default: on for CUDA
    val_split: str = "val"  # "none": no validation, best.pt is the last epoch
    train_split: str = "train"  # or several joined by "+", e.g. "train+val"
    pretrained: str = "none"  # imagenet | FILE (classification state_dict) | none
    init: Path | None = None  # edgeseg checkpoint or segmentation state_dict to fine-tune from
    freeze_backbone: int = 0  # epochs with the backbone frozen (weights and BatchNorm statistics)
    sync_bn: bool = True  # SyncBatchNorm when more than one process
    ema: float | None = None  # decay of an exponential moving average of the weights, e.g. 0.999
    max_train_samples: int | None = None  # for smoke tests
    max_val_samples: int | None = None
    overwrite: bool = False  # replace ``out`` even when it holds files that are not an earlier run's


CHECKPOINT_NAMES = ("best.pt", "last.pt", "best_ema.pt")


def _own_train_file(path: Path) -> bool:
    """best.pt / last.pt edgeseg checkpoints, and the temporary files a killed save leaves."""
    if path.name in CHECKPOINT_NAMES:
        return path.is_file() and is_checkpoint(path)
    return path.is_file() and path.name.endswith(".tmp") and path.name.startswith(tuple(f".{n}." for n in CHECKPOINT_NAMES))


def check_train_out(cfg: "TrainConfig") -> Path:
    """The output-folder rule for a training run (``resume`` continues the run in ``out``)."""
    from edgeseg.out_dir import check_out_dir, first_foreign

    if cfg.resume:
        return Path(cfg.out)
    return check_out_dir(cfg.out, lambda out: first_foreign(out, _own_train_file), "edgeseg training run",
                         overwrite=cfg.overwrite)


@dataclass
class TrainResult:
    best_miou: float | None  # None without validation
    best_path: Path
    last_path: Path
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    best_ema_path: Path | None = None
    best_ema_miou: float | None = None


@dataclass
class EpochEnd:
    """What ``on_epoch_end`` sees on every rank after an epoch (checkpoints already written)."""

    epoch: int  # 1-based
    record: dict
    model: nn.Module  # the unwrapped model
    ema: ModelEMA | None
    scaler: torch.amp.GradScaler
    rank: int
    world: int


class _Subset(torch.utils.data.Dataset):
    def __init__(self, ds: torch.utils.data.Dataset, n: int | None) -> None:
        self.ds, self.n = ds, len(ds) if n is None else min(n, len(ds))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.ds[i]


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise EdgesegError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        return torch.device("cuda", local_rank)
    if device != "cpu":
        raise EdgesegError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device("cpu")


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr or 0.01, momentum=0.9, weight_decay=cfg.weight_decay,
                               nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr or 1e-3, weight_decay=cfg.weight_decay)
    raise EdgesegError(f"--optimizer must be sgd or adamw, got {cfg.optimizer!r}")


def poly_schedule(total_iters: int, power: float = 0.9) -> Callable[[int], float]:
    """LR multiplier (1 - it / total) ** power, floored at 0."""
    return lambda it: max(0.0, 1.0 - it / max(1, total_iters)) ** power


def train(cfg: TrainConfig, log: Callable[[str], None] = print,
          progress: Callable[[int, int, float, float], None] | None = None,
          on_epoch_end: Callable[[EpochEnd], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; returns where the checkpoints are and the best val mIoU
    (the same value on every rank).

    ``progress(step, steps_per_epoch, loss, images_per_second)`` is called after every step on rank 0
    (with rank 0's own loss); ``on_epoch_end`` after every epoch on every rank.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(cfg.device, local_rank)
    check_train_out(cfg)  # every rank, before any writes
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    try:
        return _train(cfg, device, world, rank, is_main, log if is_main else (lambda _s: None),
                      progress if is_main else None, on_epoch_end)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _main_first(world: int, is_main: bool, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 first (it may download into a shared cache), then on the other ranks."""
    if world > 1 and not is_main:
        dist.barrier()
    result = fn()
    if world > 1 and is_main:
        dist.barrier()
    return result


def _set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)


def _broadcast_floats(values: list[float | None], world: int) -> list[float | None]:
    """Rank 0's numbers on every rank (None travels as NaN)."""
    if world == 1:
        return values
    t = torch.tensor([float("nan") if v is None else v for v in values], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return [None if v != v else float(v) for v in t.tolist()]


def _mean_over_ranks(total: float, count: int, world: int) -> float:
    if world == 1:
        return total / count
    t = torch.tensor([total, float(count)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0] / t[1])


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _train(cfg: TrainConfig, device: torch.device, world: int, rank: int, is_main: bool,
           log: Callable[[str], None], progress, on_epoch_end) -> TrainResult:
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    if is_main:
        from edgeseg.out_dir import clear_dir

        make_dirs(out)
        if not cfg.resume:  # the rule was checked in train(): what is here may be replaced
            clear_dir(out)
    specs = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)
    validate = cfg.val_split != "none"
    if validate and cfg.val_split in cfg.train_split.split("+"):
        raise EdgesegError(f"--val-split {cfg.val_split} is also a training split ({cfg.train_split}): best.pt would "
                           "be chosen on training data; pick another --val-split or --val-split none (best.pt is "
                           "then the last epoch)")
    train_set = open_datasets(specs, cfg.train_split)
    val_set = open_datasets(specs, cfg.val_split) if validate else None
    if val_set is not None and list(train_set.classes) != list(val_set.classes):
        raise EdgesegError(f"{cfg.train_split} has {train_set.num_classes} classes but {cfg.val_split} has "
                           f"{val_set.num_classes}; give both splits the same classes")
    data_label = " + ".join(specs)
    sample_image, _ = train_set[0]
    frame_size = tuple(int(s) for s in sample_image.shape[:2])
    crop = cfg.crop or cfg.input_size or frame_size
    model_cfg = ModelConfig(cfg.model, train_set.num_classes, cfg.output_stride, cfg.width, cfg.separable).resolved()
    if cfg.batch_size < 2:
        raise EdgesegError(f"--batch-size must be >= 2 per process (BatchNorm needs two samples), got {cfg.batch_size}")
    model = build_model(model_cfg)
    if cfg.freeze_backbone > 0 and not hasattr(model, "backbone"):
        raise EdgesegError(f"{cfg.model} has no separate backbone to freeze; drop --freeze-backbone")

    last_path, best_path, best_ema_path = out / "last.pt", out / "best.pt", out / "best_ema.pt"
    resume_from = load_checkpoint(last_path) if cfg.resume else None
    if resume_from is not None:
        if resume_from.train_state is None:
            raise EdgesegError(f"{last_path} holds weights but no training state (optimizer, epoch, scaler), so there "
                               "is nothing to resume; start a new run from it with --init and a new --out")
        if resume_from.config != model_cfg:
            raise EdgesegError(f"{last_path} was trained as {resume_from.config} but this run is {model_cfg}; "
                               "use the same --model/--data options or a new --out")
        model.load_state_dict(resume_from.state_dict)
        preprocessing = resume_from.preprocessing
    else:
        norm = _main_first(world, is_main, lambda: initialise(model, model_cfg, cfg.pretrained, cfg.init, log))
        preprocessing = norm.preprocessing(cfg.input_size) if norm else Preprocessing(size=cfg.input_size)

    augment = TrainAugment(crop=crop, scale=cfg.scale, resize=preprocessing.resize)
    # channels_last roughly doubles CPU training speed for these convnets (measured: 6.4 -> 13.2 img/s)
    model = model.to(device, memory_format=torch.channels_last)
    sync_bn = world > 1 and cfg.sync_bn
    if sync_bn:
        model = convert_sync_batchnorm(model, device)

    weight = None
    if cfg.class_weights == "median":
        weight = torch.tensor(median_frequency_weights(class_pixel_frequencies(train_set)), dtype=torch.float32)
        log("class weights (median frequency): " + " ".join(f"{w:.2f}" for w in weight.tolist()))
    elif cfg.class_weights != "none":
        raise EdgesegError(f"--class-weights must be none or median, got {cfg.class_weights!r}")
    criterion = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None,
                                    ignore_index=train_set.ignore_index)

    torch_train = TorchSegmentation(train_set, preprocessing, augment, seed=cfg.seed)
    train_data = _Subset(torch_train, cfg.max_train_samples)
    # epoch-seeded shuffling in every case, so a resumed run sees the same batches as an uninterrupted one
    sampler = DistributedSampler(train_data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=False, sampler=sampler,
                        drop_last=True, num_workers=cfg.workers, generator=generator,
                        persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise EdgesegError(f"{len(train_data)} training images give no full batch of {cfg.batch_size} per process; "
                           "lower --batch-size")
    optimizer = _make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(cfg.epochs * steps_per_epoch))
    use_amp = device.type == "cuda" and (cfg.amp is None or cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ema = ModelEMA(model, cfg.ema) if cfg.ema is not None else None

    start_epoch, best_miou, best_ema_miou, history = 0, None, None, []
    if resume_from is not None:
        ts = resume_from.train_state
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        if use_amp and ts.get("scaler"):
            scaler.load_state_dict(ts["scaler"])
        if ema is not None and ts.get("ema"):
            ema.load_state_dict(ts["ema"])
        elif ema is not None:
            log(f"{last_path} has no EMA state: the EMA starts from the resumed weights")
        if "rng" in ts:
            _set_rng_state(ts["rng"], device)
        start_epoch = int(ts["epoch"]) + 1
        best_miou = ts.get("best_miou")
        best_miou = None if best_miou is None or best_miou < 0 else float(best_miou)  # < 0: older "none yet"
        best_ema_miou = ts.get("best_ema_miou")
        history = list(ts.get("history", []))
        log(f"resumed from {last_path} at epoch {start_epoch + 1}"
            + (f" (GradScaler scale {scaler.get_scale():g})" if use_amp else ""))

    def snapshot(weights: dict, meta: dict, train_state: dict | None) -> Checkpoint:
        return Checkpoint(config=model_cfg, state_dict=weights, classes=train_set.classes,
                          palette=[list(c) for c in train_set.palette], preprocessing=preprocessing,
                          meta=meta, train_state=train_state)

    def wrap(frozen: bool) -> nn.Module:
        if cfg.freeze_backbone > 0:
            _set_backbone_frozen(model, frozen)
        if world == 1:
            return model
        # with SyncBatchNorm the statistics agree by construction; without it rank 0's are broadcast
        ddp = nn.parallel.DistributedDataParallel
        buffers = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters \
            else "broadcast_buffers"  # torch < 2.14 names it broadcast_buffers
        return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **{buffers: not sync_bn})

    backend = dist.get_backend() if world > 1 else "none"
    log(f"training {model_cfg.name} on {len(train_data)} {data_label} {cfg.train_split} images, {steps_per_epoch} "
        f"steps/epoch, {world} process(es) (distributed backend: {backend}"
        f"{', SyncBatchNorm' if sync_bn else ''}), device {device}")
    t_start = time.time()
    net, net_frozen = None, None
    for epoch in range(start_epoch, cfg.epochs):
        frozen = epoch < cfg.freeze_backbone
        if net is None or frozen != net_frozen:
            net = None  # release the previous DistributedDataParallel (its gradient hooks) before re-wrapping
            net, net_frozen = wrap(frozen), frozen
            if cfg.freeze_backbone > 0:
                log(f"epoch {epoch + 1}: backbone {'frozen' if frozen else 'trained'}")
        net.train()
        if frozen:
            model.backbone.eval()  # frozen BatchNorm statistics too
        torch_train.set_epoch(epoch)
        sampler.set_epoch(epoch)
        t_epoch, seen, loss_sum = time.time(), 0, 0.0
        for step, (images, masks) in enumerate(loader):
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            masks = masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = criterion(net(images), masks)
            if not torch.isfinite(loss):
                raise EdgesegError(f"training loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; "
                                   "lower --lr or check the labels")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update()
            seen += images.shape[0]
            loss_sum += loss.item()
            if progress is not None:
                progress(step + 1, steps_per_epoch, loss.item(), seen * world / max(1e-9, time.time() - t_epoch))
        train_loss = _mean_over_ranks(loss_sum, steps_per_epoch, world)
        rng = _rng_state(device)  # before validation, which runs on rank 0 only

        miou = pixel_acc = ema_miou = None
        if is_main and val_set is not None:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                cm = evaluate(model, val_set, preprocessing, device=device, limit=cfg.max_val_samples)
                miou, pixel_acc = cm.miou(), cm.pixel_accuracy()
                if ema is not None:
                    ema_miou = evaluate(ema.module, val_set, preprocessing, device=device,
                                        limit=cfg.max_val_samples).miou()
        miou, pixel_acc, ema_miou, seconds = _broadcast_floats(
            [miou, pixel_acc, ema_miou, round(time.time() - t_epoch, 1)], world)
        record = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "steps": steps_per_epoch,
                  "world_size": world, "train_seconds": seconds}
        if validate:
            record.update(val_miou=round(miou, 3), val_pixel_acc=round(pixel_acc, 3))
            if ema is not None:
                record["ema_val_miou"] = round(ema_miou, 3)
        history.append(record)
        improved = not validate or best_miou is None or miou > best_miou
        best_miou = miou if improved else best_miou
        ema_improved = ema is not None and (not validate or best_ema_miou is None or ema_miou > best_ema_miou)
        best_ema_miou = ema_miou if ema_improved else best_ema_miou
        if is_main:
            meta = {"epoch": epoch + 1, "val_miou": miou, "val_split": cfg.val_split, "dataset": data_label,
                    "train_split": cfg.train_split,
                    "train_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}}
            if improved:
                save_checkpoint(best_path, snapshot(model.state_dict(), meta, None))
            if ema_improved:
                save_checkpoint(best_ema_path, snapshot(ema.module.state_dict(), dict(meta, val_miou=ema_miou,
                                                                                      ema_decay=cfg.ema), None))
            save_checkpoint(last_path, snapshot(model.state_dict(), meta, {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                "best_miou": best_miou, "best_ema_miou": best_ema_miou, "history": history,
                "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None, "rng": rng}))
            scores = (f"val mIoU {miou:.2f}  pixel acc {pixel_acc:.2f}  best {best_miou:.2f}"
                      + (f"  EMA mIoU {ema_miou:.2f}" if ema is not None else "")) if validate else "no validation"
            log(f"epoch {epoch + 1}/{cfg.epochs}  loss {train_loss:.4f} (mean over {world} process(es))  {scores}  "
                f"({seconds:.0f}s train)")
        if world > 1:
            dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch + 1, record, model, ema, scaler, rank, world))
    (seconds,) = _broadcast_floats([time.time() - t_start], world)
    return TrainResult(best_miou=best_miou, best_path=best_path, last_path=last_path,
                       epochs_run=cfg.epochs - start_epoch, seconds=seconds, history=history,
                       best_ema_path=best_ema_path if ema is not None else None, best_ema_miou=best_ema_miou)
