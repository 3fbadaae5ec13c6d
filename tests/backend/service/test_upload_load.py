"""Four clients upload 200 MB each at once while another polls job status: status stays
fast (p95 under 100 ms) and the server's memory stays flat (bodies stream to disk)."""

from __future__ import annotations

import hashlib
import statistics
import threading
import time

import httpx

from .conftest import Server

CLIENTS, MB_EACH, CHUNK = 4, 200, 1 << 20
P95_LIMIT_S = 0.100


def _peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _body(seed: int):
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    for _ in range(MB_EACH):
        yield block


def test_big_uploads_at_once_leave_status_fast_and_memory_flat(server: Server, small_raster,
                                                                tmp_path):
    job = server.submit("classify", raster=str(small_raster), model="tiny",
                        out=str(tmp_path / "out"), device="cpu")
    assert server.proc is not None
    before = _peak_rss_mb(server.proc.pid)
    results: list[dict] = []
    latencies: list[float] = []
    done = threading.Event()

    def uploader(i: int) -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=300) as c:
            r = c.post("/files", content=_body(i), headers={
                "X-Filename": f"big{i}.bin", "Content-Length": str(MB_EACH * CHUNK)})
            assert r.status_code == 201, r.text
            results.append(r.json())

    def poller() -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                assert c.get(f"/jobs/{job['id']}").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.02)

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(CLIENTS)]
    watcher = threading.Thread(target=poller)
    start = time.monotonic()
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    done.set()
    watcher.join(60)
    took = time.monotonic() - start
    p95 = statistics.quantiles(latencies, n=20)[18]
    peak = _peak_rss_mb(server.proc.pid)
    print(f"\n{CLIENTS} x {MB_EACH} MB uploaded in {took:.1f} s; status p50 "
          f"{statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms over "
          f"{len(latencies)} requests; server peak RSS {before:.0f} -> {peak:.0f} MB")
    assert len(results) == CLIENTS and all(r["size"] == MB_EACH * CHUNK for r in results)
    assert p95 < P95_LIMIT_S
    assert peak - before < 100  # 800 MB went through; the server held none of it
