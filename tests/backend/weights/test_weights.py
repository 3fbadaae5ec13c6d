"""The weights manager against a real HTTP server on loopback, with synthetic checkpoints
in the published layouts: resumed downloads, refused files that leave nothing behind,
architectures named, and installed weights used by name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from gfm_backend.cli import main
from gfm_backend.errors import Cancelled, GfmError, InputError
from gfm_backend.models import CONFIGS
from gfm_backend.progress import Progress, silent
from gfm_backend.tasks.params import WeightsGetParams, WeightsImportParams
from gfm_backend.tasks.weights import get_weights, import_weights, list_weights, remove_weights
from gfm_backend.weights.store import WeightsStore

from ..models.checkpoint_files import write_22k_checkpoint, write_gfm_checkpoint
from .file_server import FileServer

TINY = CONFIGS["tiny"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("published")
    write_22k_checkpoint(root / "swin_tiny_22k.pth", TINY.with_input(224, 7))
    write_gfm_checkpoint(root / "gfm.pth", TINY)
    vit = {"cls_token": torch.zeros(1, 1, 64), "pos_embed": torch.zeros(1, 197, 64),
           "patch_embed.proj.weight": torch.zeros(64, 3, 16, 16),
           "blocks.0.attn.qkv.weight": torch.zeros(192, 64)}
    torch.save({"model": vit}, root / "vit.pth")
    data = (root / "swin_tiny_22k.pth").read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 2])
    return root


@pytest.fixture
def server(files):
    with FileServer(files) as server:
        yield server


@pytest.fixture
def store(tmp_path) -> WeightsStore:
    return WeightsStore(tmp_path / "weights")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(store: WeightsStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file()) \
        if store.root.exists() else []


def test_a_cut_connection_resumes_and_the_file_is_checked(server, files, store) -> None:
    size = (files / "swin_tiny_22k.pth").stat().st_size
    server.served.cut_after["swin_tiny_22k.pth"] = size // 3
    seen: list[float] = []
    record = get_weights(WeightsGetParams(server.url("swin_tiny_22k.pth"), name="tiny22k"),
                         Progress(report=lambda f, m: seen.append(f)), store)
    assert server.served.requests[1] == ("swin_tiny_22k.pth", f"bytes={size // 3}-")
    assert record["sha256"] == sha256(files / "swin_tiny_22k.pth") and record["size"] == size
    assert record["role"] == "encoder" and record["architecture"].startswith("Swin (this backend")
    assert Path(record["path"]).read_bytes() == (files / "swin_tiny_22k.pth").read_bytes()
    assert seen and max(seen) == pytest.approx(1.0)
    assert leftovers(store) == ["tiny22k/swin_tiny_22k.pth", "tiny22k/weights.json"]
    again = get_weights(WeightsGetParams(server.url("swin_tiny_22k.pth"), name="tiny22k"),
                        silent(), store)
    assert again["already_installed"] and len(server.served.requests) == 2


def test_a_cancelled_download_resumes_on_the_next_run(server, files, store) -> None:
    progress = Progress(report=lambda f, m: progress.cancel() if f > 0 else None)
    with pytest.raises(Cancelled):
        get_weights(WeightsGetParams(server.url("gfm.pth"), name="gfm"), progress, store)
    assert store.record("gfm") is None and any(p.endswith(".part") for p in leftovers(store))
    record = get_weights(WeightsGetParams(server.url("gfm.pth"), name="gfm"), silent(), store)
    assert server.served.requests[-1][1] is not None  # asked for the rest only
    assert record["sha256"] == sha256(files / "gfm.pth")
    assert record["role"] == "student" and "GFM pretraining checkpoint" in record["what"]
    assert leftovers(store) == ["gfm/gfm.pth", "gfm/weights.json"]


def test_a_wrong_checksum_leaves_nothing(server, store) -> None:
    with pytest.raises(InputError, match="has SHA-256 .* expected 0{64}"):
        get_weights(WeightsGetParams(server.url("gfm.pth"), sha256="0" * 64), silent(), store)
    assert leftovers(store) == []


def test_the_hubs_published_hash_is_checked(server, store) -> None:
    server.served.headers["gfm.pth"] = {"X-Linked-Etag": '"' + "ab" * 32 + '"'}
    with pytest.raises(InputError, match="expected " + "ab" * 32):
        get_weights(WeightsGetParams(server.url("gfm.pth")), silent(), store)
    assert leftovers(store) == []


def test_a_truncated_file_is_refused_and_leaves_nothing(server, store) -> None:
    with pytest.raises(InputError, match="truncated.pth: is not a readable PyTorch checkpoint"):
        get_weights(WeightsGetParams(server.url("truncated.pth")), silent(), store)
    assert leftovers(store) == []


def test_other_architectures_are_refused_by_name(server, store) -> None:
    with pytest.raises(InputError, match="is a Swin \\(this backend's tiny config\\) checkpoint "
                       ".*not the Swin-B that 'swin-b-22k' names"):
        get_weights(WeightsGetParams("swin-b-22k", mirror=server.url("swin_tiny_22k.pth")),
                    silent(), store)
    with pytest.raises(InputError, match="vit.pth: is a ViT checkpoint, not a Swin Transformer"):
        get_weights(WeightsGetParams(server.url("vit.pth")), silent(), store)
    assert leftovers(store) == []


def test_unreachable_or_missing_files_say_so(server, store) -> None:
    with pytest.raises(InputError, match="HTTP 404"):
        get_weights(WeightsGetParams(server.url("nothing.pth")), silent(), store)
    with pytest.raises(GfmError, match="cannot reach .* offline"):
        get_weights(WeightsGetParams("http://127.0.0.1:9/gfm.pth"), silent(), store)
    with pytest.raises(GfmError, match="needs a browser: download gfm.pth there"):
        get_weights(WeightsGetParams("gfm"), silent(), store)
    assert leftovers(store) == []


def test_catalog_and_removal(server, store) -> None:
    get_weights(WeightsGetParams(server.url("gfm.pth"), name="mine"), silent(), store)
    listing = list_weights(store)
    assert [r["name"] for r in listing["installed"]] == ["mine"]
    gfm = next(e for e in listing["catalog"] if e["name"] == "gfm")
    assert "1drv.ms" in gfm["page"] and "Mendieta" in gfm["citation"] and not gfm["installed"]
    assert remove_weights("mine", store)["removed"]["name"] == "mine"
    assert leftovers(store) == []


def test_import_recognises_gfm_pth_and_keeps_the_users_file(files, tmp_path, store) -> None:
    mine = tmp_path / "downloads" / "gfm.pth"
    mine.parent.mkdir()
    mine.write_bytes((files / "gfm.pth").read_bytes())
    record = import_weights(WeightsImportParams(mine), silent(), store)
    assert record["name"] == "gfm" and record["source"] == f"imported from {mine}"
    assert mine.is_file() and record["sha256"] == sha256(mine)
    with pytest.raises(GfmError, match="already installed"):
        import_weights(WeightsImportParams(mine), silent(), store)
    with pytest.raises(InputError, match="vit.pth: is a ViT checkpoint"):
        import_weights(WeightsImportParams(files / "vit.pth"), silent(), store)


def test_imported_weights_are_used_by_name_for_a_fine_tune(files, tmp_path, scene_files,
                                                            monkeypatch, capsys) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("GFM_STATE_DIR", str(state))
    assert main(["--quiet", "weights", "import", str(files / "gfm.pth")]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "gfm"
    assert main(["--quiet", "weights", "list"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)["installed"]] == ["gfm"]
    out = tmp_path / "model"
    args = ["--quiet", "finetune", str(scene_files["raster"]), "--labels", str(scene_files["labels"]),
            "--class-field", "class", "--out", str(out), "--encoder", "gfm", "--epochs", "1",
            "--chips", "8", "--batch-size", "4", "--device", "cpu", "--no-onnx"]
    assert main(args) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["encoder"] == str(state / "weights" / "gfm" / "gfm.pth")
    wrong = [{"gfm": "gmf", str(out): str(tmp_path / "m2")}.get(a, a) for a in args]
    assert main(wrong) == 2
    assert "--encoder: unknown weights 'gmf'" in capsys.readouterr().err


def test_the_published_gfm_pth_from_a_mirror(tmp_path, store) -> None:
    """A Swin-B file with exactly the keys and shapes of the published gfm.pth, fetched as
    the catalog's `gfm` from a mirror, is recognised as the GFM student."""
    from ..models.swin_reference import official_keys

    keys = official_keys()
    if keys is None:
        pytest.skip("gfm_pth_keys.json not available (set GFM_REFERENCE_DIR)")
    model = {k: torch.zeros(shape, dtype=getattr(torch, dtype)) for k, (shape, dtype) in keys.items()}
    (tmp_path / "mirror").mkdir()
    torch.save({"model": model, "optimizer": {}, "lr_scheduler": {}, "max_accuracy": 0.0,
                "epoch": 99, "amp": {}}, tmp_path / "mirror" / "gfm.pth")
    del model
    with FileServer(tmp_path / "mirror") as server:
        record = get_weights(WeightsGetParams("gfm", mirror=server.url("gfm.pth")), silent(), store)
    assert (record["name"], record["catalog"], record["role"]) == ("gfm", "gfm", "student")
    assert record["architecture"] == "Swin-B"
    assert record["shape"].startswith("embed 128, depths 2-2-18-2, window 6, 192 px")


def test_the_store_never_replaces_or_deletes_what_is_not_its_own(server, store) -> None:
    stray = store.root / "gfm" / "notes.txt"  # a folder of that name that is no entry
    stray.parent.mkdir(parents=True)
    stray.write_text("mine")
    with pytest.raises(GfmError, match="holds no complete weights entry"):
        get_weights(WeightsGetParams(server.url("gfm.pth"), name="gfm"), silent(), store)
    assert stray.read_text() == "mine"
    get_weights(WeightsGetParams(server.url("gfm.pth"), name="other"), silent(), store)
    extra = store.root / "other" / "readme.txt"
    extra.write_text("kept")
    remove_weights("other", store)
    assert extra.read_text() == "kept" and store.record("other") is None
