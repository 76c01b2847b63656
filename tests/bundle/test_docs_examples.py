"""The Python examples of the bundle's docs (``bundle/docs/prediction.md``) run as written (on a small random image
and network)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from epsseg_monai.inferers import DenseInferer
from epsseg_monai.networks import EpsSegHVAE

DOCS = Path(__file__).resolve().parents[2] / "bundle" / "docs" / "prediction.md"


def test_out_of_core_prediction_example_runs(tmp_path, monkeypatch):
    blocks = [b.split("```")[0] for b in DOCS.read_text().split("```python\n")[1:]]
    source = next(b for b in blocks if "predict_array" in b)
    source = "\n".join(line[2:] if line.startswith("  ") else line for line in source.splitlines())  # list indent
    torch.manual_seed(0)
    network = EpsSegHVAE(2, 1, 4, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16,
                         head_window=4).eval()  # fmt: skip
    rng = np.random.default_rng(0)
    raw = (100 + 20 * rng.standard_normal((1, 40, 50))).astype(np.float32)
    monkeypatch.chdir(tmp_path)
    np.save("section.npy", raw)
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    (tmp_path / "bundle" / "models" / "intensity_stats.json").write_text(json.dumps({"mean": [100.0], "std": [20.0]}))
    exec(compile(source.replace("patch_size=64", "patch_size=16"), str(DOCS), "exec"), {"network": network})
    probs = np.load(tmp_path / "probs.npy")
    expected = DenseInferer(patch_size=16)(torch.from_numpy((raw - 100) / 20)[None], network)[0].numpy()
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)


def test_bundle_docs_links_resolve():
    """Every file that the bundle's docs link to, show or name (figures, the other pages, RESULTS.md) exists."""
    docs = DOCS.parent
    pages = sorted(docs.glob("*.md"))
    assert {"README.md", "training.md", "prediction.md", "export.md", "napari.md", "distributed.md"} <= {
        p.name for p in pages
    }
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text):  # markdown links and images
            if "://" not in target:
                assert (docs / target).exists(), f"{page.name} links to {target}, which does not exist"
        for name in re.findall(r"`([a-z_]+\.md)`", text):  # "see `training.md`"
            assert (docs / name).exists() or name == "RESULTS.md", f"{page.name} names {name}, not in {docs}"
