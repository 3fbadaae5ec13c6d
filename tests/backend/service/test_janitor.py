"""`--keep-days`: old uploads and the service's old job outputs go; what a queued or
running job uses, and anything outside the service's own folders, stays."""

from __future__ import annotations

import time
from pathlib import Path

from gfm_backend.service.config import ServiceConfig
from gfm_backend.service.janitor import sweep
from gfm_backend.service.store import JobStore
from gfm_backend.service.uploads import UploadStore

DAY = 86400.0


def _upload(store: UploadStore, data: bytes, name: str):
    upload = store.start(name, len(data), None)
    store.partial_file(upload).write_bytes(data)
    return store.received(upload)


def test_old_unused_files_go_and_files_in_use_stay(tmp_path):
    config = ServiceConfig(state_dir=tmp_path / "state")
    uploads = UploadStore(config.uploads_dir)
    jobs = JobStore(config.db_path)
    old = _upload(uploads, b"old raster", "old.tif")
    used = _upload(uploads, b"raster a job reads", "used.tif")
    half = uploads.start("half.tif", 100, None)  # never finished
    finished_out = config.outputs_dir / "a1" / "result"
    running_out = config.outputs_dir / "b2" / "result"
    mine = tmp_path / "data" / "my-results"  # a user's folder: never the janitor's
    for folder in (finished_out, running_out, mine):
        folder.mkdir(parents=True)
        (folder / "classes.tif").write_bytes(b"x")
    done = jobs.add("classify", {"raster": str(uploads.blob(old)), "out": str(finished_out)},
                    "cpu", False)
    jobs.finish(done.id, "succeeded", "done")
    mine_job = jobs.add("classify", {"raster": str(uploads.blob(old)), "out": str(mine)}, "cpu", False)
    jobs.finish(mine_job.id, "succeeded", "done")
    running = jobs.add("classify", {"raster": str(uploads.blob(used)), "out": str(running_out)},
                       "cpu", False)
    jobs.mark_running(running.id, None)

    assert not any(sweep(config, jobs, keep_s=DAY).values())  # nothing is a day old yet
    removed = sweep(config, jobs, keep_s=DAY, now=time.time() + 2 * DAY)
    assert removed == {"uploads": 2, "blobs": 1, "partial": 0, "outputs": 1}  # half: an upload
    assert not uploads.blob(old).exists() and uploads.blob(used).exists()
    assert not (config.uploads_dir / "partial" / half.id).exists()
    assert not finished_out.parent.exists()
    assert running_out.exists() and mine.exists() and Path(mine / "classes.tif").exists()
    jobs.close()
