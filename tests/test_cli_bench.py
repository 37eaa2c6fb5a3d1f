"""``shmring bench``: a quick run prints every object's figures with ratios,
draws a valid PNG, gives JSON whose every workload has a positive rate and
every message checked, and leaves nothing behind; a missing matplotlib and
bad options fail cleanly.

Runs the ``shmring`` console script as a real subprocess (tests/_cli_helpers.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _cli_helpers import SHM_DIR, cli, words

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OBJECTS = ("shmring.Channel", "shmring.Queue", "shmring.Topic", "multiprocessing.Pipe", "multiprocessing.Queue")
RUN_TIMEOUT = 40  # --quick takes a few seconds; this is the watchdog


def _bench(*args: str, tmp: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``shmring bench ARGS`` in ``tmp`` with its own temporary folder;
    returns the result and the process id (its segments carry it)."""
    scratch = tmp / "tmpdir"
    scratch.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TMPDIR"] = str(scratch)
    proc = subprocess.Popen([sys.executable, "-m", "shmring", "bench", *args], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert list(scratch.iterdir()) == [], "the run's temporary folder was left behind"
    leftovers = [p.name for p in SHM_DIR.iterdir() if p.name.startswith(f"shmring-{proc.pid}-")]
    assert leftovers == [], leftovers
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), proc.pid


@pytest.mark.timeout(60)
def test_quick_run_prints_the_tables_and_draws_a_png(tmp_path: Path) -> None:
    result, _ = _bench("--quick", "--plot", "out.png", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "plot written to out.png" in result.stderr
    out = result.stdout
    for name in OBJECTS:
        assert name in out, f"{name} missing from the report"
    for title in ("Channel:", "Queue:", "Topic:", "Latency:"):
        assert title in out
    # Each row of shmring's objects has its ratio against multiprocessing's.
    for name in ("shmring.Channel", "shmring.Queue", "shmring.Topic"):
        rows = [line for line in out.splitlines() if name in line]
        assert rows and all(re.search(r"\d+\.\d+x", row) for row in rows), rows
    assert re.search(r"p50\s+p99", out)
    assert "skipped iceoryx2" in out
    assert "every message checked: OK" in out

    png = tmp_path / "out.png"
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) < 200 * 1024
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))
    height, width = pixels.shape[:2]
    assert 300 <= height <= 2000 and 400 <= width <= 2000, pixels.shape
    rgb = pixels[..., :3]
    not_white = (rgb < 0.9).any(axis=-1).mean()
    assert 0.01 < not_white < 0.5, f"{not_white:.1%} of the pixels drawn"
    # The curves: shmring's red and at least one other colour.
    reds = ((rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).sum()
    blues = ((rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.3)).sum()
    assert reds > 100 and blues > 100, (reds, blues)


@pytest.mark.timeout(60)
def test_json_has_every_workload_measured_and_checked(tmp_path: Path) -> None:
    result, _ = _bench("--quick", "--json", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["failures"] == []
    sizes = data["settings"]["sizes"]
    assert sizes and data["settings"]["runs"] >= 1
    measured = {(t["workload"], t["subject"]) for t in data["throughput"]}
    for pair in (("channel", "shmring.Channel"), ("channel", "multiprocessing.Pipe"),
                 ("channel", "multiprocessing.Queue"), ("queue", "shmring.Queue"),
                 ("queue", "multiprocessing.Queue"), ("topic", "shmring.Topic"),
                 ("topic", "multiprocessing.Pipe x2")):
        assert pair in measured, pair
    for t in data["throughput"]:
        assert t["size"] in sizes
        assert t["messages_per_s"] > 0 and t["mb_per_s"] > 0 and all(r > 0 for r in t["runs"]), t
        assert t["messages"] > 0 and t["all_checked"], t
        assert t["checked"] == t["messages"] * t["receivers"], t
        assert t["receivers"] == (2 if t["workload"] == "topic" else 1)
    # Every subject has every size, or is listed as skipped.
    for workload, subject in measured:
        assert sorted(t["size"] for t in data["throughput"]
                      if (t["workload"], t["subject"]) == (workload, subject)) == sorted(sizes)
    assert {lat["subject"] for lat in data["latency"]} == {"shmring.Channel", "multiprocessing.Pipe"}
    for lat in data["latency"]:
        assert lat["round_trips"] == data["settings"]["round_trips"]
        assert lat["round_trips_per_s"] > 0 and 0 < lat["min_us"] <= lat["p50_us"] <= lat["p99_us"]
        assert lat["all_checked"] and lat["checked"] == 2 * lat["round_trips"], lat
    assert "iceoryx2" in data["skipped"]
    for peer, module in (("faster_fifo.Queue", "faster_fifo"), ("pyzmq PUB/SUB", "zmq")):
        installed = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0
        assert (peer in data["skipped"]) != installed, (peer, data["skipped"])
        if not installed:
            assert "shmring[bench]" in data["skipped"][peer]


@pytest.mark.timeout(60)
def test_missing_matplotlib_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    # A None entry in sys.modules makes `import matplotlib` raise ImportError.
    code = "import sys; sys.modules['matplotlib'] = None; from shmring.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "bench", "--quick", "--plot", "out.png"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "matplotlib" in result.stderr and "shmring[plot]" in result.stderr
    assert result.stdout == ""  # nothing measured
    assert not (tmp_path / "out.png").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "says"),
    [(["--plot", "out.txt"], "does not end in .png"), (["--plot", "/no/such/folder/out.png"], "no such folder")],
    ids=["not-png", "no-folder"],
)
def test_bad_plot_paths_fail_cleanly(args: list[str], says: str) -> None:
    result = cli("bench", "--quick", *args)
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert says in words(result.stderr)
    assert result.stdout == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "says"), [(["--frobnicate"], "No such option"),
                                            (["--plot"], "requires an argument"),
                                            (["extra"], "unexpected extra argument")],
                         ids=["unknown-option", "plot-without-file", "extra-argument"])
def test_usage_errors(args: list[str], says: str) -> None:
    result = cli("bench", *args)
    assert result.returncode == 2, result.stderr
    assert "Error:" in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.timeout(60)
def test_help_lists_bench_and_the_cli_does_not_import_matplotlib() -> None:
    result = cli("--help")
    assert result.returncode == 0
    assert re.search(r"^\s+bench\s", result.stdout, re.M)
    result = cli("bench", "--help")
    assert result.returncode == 0
    for option in ("--quick", "--plot", "--json", "shmring[plot]"):
        assert option in result.stdout
    code = ("import sys, shmring.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'shmring.selfbench_plot', 'zmq'))))")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_the_readme_shows_the_command_and_its_plot() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme.split("## Measure it on your machine", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```", section, flags=re.S | re.M)
    assert block and "shmring bench --plot bench.png" in block.group(1)
    image = re.search(r"!\[[^\]]*\]\((docs/img/[\w.-]+\.png)\)", section)
    assert image, "the section shows no plot"
    data = (root / image.group(1)).read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) < 100 * 1024
