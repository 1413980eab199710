"""What ops/ ships, checked by the real tools: the alert rules by promtool (syntax and their unit tests) and
by a real Prometheus scraping a running collector, the Grafana dashboard's queries against the metrics
that exist, the systemd units by `systemd-analyze verify`, and every `warehouse` command line in the units
and the cron file by the command line's own parser."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from tests.test_collect_cli import free_port, operator_setup, wait_for
from warehouse.cli import app
from warehouse.collect import metrics
from warehouse.lifecycle import jobs

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "ops"
RULES = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "odds-warehouse.json"
INSTALL_ROOT = "/srv/odds-warehouse"  # where the units and the cron file expect the checkout
PROMTOOL, PROMETHEUS, SYSTEMD_ANALYZE = (shutil.which(n) for n in ("promtool", "prometheus", "systemd-analyze"))
needs_prometheus = pytest.mark.skipif(PROMTOOL is None or PROMETHEUS is None, reason="Debian's `prometheus` package"
                                      " is not installed (promtool, prometheus): .ci/run installs it")
COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool)\s*")


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    queries += [var["query"]["query"] for var in board["templating"]["list"] if var["type"] == "query"]
    return queries


def metric_names(promql: str) -> set[str]:
    """The metric names a query reads (ours all start with warehouse_; `up` is Prometheus' own)."""
    without_labels = re.sub(r"\{[^}]*\}", "", promql)
    return set(re.findall(r"\bwarehouse_\w+", without_labels)) | ({"up"} if re.search(r"\bup\b", promql) else set())


def exposed_names() -> set[str]:
    """Every sample name the collector's /metrics can show, from its registry's families."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in metrics.REGISTRY.collect() for suffix in suffixes[family.type]}


def test_the_dashboard_and_the_alerts_read_only_metrics_the_collector_exposes() -> None:
    exposed = exposed_names() | {"up"}
    for promql in [*dashboard_queries(), *(rule["expr"] for rule in alert_rules())]:
        names = metric_names(promql)
        assert names, f"no metric in {promql!r}"
        assert names <= exposed, f"{promql!r} reads {sorted(names - exposed)}, which no collector exposes"
    # Every per-feed gauge the issue asks for is on the dashboard.
    shown = set().union(*map(metric_names, dashboard_queries()))
    assert {"warehouse_connected", "warehouse_last_frame_age_seconds", "warehouse_last_commit_age_seconds",
            "warehouse_spool_bytes", "warehouse_spool_frames", "warehouse_job_last_success_timestamp_seconds",
            "warehouse_job_last_run_ok"} <= shown


@needs_prometheus
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    for args in (["check", "rules", str(RULES)], ["check", "config", str(OPS / "prometheus" / "prometheus.yml")],
                 ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def installed(text: str) -> str:
    """A unit or cron line as it would run from this checkout."""
    return text.replace(INSTALL_ROOT, str(ROOT))


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (package systemd)")
def test_systemd_units_verify(tmp_path: Path) -> None:
    units = sorted((OPS / "systemd").iterdir())
    assert [u.name for u in units] == ["warehouse-collect.service", "warehouse-nightly.service",
                                       "warehouse-nightly.timer"]
    for unit in units:  # ExecStart must name an executable: this checkout's, where the unit expects the install
        (tmp_path / unit.name).write_text(installed(unit.read_text()))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", *(str(tmp_path / u.name) for u in units)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def warehouse_invocations() -> list[tuple[str, list[str]]]:
    """Every `warehouse …` command line in the units and the cron file: (where, its arguments)."""
    found = []
    for path in [*sorted((OPS / "systemd").glob("*.service")), OPS / "cron" / "odds-warehouse"]:
        for line in path.read_text().splitlines():
            for command in re.findall(r"\.venv/bin/warehouse ([^;}&\n]+)", line):
                found.append((path.name, shlex.split(command.replace("${METRICS_BIND}", "127.0.0.1:9101"))))
    return found


def test_the_units_and_the_cron_file_run_commands_the_command_line_accepts() -> None:
    invocations = warehouse_invocations()
    assert sorted({args[0] for _, args in invocations}) == ["check", "collect", "export", "retain", "verify-lake"]
    group = typer.main.get_command(app)
    for where, args in invocations:
        command = group.commands.get(args[0])  # type: ignore[attr-defined]
        assert command is not None, f"{where}: no command {args[0]!r}"
        command.make_context(args[0], args[1:])  # raises on an unknown option or a missing value
    cron = [line for line in (OPS / "cron" / "odds-warehouse").read_text().splitlines()
            if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(cron) == 2
    for line in cron:
        fields = line.split(None, 6)  # minute hour day month weekday user command (/etc/cron.d's format)
        assert len(fields) == 7 and fields[5] == "warehouse", line
        syntax = subprocess.run(["sh", "-n", "-c", fields[6]], capture_output=True, text=True, timeout=30)
        assert syntax.returncode == 0, syntax.stderr


def prom_query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    answer = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


@needs_prometheus
def test_a_real_prometheus_scraping_a_collector_finds_a_series_for_every_rule_and_panel(db_url: str,
                                                                                       tmp_path: Path) -> None:
    for job in ("export", "retain", "verify-lake"):  # last night's jobs, as they record themselves
        run = jobs.Run(job)
        run.url = db_url
        run.done("test")
        jobs.record(run)
    command, env = operator_setup(db_url, tmp_path)
    metrics_port, prom_port = free_port(), free_port()
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    simulators = subprocess.Popen([*command, "simulate"], env=env, stderr=subprocess.DEVNULL)
    collector = subprocess.Popen([*command, "collect", "--metrics-bind", f"127.0.0.1:{metrics_port}"], env=env,
                                 stderr=subprocess.PIPE, text=True)
    prometheus = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--log.level=warn",
                                   f"--web.listen-address=127.0.0.1:{prom_port}"], stderr=subprocess.PIPE, text=True)
    try:
        def scraped_enough() -> bool:  # three scrapes with both feeds streaming: rate() and deriv() have two points
            try:
                return len(prom_query(prom_port, "count_over_time(warehouse_frames_total[1m]) >= 3"
                                                 " and warehouse_frames_total > 0")) == 2
            except OSError:
                return False

        wait_for(scraped_enough, 90, "Prometheus to scrape the collector three times")

        def evaluated() -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{prom_port}/api/v1/rules"
            rules = json.loads(urllib.request.urlopen(url, timeout=10).read())["data"]["groups"][0]["rules"]
            return rules if all(rule["lastEvaluation"] > "2000" for rule in rules) else []

        wait_for(lambda: bool(evaluated()), 30, "every rule to be evaluated")
        assert {rule["name"]: (rule["health"], rule.get("lastError", "")) for rule in evaluated()} == {
            rule["alert"]: ("ok", "") for rule in alert_rules()}
        # Each alert's query as a 0/1 per series (`> 600` becomes `> bool 600`): it finds series, and a healthy
        # warehouse (both feeds streaming, last night's jobs done) raises none of them.
        for rule in alert_rules():
            series = prom_query(prom_port, COMPARISON.sub(lambda m: f"{m.group(1)} bool ", rule["expr"]))
            assert series, f"{rule['alert']}: {rule['expr']!r} finds no series"
            assert {s["value"][1] for s in series} == {"0"}, (rule["alert"], series)
        for promql in dashboard_queries():
            variable = re.fullmatch(r"label_values\((\w+), (\w+)\)", promql)  # Grafana's, not PromQL
            concrete = promql.replace("$__rate_interval", "1m").replace("$source", ".+")
            found = prom_query(prom_port, variable.group(1) if variable else concrete)
            assert found, f"the dashboard's {promql!r} finds no series"
            if variable:
                assert {s["metric"][variable.group(2)] for s in found} == {"oddspapi", "saba"}
        jobs_seen = prom_query(prom_port, "warehouse_job_last_run_ok")
        assert {s["metric"]["command"]: s["value"][1] for s in jobs_seen} == {
            "export": "1", "retain": "1", "verify-lake": "1"}
    finally:
        for process in (prometheus, collector, simulators):
            process.send_signal(signal.SIGTERM)
        _, collector_log = collector.communicate(timeout=60)
        _, prometheus_log = prometheus.communicate(timeout=60)
        simulators.wait(timeout=60)
    assert collector.returncode == 0, collector_log[-2000:]
    assert prometheus.returncode == 0, prometheus_log[-2000:]


def test_the_monitoring_page_names_every_metric_the_collector_exposes() -> None:
    page = (ROOT / "docs" / "monitoring.md").read_text()
    named = {family.name + ("_total" if family.type == "counter" else "") for family in metrics.REGISTRY.collect()}
    assert not {name for name in named if f"`{name}`" not in page}
