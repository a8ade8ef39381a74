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

What a run is asked to do: ``TrainConfig`` (edgeseg.train.config). ``_train`` reads as the run's
outline: set up, restore a resumed run, then per epoch train, validate, save.
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
from edgeseg.train.config import CLASS_WEIGHTS, OPTIMIZERS, TrainConfig
from edgeseg.train.ema import ModelEMA
from edgeseg.train.evaluate import evaluate
from edgeseg.train.init import initialise
from edgeseg.train.sync_bn import convert_sync_batchnorm

CHECKPOINT_NAMES = ("best.pt", "last.pt", "best_ema.pt")


def _own_train_file(path: Path) -> bool:
    """best.pt / last.pt edgeseg checkpoints, and the temporary files a killed save leaves."""
    if path.name in CHECKPOINT_NAMES:
        return path.is_file() and is_checkpoint(path)
    return path.is_file() and path.name.endswith(".tmp") and path.name.startswith(tuple(f".{n}." for n in CHECKPOINT_NAMES))


def check_train_out(cfg: "TrainConfig") -> Path:
    """Before anything is written: the run has epochs to do, and the output-folder rule holds (``resume``
    continues the run in ``out``; otherwise no input lies inside the ``out`` it replaces)."""
    from edgeseg.out_dir import check_inputs_outside, check_out_dir, first_foreign, spec_path

    for flag, value in (("--epochs", cfg.epochs), ("--max-train-samples", cfg.max_train_samples),
                        ("--max-val-samples", cfg.max_val_samples)):
        if value is not None and value < 1:
            raise EdgesegError(f"{flag} must be >= 1, got {value}; a run with nothing to train or validate would "
                               "report checkpoints or scores it never made")
    if cfg.resume:
        return Path(cfg.out)
    pretrained = cfg.pretrained if cfg.pretrained not in ("none", "imagenet") else None
    check_inputs_outside(cfg.out, {"--init": cfg.init, "--pretrained": pretrained,
                                   **{f"--data {spec}": spec_path(spec) for spec in cfg.specs}})
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
    raise EdgesegError(f"--optimizer must be {' or '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")


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


@dataclass
class _Run:
    """What one process of a training run works with, set up once (``_setup``)."""

    cfg: TrainConfig
    device: torch.device
    world: int
    rank: int
    log: Callable[[str], None]  # rank 0's log; a no-op elsewhere
    progress: Callable[[int, int, float, float], None] | None  # rank 0 only
    out: Path
    train_set: Any  # the Dataset(s) as opened (classes, palette, ignore index)
    val_set: Any | None  # None: no validation
    model_cfg: ModelConfig
    model: nn.Module  # the unwrapped model (SyncBatchNorm with several processes)
    preprocessing: Preprocessing
    resume_from: Checkpoint | None
    criterion: nn.Module
    torch_train: TorchSegmentation
    sampler: DistributedSampler
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool  # float16 autocast and a live GradScaler (CUDA)
    ema: ModelEMA | None
    net: nn.Module | None = None  # the model as trained this epoch (DistributedDataParallel with several processes)
    net_frozen: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sync_bn(self) -> bool:
        return self.world > 1 and self.cfg.sync_bn

    @property
    def data_label(self) -> str:
        return " + ".join(self.cfg.specs)

    def path(self, name: str) -> Path:
        """``out/NAME`` for NAME in CHECKPOINT_NAMES."""
        return self.out / name


@dataclass
class _Scores:
    """What carries from epoch to epoch, and what a resume restores."""

    start_epoch: int = 0
    best_miou: float | None = None
    best_ema_miou: float | None = None
    history: list[dict] = field(default_factory=list)


def _train(cfg: TrainConfig, device: torch.device, world: int, rank: int, is_main: bool,
           log: Callable[[str], None], progress, on_epoch_end) -> TrainResult:
    torch.manual_seed(cfg.seed)
    run = _setup(cfg, device, world, rank, log, progress, Path(cfg.out))  # every argument checked: then write
    scores = _restore(run) if run.resume_from is not None else _Scores()
    _prepare_out(cfg, is_main)
    backend = dist.get_backend() if world > 1 else "none"
    log(f"training {run.model_cfg.name} on {len(run.loader.dataset)} {run.data_label} {cfg.train_split} images, "
        f"{len(run.loader)} steps/epoch, {world} process(es) (distributed backend: {backend}"
        f"{', SyncBatchNorm' if run.sync_bn else ''}), device {device}")
    t_start = time.time()
    for epoch in range(scores.start_epoch, cfg.epochs):
        train_loss, t_epoch = _train_epoch(run, epoch)
        rng = _rng_state(device)  # before validation, which runs on rank 0 only
        miou, pixel_acc, ema_miou, seconds = _broadcast_floats([*_validate(run), round(time.time() - t_epoch, 1)],
                                                               world)
        record = _epoch_record(run, epoch, train_loss, seconds, miou, pixel_acc, ema_miou)
        scores.history.append(record)
        improved, ema_improved = _update_best(run, scores, miou, ema_miou)
        if is_main:
            _save(run, scores, epoch, miou, ema_miou, rng, improved, ema_improved)
            _log_epoch(run, scores, epoch, train_loss, seconds, miou, pixel_acc, ema_miou)
        if world > 1:
            dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch + 1, record, run.model, run.ema, run.scaler, rank, world))
    (seconds,) = _broadcast_floats([time.time() - t_start], world)
    return TrainResult(best_miou=scores.best_miou, best_path=run.path("best.pt"), last_path=run.path("last.pt"),
                       epochs_run=cfg.epochs - scores.start_epoch, seconds=seconds, history=scores.history,
                       best_ema_path=run.path("best_ema.pt") if run.ema is not None else None,
                       best_ema_miou=scores.best_ema_miou)


# ----------------------------------------------------------------------------- setup

def _prepare_out(cfg: TrainConfig, is_main: bool) -> Path:
    """``cfg.out``, created and (unless resuming) emptied by rank 0: the rule was checked in train(), the
    other arguments by ``_setup``; nothing is written before this."""
    out = Path(cfg.out)
    if is_main:
        from edgeseg.out_dir import clear_dir

        make_dirs(out)
        if not cfg.resume:
            clear_dir(out)
    return out


def _open_data(cfg: TrainConfig):
    """(training set, validation set or None), with the same classes, never validating on training data."""
    if cfg.validates and cfg.val_split in cfg.train_split.split("+"):
        raise EdgesegError(f"--val-split {cfg.val_split} is also a training split ({cfg.train_split}): best.pt would "
                           "be chosen on training data; pick another --val-split or --val-split none (best.pt is "
                           "then the last epoch)")
    train_set = open_datasets(cfg.specs, cfg.train_split)
    val_set = open_datasets(cfg.specs, cfg.val_split) if cfg.validates else None
    if val_set is not None and list(train_set.classes) != list(val_set.classes):
        raise EdgesegError(f"{cfg.train_split} has {train_set.num_classes} classes but {cfg.val_split} has "
                           f"{val_set.num_classes}; give both splits the same classes")
    return train_set, val_set


def _build_model(cfg: TrainConfig, num_classes: int) -> tuple[ModelConfig, nn.Module]:
    model_cfg = ModelConfig(cfg.model, num_classes, cfg.output_stride, cfg.width, cfg.separable).resolved()
    if cfg.batch_size < 2:
        raise EdgesegError(f"--batch-size must be >= 2 per process (BatchNorm needs two samples), got {cfg.batch_size}")
    model = build_model(model_cfg)
    if cfg.freeze_backbone > 0 and not hasattr(model, "backbone"):
        raise EdgesegError(f"{cfg.model} has no separate backbone to freeze; drop --freeze-backbone")
    return model_cfg, model


def _resume_checkpoint(last_path: Path, model_cfg: ModelConfig) -> Checkpoint:
    """``last.pt`` of the run being resumed, checked to hold a training state for this very model."""
    ckpt = load_checkpoint(last_path)
    if ckpt.train_state is None:
        raise EdgesegError(f"{last_path} holds weights but no training state (optimizer, epoch, scaler), so there "
                           "is nothing to resume; start a new run from it with --init and a new --out")
    if ckpt.config != model_cfg:
        raise EdgesegError(f"{last_path} was trained as {ckpt.config} but this run is {model_cfg}; "
                           "use the same --model/--data options or a new --out")
    return ckpt


def _starting_weights(cfg: TrainConfig, model: nn.Module, model_cfg: ModelConfig, resume_from: Checkpoint | None,
                      world: int, is_main: bool, log: Callable[[str], None]) -> Preprocessing:
    """Load the resumed or initial weights into ``model``; the preprocessing they go with."""
    if resume_from is not None:
        model.load_state_dict(resume_from.state_dict)
        return resume_from.preprocessing
    norm = _main_first(world, is_main, lambda: initialise(model, model_cfg, cfg.pretrained, cfg.init, log))
    return norm.preprocessing(cfg.input_size) if norm else Preprocessing(size=cfg.input_size)


def _criterion(cfg: TrainConfig, train_set, device: torch.device, log: Callable[[str], None]) -> nn.Module:
    """Cross-entropy with the dataset's ignore index, optionally median-frequency class weights."""
    if cfg.class_weights not in CLASS_WEIGHTS:
        raise EdgesegError(f"--class-weights must be {' or '.join(CLASS_WEIGHTS)}, got {cfg.class_weights!r}")
    weight = None
    if cfg.class_weights == "median":
        weight = torch.tensor(median_frequency_weights(class_pixel_frequencies(train_set)), dtype=torch.float32)
        log("class weights (median frequency): " + " ".join(f"{w:.2f}" for w in weight.tolist()))
    return nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None,
                               ignore_index=train_set.ignore_index)


def _loader(cfg: TrainConfig, torch_train: TorchSegmentation, device: torch.device, world: int,
            rank: int) -> tuple[DistributedSampler, DataLoader]:
    """Epoch-seeded shuffling in every case, so a resumed run sees the same batches as an uninterrupted one."""
    train_data = _Subset(torch_train, cfg.max_train_samples)
    sampler = DistributedSampler(train_data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=False, sampler=sampler,
                        drop_last=True, num_workers=cfg.workers, generator=generator,
                        persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise EdgesegError(f"{len(train_data)} training images give no full batch of {cfg.batch_size} per process; "
                           "lower --batch-size")
    return sampler, loader


def _setup(cfg: TrainConfig, device: torch.device, world: int, rank: int, log: Callable[[str], None],
           progress, out: Path) -> _Run:
    """Data, model, starting weights, loss, loader and optimizer, in this order (the random streams depend on it)."""
    train_set, val_set = _open_data(cfg)
    sample_image, _ = train_set[0]
    frame_size = tuple(int(s) for s in sample_image.shape[:2])
    model_cfg, model = _build_model(cfg, train_set.num_classes)
    resume_from = _resume_checkpoint(out / "last.pt", model_cfg) if cfg.resume else None
    preprocessing = _starting_weights(cfg, model, model_cfg, resume_from, world, rank == 0, log)
    augment = TrainAugment(crop=cfg.crop or cfg.input_size or frame_size, scale=cfg.scale,
                           resize=preprocessing.resize)
    # channels_last roughly doubles CPU training speed for these convnets (measured: 6.4 -> 13.2 img/s)
    model = model.to(device, memory_format=torch.channels_last)
    if world > 1 and cfg.sync_bn:
        model = convert_sync_batchnorm(model, device)
    criterion = _criterion(cfg, train_set, device, log)
    torch_train = TorchSegmentation(train_set, preprocessing, augment, seed=cfg.seed)
    sampler, loader = _loader(cfg, torch_train, device, world, rank)
    optimizer = _make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(cfg.epochs * len(loader)))
    use_amp = device.type == "cuda" and (cfg.amp is None or cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ema = ModelEMA(model, cfg.ema) if cfg.ema is not None else None
    return _Run(cfg, device, world, rank, log, progress, out, train_set, val_set, model_cfg, model, preprocessing,
                resume_from, criterion, torch_train, sampler, loader, optimizer, scheduler, scaler, use_amp, ema)


# ----------------------------------------------------------------------------- resume

def _restore(run: _Run) -> _Scores:
    """Optimizer, scheduler, GradScaler, EMA and RNG state from the resumed ``last.pt``; where to go on from."""
    ts, last_path = run.resume_from.train_state, run.path("last.pt")
    run.optimizer.load_state_dict(ts["optimizer"])
    run.scheduler.load_state_dict(ts["scheduler"])
    if run.use_amp and ts.get("scaler"):
        run.scaler.load_state_dict(ts["scaler"])
    if run.ema is not None and ts.get("ema"):
        run.ema.load_state_dict(ts["ema"])
    elif run.ema is not None:
        run.log(f"{last_path} has no EMA state: the EMA starts from the resumed weights")
    if "rng" in ts:
        _set_rng_state(ts["rng"], run.device)
    best_miou = ts.get("best_miou")
    scores = _Scores(start_epoch=int(ts["epoch"]) + 1,
                     best_miou=None if best_miou is None or best_miou < 0 else float(best_miou),  # < 0: older "none"
                     best_ema_miou=ts.get("best_ema_miou"), history=list(ts.get("history", [])))
    if scores.start_epoch >= run.cfg.epochs:
        raise EdgesegError(f"{last_path} already finished epoch {scores.start_epoch} and --epochs is {run.cfg.epochs}, "
                           f"so there is nothing left to train; pass --epochs above {scores.start_epoch} to go on")
    run.log(f"resumed from {last_path} at epoch {scores.start_epoch + 1}"
            + (f" (GradScaler scale {run.scaler.get_scale():g})" if run.use_amp else ""))
    return scores


# ----------------------------------------------------------------------------- one epoch

def _wrap(run: _Run, frozen: bool) -> nn.Module:
    """The model as this epoch trains it: backbone frozen or not, in DistributedDataParallel with several processes."""
    if run.cfg.freeze_backbone > 0:
        _set_backbone_frozen(run.model, frozen)
    if run.world == 1:
        return run.model
    # with SyncBatchNorm the statistics agree by construction; without it rank 0's are broadcast
    ddp = nn.parallel.DistributedDataParallel
    buffers = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters \
        else "broadcast_buffers"  # torch < 2.14 names it broadcast_buffers
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    return ddp(run.model, device_ids=device_ids, **{buffers: not run.sync_bn})


def _net_for_epoch(run: _Run, epoch: int) -> nn.Module:
    """``run.net``, wrapped again when the backbone freezes or thaws."""
    frozen = epoch < run.cfg.freeze_backbone
    if run.net is None or frozen != run.net_frozen:
        run.net = None  # release the previous DistributedDataParallel (its gradient hooks) before re-wrapping
        run.net, run.net_frozen = _wrap(run, frozen), frozen
        if run.cfg.freeze_backbone > 0:
            run.log(f"epoch {epoch + 1}: backbone {'frozen' if frozen else 'trained'}")
    return run.net


def _train_epoch(run: _Run, epoch: int) -> tuple[float, float]:
    """One pass over the loader: (training loss averaged over steps and processes, the time.time() it started)."""
    net = _net_for_epoch(run, epoch)
    net.train()
    if run.net_frozen:
        run.model.backbone.eval()  # frozen BatchNorm statistics too
    run.torch_train.set_epoch(epoch)
    run.sampler.set_epoch(epoch)
    t_epoch, steps, seen, loss_sum = time.time(), len(run.loader), 0, 0.0
    for step, (images, masks) in enumerate(run.loader):
        loss = _step(run, net, images, masks, epoch, step)
        seen += images.shape[0]
        loss_sum += loss
        if run.progress is not None:
            run.progress(step + 1, steps, loss, seen * run.world / max(1e-9, time.time() - t_epoch))
    return _mean_over_ranks(loss_sum, steps, run.world), t_epoch


def _step(run: _Run, net: nn.Module, images: torch.Tensor, masks: torch.Tensor, epoch: int, step: int) -> float:
    """One optimizer step (AMP on CUDA, poly LR, EMA update); the batch's loss."""
    images = images.to(run.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    masks = masks.to(run.device, non_blocking=True)
    with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.use_amp):
        loss = run.criterion(net(images), masks)
    if not torch.isfinite(loss):
        raise EdgesegError(f"training loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; "
                           "lower --lr or check the labels")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update()
    return loss.item()


# ----------------------------------------------------------------------------- validate and save

def _validate(run: _Run) -> tuple[float | None, float | None, float | None]:
    """(mIoU, pixel accuracy, EMA mIoU) on the validation set, on rank 0 (None elsewhere, or without validation);
    the random streams are left as they were."""
    if not run.is_main or run.val_set is None:
        return None, None, None
    limit, ema_miou = run.cfg.max_val_samples, None
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        cm = evaluate(run.model, run.val_set, run.preprocessing, device=run.device, limit=limit)
        if run.ema is not None:
            ema_miou = evaluate(run.ema.module, run.val_set, run.preprocessing, device=run.device, limit=limit).miou()
    return cm.miou(), cm.pixel_accuracy(), ema_miou


def _epoch_record(run: _Run, epoch: int, train_loss: float, seconds: float, miou: float | None,
                  pixel_acc: float | None, ema_miou: float | None) -> dict:
    record = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "steps": len(run.loader),
              "world_size": run.world, "train_seconds": seconds}
    if run.cfg.validates:
        record.update(val_miou=round(miou, 3), val_pixel_acc=round(pixel_acc, 3))
        if run.ema is not None:
            record["ema_val_miou"] = round(ema_miou, 3)
    return record


def _update_best(run: _Run, scores: _Scores, miou: float | None, ema_miou: float | None) -> tuple[bool, bool]:
    """Whether the model and the EMA improved (always, without validation); the bests updated."""
    validate = run.cfg.validates
    improved = not validate or scores.best_miou is None or miou > scores.best_miou
    scores.best_miou = miou if improved else scores.best_miou
    ema_improved = run.ema is not None and (not validate or scores.best_ema_miou is None
                                            or ema_miou > scores.best_ema_miou)
    scores.best_ema_miou = ema_miou if ema_improved else scores.best_ema_miou
    return improved, ema_improved


def _snapshot(run: _Run, weights: dict, meta: dict, train_state: dict | None) -> Checkpoint:
    return Checkpoint(config=run.model_cfg, state_dict=weights, classes=run.train_set.classes,
                      palette=[list(c) for c in run.train_set.palette], preprocessing=run.preprocessing,
                      meta=meta, train_state=train_state)


def _save(run: _Run, scores: _Scores, epoch: int, miou: float | None, ema_miou: float | None,
          rng: dict[str, torch.Tensor], improved: bool, ema_improved: bool) -> None:
    """best.pt and best_ema.pt when they improved, and last.pt with everything a resume needs (rank 0)."""
    cfg = run.cfg
    meta = {"epoch": epoch + 1, "val_miou": miou, "val_split": cfg.val_split, "dataset": run.data_label,
            "train_split": cfg.train_split,
            "train_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}}
    if improved:
        save_checkpoint(run.path("best.pt"), _snapshot(run, run.model.state_dict(), meta, None))
    if ema_improved:
        save_checkpoint(run.path("best_ema.pt"), _snapshot(run, run.ema.module.state_dict(),
                                                           dict(meta, val_miou=ema_miou, ema_decay=cfg.ema), None))
    save_checkpoint(run.path("last.pt"), _snapshot(run, run.model.state_dict(), meta, {
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "epoch": epoch,
        "best_miou": scores.best_miou, "best_ema_miou": scores.best_ema_miou, "history": scores.history,
        "scaler": run.scaler.state_dict(), "ema": run.ema.state_dict() if run.ema is not None else None, "rng": rng}))


def _log_epoch(run: _Run, scores: _Scores, epoch: int, train_loss: float, seconds: float, miou: float | None,
               pixel_acc: float | None, ema_miou: float | None) -> None:
    scores_text = (f"val mIoU {miou:.2f}  pixel acc {pixel_acc:.2f}  best {scores.best_miou:.2f}"
                   + (f"  EMA mIoU {ema_miou:.2f}" if run.ema is not None else "")) if run.cfg.validates \
        else "no validation"
    run.log(f"epoch {epoch + 1}/{run.cfg.epochs}  loss {train_loss:.4f} (mean over {run.world} process(es))  "
            f"{scores_text}  ({seconds:.0f}s train)")
