"""The plugin's npe2 manifest: valid, and every command it names imports (no display or Qt window needed)."""

from __future__ import annotations

import pytest

npe2 = pytest.importorskip("npe2", reason="npe2 is not installed (pip install 'epsseg-monai[napari]')")


def test_manifest_is_valid_and_its_widget_imports() -> None:
    manifest = npe2.PluginManifest.from_distribution("epsseg-monai")
    assert [w.command for w in manifest.contributions.widgets] == ["epsseg-monai.make_widget"]
    manifest.validate_imports()  # every python_name resolves
