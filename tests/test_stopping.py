"""A stopped train.py run, however it is stopped: earlier results as they were, no process left
running, a true last line, and a non-zero exit status."""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT

SENTINEL = '{"earlier": "results"}\n'


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start(args: list[str], out: Path, processes: int) -> tuple[subprocess.Popen, list[int]]:
    """train.py in a session of its own, once its ``processes`` children train."""
    proc = subprocess.Popen([sys.executable, "train.py", *args, "--out", str(out)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(children(proc.pid)) < processes and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.5)  # well into training
    kids = children(proc.pid)
    assert len(kids) >= processes and proc.poll() is None, proc.communicate()
    return proc, kids


WAYS = {  # how the run is stopped -> what its last line must say
    "SIGINT to train.py": "stopped by SIGINT",
    "SIGTERM to train.py": "stopped by SIGTERM",
    "Ctrl-C to the process group": "stopped by SIGINT",
    "a worker killed": "was killed by SIGKILL",
}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the child processes")
@pytest.mark.parametrize("pool", [False, True], ids=["--nproc 2", "worker pool"])
@pytest.mark.parametrize("way", WAYS)
def test_a_stopped_run_changes_nothing(way, pool, tmp_path):
    out = tmp_path / "out"
    if pool:  # two runs side by side in a pool of two worker processes
        args, written = ["--ranges", "5", "--models", "plain", "--seeds", "0", "1", "--epochs", "2000"], out
    else:  # one run in a group of two processes
        args, written = ["ddp", "--ranges", "5", "--models", "my_bn", "--seeds", "0", "--epochs", "2000"], out / "ddp"
    written.mkdir(parents=True)
    (written / "results.json").write_text(SENTINEL)
    proc, kids = start([*args, "--workers", "2"], out, processes=2)
    if way == "SIGINT to train.py":
        proc.send_signal(signal.SIGINT)
    elif way == "SIGTERM to train.py":
        proc.send_signal(signal.SIGTERM)
    elif way == "Ctrl-C to the process group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(kids[-1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not [pid for pid in kids if running(pid)], "a child process is still running"
    assert (written / "results.json").read_text() == SENTINEL and list(written.iterdir()) == [written / "results.json"]
    expected = "a worker process died" if pool and way == "a worker killed" else WAYS[way]
    last = stderr.strip().splitlines()[-1]
    assert expected in last and "nothing else written; earlier results are as they were" in last, stderr
    assert "wrote" not in stdout, stdout
    if way != "a worker killed":  # there the others may report, above, that they lost it
        assert "Traceback" not in stderr, stderr


def test_waiting_for_a_group_whose_last_process_ends_between_two_looks():
    """A process that ends just after the loop has looked at it: the wait must not be handed an empty
    list of processes (it then blocks forever), and returns once every process has ended."""
    import os
    import threading

    import train

    class EndsWhenLookedAt:
        def __init__(self):
            self.read, write = os.pipe()
            os.close(write)  # a closed pipe is readable at once, like the sentinel of an ended process
            self.sentinel, self.looks = self.read, 0

        @property
        def exitcode(self):
            self.looks += 1
            return None if self.looks == 1 else 0  # running at the first look, gone at every later one

    group = [EndsWhenLookedAt()]
    done = threading.Event()
    thread = threading.Thread(target=lambda: (train.wait_for_group(group, "test"), done.set()), daemon=True)
    thread.start()
    assert done.wait(timeout=10), "wait_for_group blocked"
    os.close(group[0].read)


# ---------------------------------------------------------------------------------------------- compare.py, a full disk


@pytest.fixture(scope="module")
def small_results(tmp_path_factory) -> Path:
    """A main experiment small enough to train in a second, with its diagnostics (four figures)."""
    import train

    out = tmp_path_factory.mktemp("results")
    assert train.main(["--ranges", "1", "--models", "plain", "--seeds", "0", "--epochs", "1", "--out", str(out)]) == 0
    return out


def drawing_setup(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A figure folder with one old figure, a README with the main tables' markers, and compare.py's
    arguments for them."""
    pictures, readme = tmp_path / "picture", tmp_path / "README.md"
    pictures.mkdir()
    (pictures / "old.png").write_bytes(b"old")
    tables = ("results-table", "saturation-table")
    readme.write_text("".join(f"<!-- {name}:start -->\nstale\n<!-- {name}:end -->\n" for name in tables))
    return pictures, readme, ["--pictures", str(pictures), "--readme", str(readme)]


def unchanged(pictures: Path, readme: Path) -> bool:
    return [p.name for p in pictures.iterdir()] == ["old.png"] and "stale" in readme.read_text()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the child processes")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stopped_compare_leaves_figures_and_readme_as_they_were(sig, small_results, tmp_path):
    """Stopped while it draws, compare.py ends its drawing processes, removes its temporary folder, and
    says so in one line, under SIGINT and SIGTERM alike."""
    pictures, readme, args = drawing_setup(tmp_path)
    command = [sys.executable, "compare.py", "--results", str(small_results), *args]
    proc = subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(pictures.glob(".drawing-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    kids = children(proc.pid)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "wrote" not in stdout, stdout
    last = stderr.strip().splitlines()[-1]
    assert last == f"stopped by {sig.name}: the figures and tables it was writing are as they were"
    assert "Traceback" not in stderr, stderr
    assert unchanged(pictures, readme) and sorted(tmp_path.iterdir()) == sorted([pictures, readme])
    assert not [pid for pid in kids if running(pid)], "a drawing process is still running"


def test_drawing_touches_nothing_beside_the_figure_folder(tmp_path):
    """Figures are drawn in a folder inside the figure folder, so that its parent, which may be
    read-only, is never written."""
    import compare

    pictures = tmp_path / "picture"
    pictures.mkdir()
    seen = []
    todo = {"a.png": lambda out: (seen.append(sorted(p.name for p in tmp_path.iterdir())), out.write_bytes(b"a"))}
    compare.write_pictures(todo, pictures)
    assert seen == [["picture"]] and [p.name for p in pictures.iterdir()] == ["a.png"]


def test_a_readme_that_cannot_be_written_is_refused_before_drawing(small_results, tmp_path):
    pictures, readme, args = drawing_setup(tmp_path)
    blocked = tmp_path / "a file"
    blocked.write_text("")
    for target in (blocked / "README.md", pictures):  # under a file; a folder, not a file
        command = [sys.executable, "compare.py", "--results", str(small_results), *args[:2], "--readme", str(target)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        lines = [line for line in done.stderr.splitlines() if not line.startswith("note:")]
        assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert unchanged(pictures, readme)


def fill_disk_at(limit: int):
    """For a child process: writing past ``limit`` bytes of a file fails (EFBIG) as a full disk does
    (ENOSPC), with an OSError from the write."""

    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_writes


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_a_full_disk_ends_each_script_in_one_line_and_keeps_the_old_files(small_results, tmp_path):
    pictures, readme, args = drawing_setup(tmp_path)
    done = subprocess.run([sys.executable, "compare.py", "--results", str(small_results), *args], cwd=ROOT,
                          capture_output=True, text=True, preexec_fn=fill_disk_at(20_000))
    lines = [line for line in done.stderr.splitlines() if not line.startswith("note:")]
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"compare.py: cannot write {pictures}/") and ".png (File too large)" in lines[0]
    tidy = small_results / "results.csv"  # the results as tidy data, which it writes beside them
    assert lines[0].endswith(f"{pictures}/ and {readme} and the data beside the results in {small_results}/ are as "
                             "they were") and unchanged(pictures, readme)
    assert not list(tmp_path.rglob(".*.tmp")) and not tidy.exists()

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(SENTINEL)
    argv = ["--ranges", "1", "--models", "plain", "--seeds", "0", "--epochs", "1", "--out", str(out)]
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=fill_disk_at(2_000))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"cannot write {out / 'results.json'} (File too large): nothing else written; earlier results are as they were"
    )
    assert list(out.iterdir()) == [out / "results.json"] and (out / "results.json").read_text() == SENTINEL
