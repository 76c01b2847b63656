from __future__ import annotations

import numpy as np
import pytest
import torch

from epsseg_monai import utils
from epsseg_monai.utils import center_region_mask, center_region_slices, check_sparse_labels


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        ((64, 64), 1, (slice(32, 33), slice(32, 33))),
        ((64, 64), 3, (slice(31, 34),) * 2),
        ((5, 8, 8), 2, (slice(1, 3), slice(3, 5), slice(3, 5))),
    ],
)
def test_center_region_slices(shape, size, expected):
    assert center_region_slices(shape, size) == expected


def test_center_region_contains_center_index():
    for p in (7, 8, 63, 64):
        for m in (1, 2, 3):
            (s,) = center_region_slices((p,), m)
            assert s.start <= p // 2 < s.stop and s.stop - s.start == m


def test_center_region_errors():
    with pytest.raises(ValueError, match="does not fit"):
        center_region_slices((4, 4), 5)
    with pytest.raises(ValueError, match="does not match"):
        center_region_slices((4, 4), (1, 1, 1))


def test_center_region_mask_counts():
    m = center_region_mask((9, 9, 9), 3)
    assert m.dtype == torch.bool and int(m.sum()) == 27 and bool(m[4, 4, 4])


@pytest.mark.parametrize(
    "labels, num_classes, match",
    [
        (np.array([0, 1, -1]), None, "negative"),
        (np.array([0.0, np.nan]), None, "NaN"),
        (np.array([0.0, 1.5]), None, "non-integer"),
        (np.array([0, 5]), 4, "class id 5"),
        (np.array([]), None, "empty"),
        (np.array(["a"]), None, "dtype"),
    ],
)
def test_check_sparse_labels_errors(labels, num_classes, match):
    with pytest.raises(ValueError, match=match):
        check_sparse_labels(labels, num_classes)


def test_check_sparse_labels_accepts_valid():
    check_sparse_labels(np.array([0, 1, 4], dtype=np.uint8), 4)
    check_sparse_labels(torch.tensor([0.0, 2.0]), 2)


def test_labels_from_probabilities_numpy_and_torch_along_any_axis():
    from epsseg_monai.utils import labels_from_probabilities

    probs = np.zeros((2, 3, 4), dtype=np.float32)  # (B, C, N): classes along dim 1
    probs[0, :, 0] = [0.2, 0.5, 0.3]
    probs[0, :, 1] = [0.0, 0.0, 1e-6]
    probs[1, :, 2] = [0.9, 0.05, 0.05]
    expected = [[2, 3, 0, 0], [0, 0, 1, 0]]
    np.testing.assert_array_equal(labels_from_probabilities(probs, dim=1), expected)
    out = labels_from_probabilities(torch.as_tensor(probs), dim=1)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize(
    "flags, expected",
    [("fpu sse avx512f avx512_bf16 avx512vl", True), ("fpu amx_bf16 amx_tile", True), ("fpu sse avx2 avx512f", False)],
)
def test_fast_bfloat16_reads_the_cpu_flags(tmp_path, monkeypatch, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(utils, "CPUINFO", str(cpuinfo))
    assert utils.fast_bfloat16("cpu") is expected
    assert utils.fast_bfloat16("meta") is False  # neither CPU nor CUDA


def test_fast_bfloat16_without_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "CPUINFO", str(tmp_path / "missing"))  # e.g. macOS, Windows
    assert utils.fast_bfloat16(torch.device("cpu")) is False


def test_root_cause_and_error_hook(capsys, monkeypatch):
    """The hook repeats the innermost error as the last line (MONAI wraps ours in a RuntimeError)."""
    import sys

    from epsseg_monai.utils import install_error_hook, root_cause

    try:
        try:
            raise ValueError("labels/b.tif holds id 7; use 1..3")
        except ValueError as e:
            raise RuntimeError("Failed to instantiate component 'monai.data.CacheDataset'") from e
    except RuntimeError as e:
        wrapped = e
    assert str(root_cause(wrapped)) == "labels/b.tif holds id 7; use 1..3"
    plain = ValueError("alone")
    assert root_cause(plain) is plain
    try:  # our message raised from a low-level error, wrapped twice by MONAI: ours is the one to show
        try:
            try:
                raise EOFError()
            except EOFError as e:
                raise ValueError("Checkpoint x.pt cannot be read; retrain") from e
        except ValueError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    except RuntimeError as e:
        outer = RuntimeError("Failed to instantiate component 'x'")
        outer.__cause__ = e
        assert str(root_cause(outer)) == "Checkpoint x.pt cannot be read; retrain"
    monkeypatch.setattr(sys, "excepthook", lambda t, v, tb: print("traceback", file=sys.stderr))
    install_error_hook()
    install_error_hook()  # twice: one extra line, not two
    sys.excepthook(RuntimeError, wrapped, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["traceback", "Error: ValueError: labels/b.tif holds id 7; use 1..3"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/x/monai/bundle/__main__.py", "run", "training", "--config_file", "t.json"], "training"),
        (["/x/monai/bundle/__main__.py", "run", "--config_file", "t.json", "--run_id", "inference"], "inference"),
        (["/x/monai/bundle/__main__.py", "run", "--run_id=evaluate", "--config_file", "t.json"], "evaluate"),
        (["/x/monai/bundle/__main__.py", "run", "--config_file", "t.json"], "run"),
        (["/x/monai/bundle/__main__.py", "verify_metadata", "--meta_file", "m.json"], None),
        (["/usr/bin/pytest", "run", "trainig"], None),
    ],
)
def test_requested_run_id(argv, expected):
    from epsseg_monai.utils import check_run_id, requested_run_id

    assert requested_run_id(argv) == expected
    check_run_id(["training", "inference", "evaluate", "run"], argv)  # all known (or not a bundle run)


def test_check_run_id_names_the_typo():
    from epsseg_monai.utils import check_run_id

    with pytest.raises(ValueError, match="Unknown run id 'trainig'.*'training', 'run'"):
        check_run_id(["training", "run"], ["/x/monai/bundle/__main__.py", "run", "trainig", "--config_file", "t.json"])


def test_multi_gpu_overlay_after_the_large_image_overlay_is_refused():
    from epsseg_monai.utils import refuse_overlay_combination

    refuse_overlay_combination(large_image=True)
    refuse_overlay_combination(multi_gpu=True)
    with pytest.raises(ValueError, match="Put large_image_inference.json last"):
        refuse_overlay_combination(large_image=True, multi_gpu=True)


def test_init_distributed_only_when_asked():
    """The large-image overlay joins the process group only after ``multi_gpu_inference.json`` (``--multi_gpu_overlay
    true``); without it nothing is initialised, and leaving is a no-op outside a group."""
    import torch.distributed as dist

    from epsseg_monai.utils import destroy_distributed, init_distributed

    assert init_distributed(False) is False and init_distributed("false") is False
    assert not dist.is_initialized()
    destroy_distributed()
    with pytest.raises(ValueError, match="multi_gpu_overlay"):
        init_distributed("maybe")


def test_as_flag_reads_command_line_booleans():
    """``--overwrite false`` reaches a bundle config as the string "false", which Python takes as true."""
    from epsseg_monai.utils import as_flag, use_bfloat16

    for value in (True, "true", "True", "YES", "on", "1", 1):
        assert as_flag(value, "x") is True
    for value in (False, "false", "False", "no", "off", "0", 0):
        assert as_flag(value, "x") is False
    assert as_flag("AUTO", "amp", allow_auto=True) == "auto"
    with pytest.raises(ValueError, match="--overwrite must be true or false, got 'auto'"):
        as_flag("auto", "overwrite")
    with pytest.raises(ValueError, match="--tta must be true or false, got 'flase'"):
        as_flag("flase", "tta")
    assert use_bfloat16("false", "cpu") is False


def test_refuse_options_names_what_is_on():
    from epsseg_monai.utils import refuse_options

    refuse_options("why", adjust_priors="false", calibrate_priors=True)  # one on: fine
    with pytest.raises(ValueError, match="--adjust_priors and --calibrate_priors cannot be used together: why"):
        refuse_options("why", adjust_priors="true", calibrate_priors=True)
    refuse_options("why", limit=0, tta=False, adjust_priors="no")
    with pytest.raises(ValueError, match="--tta cannot be used here: tiles"):
        refuse_options("tiles", limit=0, tta="true", adjust_priors=False)


def test_unwrap_network_only_unwraps_data_parallel_wrappers():
    inner = torch.nn.Linear(2, 2)
    assert utils.unwrap_network(torch.nn.DataParallel(inner)) is inner
    assert utils.unwrap_network(inner) is inner

    class HasModuleChild(torch.nn.Module):  # a network with a sub-module called "module" is not a wrapper
        def __init__(self):
            super().__init__()
            self.module = torch.nn.Linear(2, 2)

    net = HasModuleChild()
    assert utils.unwrap_network(net) is net
