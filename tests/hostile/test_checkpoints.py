"""A crafted checkpoint is refused in one line: huge sizes, weights that do not fit, labels that would
write escape sequences to a terminal, and a local file that would shadow a shipped model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcrn.models import DCRN, DCRNConfig, load_checkpoint, save_checkpoint
from dcrn.models.checkpoint import FORMAT, VERSION, resolve_model, shipped_models
from dcrn.models.errors import BadCheckpoint

SMALL = {"num_classes": 2, "labels": ["a", "b"], "encoder_widths": [8], "hidden_size": 8, "input_size": 32}


def small_model() -> DCRN:
    return DCRN(DCRNConfig(**{**SMALL, "labels": tuple(SMALL["labels"]), "encoder_widths": (8,)})).eval()


def write_crafted(path: Path, config: dict, state_dict: dict | None = None, **extra) -> Path:
    """A checkpoint with ``config`` as written (not validated) and the small model's weights by default."""
    weights = small_model().state_dict() if state_dict is None else state_dict
    torch.save({"format": FORMAT, "version": VERSION, "config": config, "state_dict": weights, **extra}, path)
    return path


# A checkpoint that asks for a huge model is loaded in a child process whose address space is capped
# (RLIMIT_AS): without the bounds, the load would take the machine's memory (hidden_size 10**7 took 22 GB
# before it was killed), not just fail this test.
MEMORY_CAP = 8 << 30
PROBE = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from dcrn.models import load_checkpoint
for path in sys.argv[1:]:
    start = time.monotonic()
    try:
        load_checkpoint(path)
        error = None
    except Exception as exc:  # BadCheckpoint, or whatever an unbounded load ends in
        error = f"{{type(exc).__name__}}: {{exc}}"
    # VmHWM, this process's own peak: ru_maxrss would carry over the forking test process's size across exec
    peak_mb = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:")) // 1024
    print(json.dumps({{"path": path, "error": error, "seconds": time.monotonic() - start, "peak_mb": peak_mb}}))
"""


def load_capped(*paths: Path) -> dict[str, dict]:
    """Load each checkpoint in one child process with at most ``MEMORY_CAP`` of address space."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(cap=MEMORY_CAP), *map(str, paths)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    results = {r["path"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert len(results) == len(paths), done.stderr[-2000:]
    return results


SIZES = {
    "hidden_size 10**7": ({"hidden_size": 10**7}, "BadCheckpoint: ", "hidden_size must be <= 4096, got 10000000"),
    "num_classes 10**9": ({"num_classes": 10**9, "labels": []}, "BadCheckpoint: ", "num_classes must be <="),
    "input_size 10**6": ({"input_size": 10**6}, "BadCheckpoint: ", "input_size must be <="),
    "encoder width 10**6": ({"encoder_widths": [10**6]}, "BadCheckpoint: ", "encoder_widths must be channel counts"),
    "1000 encoder blocks": ({"encoder_widths": [8] * 1000}, "BadCheckpoint: ", "encoder_widths must list 1 to 8"),
    "head_hidden 10**8": ({"head_hidden": 10**8}, "BadCheckpoint: ", "head_hidden must be <="),
    "cell_kernel 10001": ({"cell_kernel": 10001}, "BadCheckpoint: ", "cell_kernel must be <="),
}


@pytest.fixture(scope="module")
def sized(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("sizes")
    paths = {case: write_crafted(folder / f"{i}.pt", {**SMALL, **change}) for i, (case, (change, *_)) in
             enumerate(SIZES.items())}  # fmt: skip
    assert all(p.stat().st_size < 64 * 1024 for p in paths.values())
    results = load_capped(*paths.values())
    return {case: results[str(path)] for case, path in paths.items()}


@pytest.mark.parametrize("case", list(SIZES))
def test_a_tiny_checkpoint_asking_for_a_huge_model_is_refused_at_once(sized, case):
    _, kind, phrase = SIZES[case]
    result = sized[case]
    assert result["error"] is not None and result["error"].startswith(kind), result
    assert phrase in result["error"] and "\n" not in result["error"]
    assert result["seconds"] < 5 and result["peak_mb"] < 1500, result


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"hidden_size": "8"}, "hidden_size must be a whole number"),
        ({"hidden_size": 8.5}, "hidden_size must be a whole number"),
        ({"hidden_size": True}, "hidden_size must be a whole number"),
        ({"mean": [float("nan"), 0.0, 0.0]}, "mean and std must be finite"),
        ({"std": [1.0, 1.0, float("inf")]}, "mean and std must be finite"),
        ({"dropout": float("nan")}, "dropout must be a number in [0, 1)"),
        ({"labels": "ab"}, "labels must be a list"),
        ({"encoder": ["seed"]}, "encoder must be one of"),
    ],
)
def test_every_config_value_has_its_type_checked(tmp_path, change, phrase):
    path = write_crafted(tmp_path / "bad.pt", {**SMALL, **change})
    with pytest.raises(BadCheckpoint) as info:
        load_checkpoint(path)
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_weights_that_do_not_fit_the_config_are_refused_before_the_model_is_allocated(tmp_path):
    """The config is within bounds but enormous; the file holds a few kB of weights. Built on the meta
    device first, the mismatch is found without allocating: the process stays small."""
    config = {**SMALL, "encoder_widths": [2048] * 4, "input_size": 1024, "pool": "flatten", "hidden_size": 4096}
    path = write_crafted(tmp_path / "mismatch.pt", config)
    result = load_capped(path)[str(path)]
    assert result["error"] is not None and "weights do not fit the stored config" in result["error"], result
    assert result["error"].startswith("BadCheckpoint: ") and result["peak_mb"] < 1500, result


@pytest.mark.parametrize(
    ("state_dict", "phrase"),
    [
        ({}, "missing"),
        ({"head.1.weight": "not a tensor"}, "unexpected"),
    ],
)
def test_a_state_dict_of_the_wrong_keys_is_refused(tmp_path, state_dict, phrase):
    with pytest.raises(BadCheckpoint, match=phrase):
        load_checkpoint(write_crafted(tmp_path / "keys.pt", SMALL, state_dict))


def test_a_weight_that_is_not_a_tensor_is_refused(tmp_path):
    weights = dict(small_model().state_dict())
    weights["head.1.weight"] = [1.0, 2.0]
    with pytest.raises(BadCheckpoint, match="is not a tensor"):
        load_checkpoint(write_crafted(tmp_path / "list.pt", SMALL, weights))


def test_a_meta_section_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(BadCheckpoint, match="'meta' section is not a mapping"):
        load_checkpoint(write_crafted(tmp_path / "meta.pt", SMALL, meta=[1, 2]))


@pytest.mark.parametrize(
    "label",
    ["\x1b[2J\x1b[31mfire", "wave\nFAKE LOG LINE", "carriage\rreturn", "bidi\u202eevil", "\x9b31m", "x" * 10_000, ""],
    ids=["escape", "newline", "cr", "bidi", "c1-csi", "absurd-length", "empty"],
)
def test_a_label_that_would_rewrite_a_terminal_is_refused_with_one_safe_line(tmp_path, label):
    path = write_crafted(tmp_path / "label.pt", {**SMALL, "labels": [label, "b"]})
    with pytest.raises(BadCheckpoint) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "class 1: label" in message
    assert message.isprintable() and len(message) < 400


def test_dcrn_run_with_an_escape_sequence_label_prints_one_line_and_no_escape(tmp_path, dcrn_process):
    path = write_crafted(tmp_path / "evil.pt", {**SMALL, "labels": ["\x1b]0;pwned\x07\x1b[2J", "b"]})
    result = dcrn_process("run", "--model", str(path), "--source", "synthetic:", "--max-frames", "3",
                          "--sink", "stdout?format=text")  # fmt: skip
    result.refused("run", "invalid model config", "control or invisible characters")
    assert "\x1b" not in result.err + result.out and "\x07" not in result.err + result.out


def test_dcrn_run_with_a_huge_config_is_one_line_within_seconds(tmp_path, dcrn_process):
    path = write_crafted(tmp_path / "huge.pt", {**SMALL, "hidden_size": 10**7})
    start = time.monotonic()
    result = dcrn_process(
        "run", "--model", str(path), "--source", "synthetic:", "--max-frames", "3", memory_cap=MEMORY_CAP
    )
    result.refused("run", "hidden_size must be <= 4096")
    assert time.monotonic() - start < 60


@pytest.fixture
def shipped_name() -> str:
    names = sorted(shipped_models())
    if not names:
        pytest.skip("no shipped model installed")
    return "default" if "default" in names else names[0]


def test_a_file_named_like_a_shipped_model_does_not_replace_it(tmp_path, monkeypatch, shipped_name):
    monkeypatch.chdir(tmp_path)
    Path(shipped_name).write_bytes(b"not the shipped model")
    assert resolve_model(shipped_name) == shipped_models()[shipped_name]
    assert resolve_model(f"./{shipped_name}") == Path(f"./{shipped_name}")
    with pytest.raises(BadCheckpoint, match="not a readable checkpoint"):
        load_checkpoint(f"./{shipped_name}")


def test_a_local_checkpoint_is_still_found_by_its_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "mine.pt", small_model())
    save_checkpoint(tmp_path / "mine", small_model())  # not a shipped name: a plain name works as a path
    assert resolve_model("mine.pt") == Path("mine.pt")
    assert resolve_model("mine") == Path("mine")


def test_dcrn_export_of_a_shipped_name_ignores_a_file_of_that_name(tmp_path, dcrn_process, shipped_name):
    (tmp_path / shipped_name).write_bytes(b"junk that would fail to load")
    result = dcrn_process("export", "--model", shipped_name, "--out", str(tmp_path / "out.onnx"), cwd=tmp_path)
    if result.code != 0 and "onnx" in result.err.lower() and "install" in result.err.lower():
        pytest.skip("ONNX export is not installed")
    assert result.code == 0, result.err
    refused = dcrn_process("export", "--model", f"./{shipped_name}", "--out", str(tmp_path / "o.onnx"), cwd=tmp_path)
    refused.refused("export", "not a readable checkpoint")
