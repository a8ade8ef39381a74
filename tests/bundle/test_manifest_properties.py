"""Issue 21, point 6: mutated bundle manifests and calibration manifests are either refused in one line
(EdgesegError, no newline) or give identical masks (bundles: edgeseg.load's class maps of fixed frames
and the class names and colours they mean; calibration
sets: the same calibration inputs, so the same statistics and the same INT8 model). Any other
exception, or a mask that differs, fails. Example counts are small and derandomized (CI-stable). Floats are
drawn without subnormals: OpenVINO and ONNX Runtime set flush-to-zero in this process, which hypothesis
refuses to generate under."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeseg.data import Preprocessing
from edgeseg.errors import EdgesegError

SETTINGS = dict(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SPEC = "synthetic:64x96"
PRE = Preprocessing(size=(64, 96))

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300)
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)
    | st.text(max_size=6) | st.sampled_from(["\n", "a\nb", "model.onnx", "../x", "BGR", "int8", "fp16", "f16"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=5)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every node of a JSON value as a key path (the root excluded)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out = []
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


def _tweak(value: Any, data) -> Any:
    """A small edit of ``value`` of its own type (what a careless hand makes)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + data.draw(st.sampled_from([1, -1, 1e-6, 0.5, -value, 255]))
    if isinstance(value, str):
        return data.draw(st.sampled_from([value + "\n", value.upper(), "", value[::-1], value + " ", value[:-1]]))
    if isinstance(value, list):
        return data.draw(st.sampled_from([value[::-1], value[:-1], value + value[:1], []]))
    return {}


def mutate(doc: dict, data) -> dict:
    """``doc`` with one to two edits: a node replaced by any JSON value, tweaked, deleted, or a key added.
    A top-level key is drawn first so every section is hit, then a node under it."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 2))):
        top = data.draw(st.sampled_from(sorted(doc)))
        path = data.draw(st.sampled_from([(top,), *_paths(doc[top], (top,))]))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = data.draw(st.sampled_from(["replace", "tweak", "delete", "add"]))
        if op == "replace":
            parent[key] = data.draw(JSON_VALUES)
        elif op == "tweak":
            parent[key] = _tweak(parent[key], data)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][data.draw(st.text(max_size=4))] = data.draw(JSON_VALUES)
    return doc


def _refused_in_one_line(error: EdgesegError) -> None:
    assert "\n" not in str(error), repr(str(error))


# ----------------------------------------------------------------------------- bundle manifests

@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(21)
    return [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)]


@pytest.fixture(scope="module")
def bundle_case(tiny_dynamic_bundle: Path, frames, tmp_path_factory) -> tuple[Path, dict, list[np.ndarray]]:
    """(a working copy of the tiny bundle, its manifest, its masks on ``frames``)."""
    import edgeseg

    root = tmp_path_factory.mktemp("mutated") / "bundle"
    shutil.copytree(tiny_dynamic_bundle, root)
    seg = edgeseg.load(root)
    result = _segment(seg, frames)
    seg.close()
    return root, json.loads((root / "manifest.json").read_text()), result


def _segment(seg, frames: list[np.ndarray]) -> tuple:
    """What a bundle gives a camera pipeline: the class maps of ``frames`` and the names and colours they mean."""
    return [seg(f) for f in frames], seg.classes, seg.palette


def _masks_or_refusal(root: Path, frames: list[np.ndarray], text: bytes) -> tuple | None:
    import edgeseg

    (root / "manifest.json").write_bytes(text)
    try:
        seg = edgeseg.load(root)
        try:
            return _segment(seg, frames)
        finally:
            seg.close()
    except EdgesegError as e:
        _refused_in_one_line(e)
        return None


def _same(got: tuple, want: tuple) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(got[0], want[0])) and got[1:] == want[1:]


@settings(**SETTINGS)
@given(data=st.data())
def test_a_mutated_bundle_manifest_is_refused_or_changes_no_mask(bundle_case, frames, data) -> None:
    root, manifest, masks = bundle_case
    mutated = mutate(manifest, data)
    got = _masks_or_refusal(root, frames, json.dumps(mutated).encode())
    assert got is None or _same(got, masks), f"accepted and changed the masks: {json.dumps(mutated)[:400]}"


@settings(**SETTINGS)
@given(cut=st.integers(0, 1000), byte=st.binary(min_size=1, max_size=2), depth=st.integers(0, 2000))
def test_a_broken_bundle_manifest_file_is_refused_or_changes_no_mask(bundle_case, frames, cut, byte, depth) -> None:
    root, manifest, masks = bundle_case
    text = json.dumps(manifest, indent=1).encode()
    at = cut * len(text) // 1000
    for broken in (text[:at], text[:at] + byte + text[at:], b"[" * depth + b"1" + b"]" * depth,
                   text.replace(b'"build": {', b'"build": ' + b"[" * depth + b"{", 1)):
        got = _masks_or_refusal(root, frames, broken)
        assert got is None or _same(got, masks), broken[:200]


# ----------------------------------------------------------------------------- calibration manifests

@pytest.fixture(scope="module", params=["generated", "folder"])
def calibration_case(request, tmp_path_factory) -> tuple[Path, dict, list[np.ndarray]]:
    """(a calibration manifest file, its JSON, the calibration inputs it gives): a generated set (images by
    index) and a folder of images (by relative path under a root)."""
    from PIL import Image

    from edgeseg.quantize.calib_set import (iter_calibration_inputs, load_manifest, manifest_from_dataset,
                                            manifest_from_folder)

    work = tmp_path_factory.mktemp(f"calib-{request.param}")
    if request.param == "generated":
        manifest = manifest_from_dataset(SPEC, "train", 3, PRE)
    else:
        rng = np.random.default_rng(5)
        for i in range(4):
            (work / "images" / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
            Image.fromarray(image).save(work / "images" / f"d{i % 2}" / f"{i}.png")
        shutil.copytree(work / "images", work / "same-files-elsewhere")
        manifest = manifest_from_folder(work / "images", 3, PRE)
    path = manifest.save(work / "calib.json")
    inputs = list(iter_calibration_inputs(load_manifest(path), PRE))
    return path, json.loads(path.read_text()), inputs


@settings(**SETTINGS)
@given(data=st.data())
def test_a_mutated_calibration_manifest_is_refused_or_calibrates_the_same(calibration_case, data) -> None:
    from edgeseg.quantize.calib_set import iter_calibration_inputs, load_manifest

    path, doc, inputs = calibration_case
    mutated = mutate(doc, data)
    path.write_text(json.dumps(mutated))
    try:
        got = list(iter_calibration_inputs(load_manifest(path), PRE))
    except EdgesegError as e:
        _refused_in_one_line(e)
        return
    assert len(got) == len(inputs) and all(np.array_equal(a, b) for a, b in zip(got, inputs)), \
        f"accepted and changed the calibration inputs: {json.dumps(mutated)[:400]}"


def test_calibration_manifests_refuse_the_edits_that_would_change_the_set(calibration_case) -> None:
    """The examples behind the property: removing, reordering or re-hashing images, a wrong count, wrong
    types, invalid UTF-8, deep nesting: each refused in one line naming what is wrong."""
    from edgeseg.quantize.calib_set import load_manifest

    path, doc, _ = calibration_case
    edits = {
        "count": (lambda d: d["images"].pop(), "'count' is 3 but the file lists 2 images"),
        "reorder": (lambda d: d["images"].reverse(), "'sha256' is"),
        "sha": (lambda d: d["images"][0].update(sha256="0" * 64), "'sha256' is"),
        "types": (lambda d: d.update(images="abc"), "'images' must be a non-empty list"),
        "entry": (lambda d: d["images"].__setitem__(0, 5), "images[0] must be"),
        "preprocessing": (lambda d: d.update(preprocessing=[]), "'preprocessing' must be an object"),
        "version": (lambda d: d.update(version="1"), "'version' must be a positive integer"),
        "missing": (lambda d: d.pop("source"), "'source' must be"),
    }
    for name, (edit, message) in edits.items():
        d = copy.deepcopy(doc)
        edit(d)
        path.write_text(json.dumps(d))
        with pytest.raises(EdgesegError, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
            load_manifest(path)
        _refused_in_one_line(e.value)
    for raw, message in ((b'{"format": "edgeseg.calibration", "x": "\xff"}', "is not UTF-8"),
                         (b"[" * 5000 + b"]" * 5000, "deeper than 32 levels"), (b'{"format": ', "not valid JSON")):
        path.write_bytes(raw)
        with pytest.raises(EdgesegError, match=message):
            load_manifest(path)
    path.write_text(json.dumps(doc))
