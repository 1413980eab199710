"""Firehose: `warehouse collect` (the real command) against a peer that costs the machine ~nothing.

    python bench/firehose.py                          # OddsPapi two-price frames; sink; 5,000/s latency
    python bench/firehose.py --baseline 7dc2855 --repeat 3   # ... and an older commit, alternated
    python bench/firehose.py --feed saba              # saba | ckex | mm: the other feeds
    python bench/firehose.py --json                   # the figures as JSON (--json FILE: into FILE, and the table)
    python bench/firehose.py --ceiling                # ... and PostgreSQL alone on the run's rows (pre-built COPY)

A peer process (bench/_peer.py) builds every frame before it listens and pushes them, already
framed for the wire, as fast as the socket takes them; `warehouse collect` runs as a subprocess of
each revision measured, with a config file written here, into a fresh database (per run, from a
migrated template) on an embedded PostgreSQL of this run's own. Each run reports:

- committed frames/s over the middle of the run: from PostgreSQL's commit timestamps
  (`track_commit_timestamp`), the rate between the commits that took the stored frames past 20 %
  and past 80 % of the run's frames. Nothing polls the database while frames flow;
- the lag when the stream stops: the last frame's commit minus the moment the peer's last byte
  went into the socket;
- the collector's peak RSS (the kernel's high-water mark, VmHWM) and the CPU each process spent
  per frame in the middle of the run (collector, PostgreSQL's server processes, the peer);
- that every frame sent is stored exactly once: raw_messages holds as many frames of the feed as
  the peer sent, all distinct (the peer's frames are, by construction), none quarantined;
- at a paced rate (`--rate`, 5,000 frames/s): receive→commit latency, from each frame's
  `received_at` (the collector's clock when the frame was read) to its transaction's commit
  timestamp. PostgreSQL takes that timestamp as the commit starts, before the WAL flush; the
  collector's own histogram (/metrics, measured after the commit returned) is shown beside it as
  the bucket that holds its 99th percentile.

The baseline in the same run is a sink: the same peer, read by a process that only counts frames
(the collector's WebSocket library and options, or httpx for SSE). `--baseline REV` measures an
older commit too, from a checkout and venv of its own cached under bench/.cache/, alternating the
runs (base, current, base, current …) so that the machine's drift falls on both. Not a test:
figures depend on the machine; compare the ratios of one run.

`--ceiling` adds PostgreSQL's own ceiling after each run of the current code (bench/_ceiling.py):
the rows that run stored, sent back into a fresh database as pre-built binary COPY bytes in the
writer's batches by a client that costs ~nothing, on one connection and on two. No collector can
store more frames/s on this machine than the server takes there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _ceiling, _peer  # noqa: E402
from bench._server import create_database, database_url, discard, scratch_server  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
SECRET = "firehose-secret-0d7e3c1a-5b6f-4c2d-9e8f"  # every feed's key/token (the peer checks none)
RUN_DB = "fh_run"
SAMPLE_S = 0.25  # CPU samples while frames flow
# `python -m` puts the working directory first on sys.path: run from the repository's root, a baseline's
# interpreter would import this checkout's `warehouse`, not its own. -P leaves it out (Python 3.11+).
SAFE_PATH = ("-P",)


def say(text: str) -> None:
    """Progress, on a terminal only."""
    if sys.stderr.isatty():
        print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- revisions --------------------------------------------------------------------------------------


@dataclass
class Revision:
    """A checkout whose `warehouse collect` is measured: its interpreter, its migrated template."""

    label: str
    python: str
    template: str = ""
    takes_resync: bool = False  # its feeds have the `resync` key (turned off here: the stream is measured)


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def current() -> Revision:
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "warehouse", "migrations",
                            "pyproject.toml"]).returncode != 0
    return Revision(f"current ({git('rev-parse', '--short', 'HEAD')}{'+changes' if dirty else ''})", sys.executable)


def checkout(rev: str) -> Revision:
    """REV's tree (git archive: nothing is registered in the repository) with a venv of its own, under
    bench/.cache/<commit>/, made once and reused."""
    try:
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"--baseline {rev}: no such commit in {ROOT}; give a commit, tag or branch") from None
    home = CACHE / commit
    python = home / "venv" / "bin" / "python"
    if not (home / "ready").exists():
        say(f"preparing a checkout and venv of {rev} in {home} (once) …")
        shutil.rmtree(home, ignore_errors=True)
        (home / "src").mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(home / "src")], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
        installed = subprocess.run([str(python), "-m", "pip", "install", "-q", str(home / "src")],
                                   capture_output=True, text=True)
        if installed.returncode != 0:
            raise SystemExit(f"installing {rev} into {home / 'venv'} failed:\n{installed.stderr[-2000:]}")
        (home / "ready").write_text(commit + "\n")
    return Revision(rev, str(python))


def warehouse(revision: Revision, url: str, config: Path | None, *args: str,
              env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A short command of the revision's CLI (`db upgrade`, `db url`)."""
    command = [revision.python, *SAFE_PATH, "-m", "warehouse", "--database-url", url]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=300)


def prepare(revision: Revision, number: int, admin_url: str, workdir: Path, feed: str) -> None:
    """The revision's migrated template database (migrated by its own `warehouse db upgrade`), and
    whether its feeds take `resync` (asked of its own config loader)."""
    revision.template = f"fh_template_{number}"
    url = create_database(admin_url, revision.template)
    upgraded = warehouse(revision, url, None, "db", "upgrade", env=collector_env(workdir))
    if upgraded.returncode != 0:
        raise SystemExit(f"{revision.label}: `warehouse db upgrade` failed:\n{upgraded.stderr[-2000:]}")
    probe = workdir / f"probe-{revision.template}.toml"
    probe.write_text(feed_config(feed, free_port(), rest_off=True))
    revision.takes_resync = warehouse(revision, url, probe, "db", "url", env=collector_env(workdir)).returncode == 0


# -- the collector's config --------------------------------------------------------------------------


FEED_SECTION = {
    "oddspapi": 'kind = "oddspapi-ws"\nurl = "ws://127.0.0.1:{port}/v4/ws"\napi_key_env = "FIREHOSE_SECRET"\n',
    "saba": 'kind = "saba-sse"\nurl = "http://127.0.0.1:{port}/sports/stream/v1/GetEvents"\n'
            'token_env = "FIREHOSE_SECRET"\n',
    "ckex": 'kind = "ckex-ws"\nurl = "ws://127.0.0.1:{port}/dev-f/quote/do-not-look-back"\n'
            'token_env = "FIREHOSE_SECRET"\nsubscriptions = {subscriptions}\n',
    "mm": 'kind = "mm-ws"\nurl = "ws://127.0.0.1:{port}/ws/subscribe"\napi_key_env = "FIREHOSE_SECRET"\n',
}
HAS_REST = ("oddspapi", "mm")  # feeds whose `resync` (a REST side, in revisions that have one) exists


def feed_config(feed: str, port: int, rest_off: bool) -> str:
    """The feed's [[feeds]] entry; `rest_off`: with `resync = false` (the revision has the key)."""
    section = FEED_SECTION[feed].format(port=port, subscriptions=json.dumps(_peer.CKEX_SUBSCRIPTIONS))
    # A quiet peer after the last frame is not a dead one; the REST side heals gaps, and a run has none.
    return (f'[[feeds]]\nname = "{feed}"\n{section}silence_timeout_s = 600\n'
            + ("resync = false\n" if rest_off and feed in HAS_REST else ""))


def collector_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAREHOUSE_", "PG"))}
    return {**env, "FIREHOSE_SECRET": SECRET, "WAREHOUSE_DATA_DIR": str(data_dir)}


# -- the peer ------------------------------------------------------------------------------------------


class Peer:
    """The peer process and its control pipe."""

    def __init__(self, feed: str, frames: int) -> None:
        self.feed, self.port = feed, free_port()
        spawn = multiprocessing.get_context("spawn")
        self.control, theirs = spawn.Pipe()
        self.process = spawn.Process(target=_peer.serve_peer, args=(feed, frames, self.port, theirs), daemon=True)
        self.process.start()
        if not self.control.poll(600) or self.control.recv() != ("ready",):
            raise SystemExit("the peer did not start within 600 s")

    @property
    def url(self) -> str:
        path = {"oddspapi": "/v4/ws", "saba": "/sports/stream/v1/GetEvents", "ckex": "/dev-f/quote/do-not-look-back",
                "mm": "/ws/subscribe"}[self.feed]
        return f"{'http' if self.feed == 'saba' else 'ws'}://127.0.0.1:{self.port}{path}"

    @property
    def opening(self) -> int:
        """Frames every connection gets before the run's frames (Saba's snapshot, MM's `subscribed`)."""
        return 1 if self.feed in ("saba", "mm") else 0

    def arm(self, count: int, rate: float | None = None, seconds: float | None = None) -> None:
        self.control.send(("arm", {"count": count, "rate": rate, "seconds": seconds}))
        if not self.control.poll(30) or self.control.recv() != ("armed",):
            raise SystemExit("the peer did not answer")

    def reports(self, timeout: float) -> list[dict[str, Any]]:
        """What each connection was sent: waits for the armed one (or `timeout`)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(r["armed"] for r in found):
            if self.control.poll(0.5):
                found.append(self.control.recv()[1])
        return found

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.control.send(("stop",))
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()


def sink_run(peer: Peer, count: int) -> dict[str, Any]:
    """The same frames, read by a process that only counts them."""
    spawn = multiprocessing.get_context("spawn")
    mine, theirs = spawn.Pipe()
    peer.arm(count)
    started = time.time()
    process = spawn.Process(target=_peer.sink, args=(peer.feed, peer.url, count + peer.opening, theirs), daemon=True)
    process.start()
    if not mine.poll(120 + count / 5000):
        process.terminate()
        raise SystemExit("the sink did not finish")
    result = mine.recv()
    process.join(10)
    sent = peer.reports(30)
    marks, step = result["marks"], result["step"]
    rate = (60 * step) / (marks[79] - marks[19]) if len(marks) >= 80 else float("nan")
    last_sent = max((r["last"] for r in sent), default=float("nan"))
    return {"kind": "sink", "frames_per_s": rate, "frames": result["frames"],
            "lag_s": result["last"] - last_sent, "seconds": result["last"] - started}


# -- a collector run -------------------------------------------------------------------------------------


class Sampler:
    """CPU seconds of the collector, PostgreSQL's server processes and the peer, every SAMPLE_S, in a
    thread (the wall-clock time of each sample first)."""

    def __init__(self, collector: int, postmaster: int, peer: int) -> None:
        self.pids = {"collector": collector, "postgres": postmaster, "peer": peer}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _cpu(self, name: str, pid: int) -> float:
        try:
            process = psutil.Process(pid)
            total = sum(process.cpu_times()[:2])
            if name == "postgres":  # its backends and helpers (a backend that has exited takes its time along)
                for child in process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += sum(child.cpu_times()[:2])
            return total
        except psutil.Error:
            return float("nan")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), {name: self._cpu(name, pid) for name, pid in self.pids.items()}))
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds spent between two wall-clock times (the nearest samples)."""
        if not self.samples:
            return {}
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        return {name: last[1][name] - first[1][name] for name in self.pids}


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def histogram_p99_bound(port: int, source: str) -> float:
    """The upper bound of the /metrics latency bucket that holds the 99th percentile (seconds)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    buckets = []
    for labels, count in re.findall(r"^warehouse_commit_latency_seconds_bucket\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if label.get("source") == source:
            buckets.append((float(label["le"]), float(count)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    return next((bound for bound, count in buckets if total and count >= 0.99 * total), float("nan"))


@dataclass
class Machine:
    """The run's PostgreSQL server and folder, and how many collector runs it has seen."""

    server: Any
    workdir: Path
    postmaster: int = 0
    runs: int = 0


def fresh_database(machine: Machine, template: str) -> str:
    url = create_database(machine.server.url("postgres"), RUN_DB, template)
    os.sync()  # no run pays for writing back the previous one's pages …
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # … or for flushing its buffers
    return url


def collect_run(machine: Machine, revision: Revision, peer: Peer, count: int, rate: float | None = None,
                seconds: float | None = None) -> dict[str, Any]:
    """One run of `warehouse collect` against the peer: `count` frames (firehose), or `rate` a second."""
    machine.runs += 1
    run_dir = machine.workdir / f"run-{machine.runs}"
    run_dir.mkdir()
    url = fresh_database(machine, revision.template)
    config = run_dir / "firehose.toml"
    config.write_text(feed_config(peer.feed, peer.port, rest_off=revision.takes_resync))
    metrics_port = free_port()
    peer.arm(count, rate, seconds)
    log = run_dir / "collector.log"
    with log.open("w") as out:
        collector = subprocess.Popen(
            [revision.python, *SAFE_PATH, "-m", "warehouse", "--database-url", url, "--config", str(config), "collect",
             "--metrics-port", str(metrics_port)], env=collector_env(run_dir), stdout=out, stderr=subprocess.STDOUT)
    source = peer.feed

    def failed(what: str) -> SystemExit:
        with contextlib.suppress(Exception):
            collector.kill()
        return SystemExit(f"{revision.label}: {what}; its log:\n{log.read_text()[-3000:]}")

    try:
        with Sampler(collector.pid, machine.postmaster, peer.process.pid or 0) as sampler:
            budget = 90 + (seconds or (count / rate if rate else count / 2000))
            reports = peer.reports(budget)
            if not any(r["armed"] for r in reports):
                raise failed(f"the peer was not done sending within {budget:.0f} s")
            sent = sum(r["frames"] for r in reports)
            with psycopg.connect(url, autocommit=True) as conn:
                deadline = time.monotonic() + 120 + sent / 2000
                stored = 0
                while time.monotonic() < deadline:
                    if collector.poll() is not None:
                        raise failed("the collector exited")
                    stored = conn.execute("SELECT count(*) FROM raw_messages WHERE source = %s",
                                          (source,)).fetchone()[0]
                    if stored >= sent:
                        break
                    time.sleep(0.5)  # the lag comes from commit timestamps, not from how often this asks
                else:
                    raise failed(f"only {stored:,} of {sent:,} frames stored {120 + sent / 2000:.0f} s after the"
                                 " peer's last")
            rss = peak_rss_mb(collector.pid)
            p99_bucket = histogram_p99_bound(metrics_port, source) if rate else float("nan")
        collector.send_signal(signal.SIGTERM)  # flush, record the disconnect, exit 0
        if collector.wait(60) != 0:
            raise failed(f"the collector exited {collector.returncode} on SIGTERM")
    finally:
        if collector.poll() is None:
            collector.kill()
    result = measure(url, source, sent, reports, sampler)
    result.update(kind="paced" if rate else "firehose", peak_rss_mb=rss, p99_bucket_ms=1000 * p99_bucket,
                  connections=len(reports))
    return result


def measure(url: str, source: str, sent: int, reports: list[dict[str, Any]], sampler: Sampler) -> dict[str, Any]:
    """The run's figures, from what PostgreSQL committed (and when) and what the peer sent."""
    with psycopg.connect(url) as conn:
        timeline = conn.execute(
            "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS t, count(*)"
            " FROM raw_messages WHERE source = %s GROUP BY 1 ORDER BY 1", (source,)).fetchall()
        stored, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT md5(coalesce(event_id, '') || payload::text))"
            " FROM raw_messages WHERE source = %s", (source,)).fetchone()
        p50, p99, worst = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l),"
            " max(l) FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - received_at)::float8 AS l"
            " FROM raw_messages WHERE source = %s) f", (source,)).fetchone()
        quarantined = conn.execute("SELECT count(*) FROM quarantine WHERE source = %s", (source,)).fetchone()[0]
        rows = sum(conn.execute(f'SELECT count(*) FROM "{name}" WHERE source = %s AND raw_id IS NOT NULL',
                                (source,)).fetchone()[0] for name in _ceiling.derived_tables(conn))
    total = sum(n for _, n in timeline)
    cumulative, at20, at80 = 0, None, None
    for t, n in timeline:
        cumulative += n
        if at20 is None and cumulative >= 0.2 * total:
            at20 = (t, cumulative)
        if at80 is None and cumulative >= 0.8 * total:
            at80 = (t, cumulative)
    rate = float("nan")
    cpu: dict[str, float] = {}
    if at20 and at80 and at80[0] > at20[0]:
        rate = (at80[1] - at20[1]) / (at80[0] - at20[0])
        cpu = {name: 1e6 * spent / (at80[1] - at20[1]) for name, spent in sampler.between(at20[0], at80[0]).items()}
    last_sent = max(r["last"] for r in reports)
    return {
        "frames_per_s": rate, "rows_per_s": rate * (stored + rows) / stored if stored else float("nan"),
        "sent": sent, "stored": stored, "distinct": distinct, "quarantined": quarantined, "rows": rows,
        "stored_once": stored == sent == distinct and quarantined == 0,
        "lag_s": timeline[-1][0] - last_sent if timeline else float("nan"),
        "p50_ms": 1000 * p50, "p99_ms": 1000 * p99, "max_ms": 1000 * worst,
        **{f"cpu_{name}_us": value for name, value in cpu.items()},
    }


def ceiling_runs(machine: Machine, revision: Revision, peer: Peer, work: list[Any]) -> list[dict[str, Any]]:
    """PostgreSQL alone: the batches a collector run stored, written again from their COPY bytes."""
    results = []
    for connections in (1, 2):
        url = fresh_database(machine, revision.template)
        with Sampler(os.getpid(), machine.postmaster, peer.process.pid or 0) as sampler:
            started = time.time()
            done = _ceiling.write(url, work, connections)
            ended = time.time()
        tables = {name for batch in work for name, _, _ in batch}
        with psycopg.connect(url) as conn:
            counts = {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in tables}
        stored = counts.pop("raw_messages")
        cpu = sampler.between(started, ended)
        results.append({"kind": "ceiling", "connections": connections, "stored": stored, "rows": sum(counts.values()),
                        "frames_per_s": stored / done["seconds"], "batches": len(work),
                        "cpu_postgres_us": 1e6 * cpu.get("postgres", float("nan")) / stored,
                        "cpu_client_us": 1e6 * done["client_cpu_s"] / stored})
    return results


# -- the plan and the report ---------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    values = [v for v in values if v == v]
    if not values:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]], revisions: list[Revision]) -> dict[str, Any]:
    def of(label: str, kind: str) -> list[dict[str, Any]]:
        return [r for r in runs if r["revision"] == label and r["kind"] == kind]

    summary: dict[str, Any] = {"sink frames/s": spread([r["frames_per_s"] for r in of("sink", "sink")])}
    for revision in revisions:
        summary[f"{revision.label} frames/s"] = spread([r["frames_per_s"] for r in of(revision.label, "firehose")])
        sinks = {r["repeat"]: r["frames_per_s"] for r in of("sink", "sink")}
        summary[f"{revision.label} / sink"] = spread([r["frames_per_s"] / sinks[r["repeat"]]
                                                      for r in of(revision.label, "firehose") if r["repeat"] in sinks])
        summary[f"{revision.label} collector CPU µs/frame"] = spread(
            [r.get("cpu_collector_us", float("nan")) for r in of(revision.label, "firehose")])
        if of(revision.label, "paced"):
            summary[f"{revision.label} p99 ms (paced)"] = spread([r["p99_ms"] for r in of(revision.label, "paced")])
    for connections in (1, 2):
        ceiling = [r for r in runs if r["kind"] == "ceiling" and r["connections"] == connections]
        if ceiling:
            summary[f"PostgreSQL alone, {connections} connection(s), frames/s"] = spread(
                [r["frames_per_s"] for r in ceiling])
            summary[f"PostgreSQL alone, {connections} connection(s), CPU µs/frame"] = spread(
                [r["cpu_postgres_us"] for r in ceiling])
    if len(revisions) == 2:
        base, new = revisions
        pairs = list(zip(of(base.label, "firehose"), of(new.label, "firehose"), strict=True))
        summary[f"{new.label} / {base.label}"] = spread([n["frames_per_s"] / b["frames_per_s"] for b, n in pairs])
        # CPU a frame costs the collector: steadier than frames/s where other work shares the cores
        summary[f"{base.label} / {new.label}, collector CPU a frame"] = spread(
            [b.get("cpu_collector_us", float("nan")) / n.get("cpu_collector_us", float("nan")) for b, n in pairs])
    return summary


def no_nan(value: Any) -> Any:
    """JSON has no NaN: null instead."""
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if not isinstance(value, int | float) or value != value:
        return "–"
    return f"{value:,.{digits}f}"


def print_report(setup: dict[str, Any], runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print(f"\nfirehose: {setup['feed']}, {setup['frames']:,} frames a run, {setup['repeat']} run(s) each;"
          f" {setup['cpus']} cores, load {setup['load_before']} before, {setup['load_after']} after\n")
    print("| run | frames/s | rows/s | lag at end s | peak RSS MB | CPU µs/frame: collector | PostgreSQL | peer"
          " | sent | stored once |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        name = f"{r['revision']} #{r['repeat']}"
        if r["kind"] == "sink":
            print(f"| sink #{r['repeat']} | {fmt(r['frames_per_s'])} | – | {fmt(r['lag_s'], 2)} | – | – | – | – "
                  f"| {fmt(r['frames'])} | – |")
        elif r["kind"] == "firehose":
            print(f"| {name} | {fmt(r['frames_per_s'])} | {fmt(r['rows_per_s'])} | {fmt(r['lag_s'], 2)}"
                  f" | {fmt(r['peak_rss_mb'])} | {fmt(r.get('cpu_collector_us'), 1)}"
                  f" | {fmt(r.get('cpu_postgres_us'), 1)} | {fmt(r.get('cpu_peer_us'), 1)} | {fmt(r['sent'])}"
                  f" | {fmt(r['stored_once'])} |")
    ceilings = [r for r in runs if r["kind"] == "ceiling"]
    if ceilings:
        print("\nPostgreSQL alone: each run's stored rows sent again as pre-built binary COPY bytes, in the writer's"
              " batches (no ids reserved, no fence or marker)\n")
        print("| run | connections | frames/s | CPU µs/frame: PostgreSQL | client | stored |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in ceilings:
            print(f"| #{r['repeat']} | {r['connections']} | {fmt(r['frames_per_s'])} | {fmt(r['cpu_postgres_us'], 1)}"
                  f" | {fmt(r['cpu_client_us'], 1)} | {fmt(r['stored'])} |")
    paced = [r for r in runs if r["kind"] == "paced"]
    if paced:
        print(f"\nreceive → commit at {setup['rate']:,.0f} frames/s for {setup['latency_seconds']:g} s"
              " (commit timestamp − received_at; /metrics: the bucket holding p99, after the commit returned)\n")
        print("| run | p50 ms | p99 ms | max ms | /metrics p99 ≤ ms | peak RSS MB | sent | stored once |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for r in paced:
            print(f"| {r['revision']} #{r['repeat']} | {fmt(r['p50_ms'], 1)} | {fmt(r['p99_ms'], 1)}"
                  f" | {fmt(r['max_ms'], 1)} | {fmt(r['p99_bucket_ms'])} | {fmt(r['peak_rss_mb'])} | {fmt(r['sent'])}"
                  f" | {fmt(r['stored_once'])} |")
    print("\n| summary | min | median | max |\n|---|---:|---:|---:|")
    for name, s in summary.items():
        digits = 2 if " / " in name else 1 if "µs" in name else 0  # ratios; CPU a frame; frames/s and ms
        print(f"| {name} | {fmt(s['min'], digits)} | {fmt(s['median'], digits)} | {fmt(s['max'], digits)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feed", choices=_peer.FEEDS, default="oddspapi")
    parser.add_argument("--frames", type=int, default=600_000, help="frames a firehose run sends (default 600,000)")
    parser.add_argument("--seconds", type=float, default=None, help="stop a firehose run's peer after this long")
    parser.add_argument("--rate", type=float, default=5000.0, help="frames/s of the latency run (0: none)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind, alternated between revisions")
    parser.add_argument("--warmup", type=int, default=50_000, help="frames of an unreported first run per revision")
    parser.add_argument("--baseline", metavar="REV", help="also measure this commit, in the same run")
    parser.add_argument("--ceiling", action="store_true",
                        help="after each run of the current code, PostgreSQL alone on its rows (pre-built COPY bytes)")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="the figures as JSON: on stdout instead of the table, or into FILE besides it")
    args = parser.parse_args()
    if args.frames < 100:
        parser.error("--frames: at least 100")

    revisions = ([checkout(args.baseline)] if args.baseline else []) + [current()]
    paced = int(args.rate * args.latency_seconds) if args.rate else 0
    workdir, server = scratch_server("firehose", settings={"track_commit_timestamp": "on"})
    peer = None
    runs: list[dict[str, Any]] = []
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        machine = Machine(server, workdir)
        machine.postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        for number, revision in enumerate(revisions):
            say(f"migrating a template database with {revision.label} …")
            prepare(revision, number, server.url("postgres"), workdir, args.feed)
        say(f"building {max(args.frames, paced, args.warmup):,} {args.feed} frames in the peer …")
        peer = Peer(args.feed, max(args.frames, paced, args.warmup))
        if args.warmup:
            for revision in revisions:
                say(f"warm-up: {revision.label}, {args.warmup:,} frames …")
                collect_run(machine, revision, peer, args.warmup)
        for repeat in range(1, args.repeat + 1):
            say(f"sink, run {repeat} …")
            runs.append({"revision": "sink", "repeat": repeat, **sink_run(peer, args.frames)})
            for revision in revisions:
                say(f"{revision.label}, firehose run {repeat} …")
                runs.append({"revision": revision.label, "repeat": repeat,
                             **collect_run(machine, revision, peer, args.frames, seconds=args.seconds)})
                if args.ceiling and revision is revisions[-1]:
                    say(f"PostgreSQL alone on run {repeat}'s rows, 1 and 2 connections …")
                    work = _ceiling.batches(_ceiling.read_run(database_url(server.url("postgres"), RUN_DB), args.feed))
                    runs += [{"revision": "PostgreSQL alone", "repeat": repeat, **r}
                             for r in ceiling_runs(machine, revision, peer, work)]
            for revision in revisions if paced else []:
                say(f"{revision.label}, {args.rate:,.0f} frames/s run {repeat} …")
                runs.append({"revision": revision.label, "repeat": repeat,
                             **collect_run(machine, revision, peer, paced, rate=args.rate)})
    finally:
        if peer is not None:
            peer.stop()
        discard(workdir, server)
    setup = {"feed": args.feed, "frames": args.frames, "repeat": args.repeat, "rate": args.rate,
             "latency_seconds": args.latency_seconds, "cpus": os.cpu_count(), "load_before": load_before,
             "load_after": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
             "revisions": [r.label for r in revisions], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    summary = summarise(runs, revisions)
    figures = json.dumps(no_nan({"setup": setup, "runs": runs, "summary": summary}), indent=2)
    if args.json and args.json != "-":
        Path(args.json).write_text(figures + "\n")
    if args.json == "-":
        print(figures)
    else:
        print_report(setup, runs, summary)
    if not all(r.get("stored_once", True) for r in runs):
        raise SystemExit("some frames sent were not stored exactly once (see `stored once`)")


if __name__ == "__main__":
    main()
