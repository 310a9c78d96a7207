"""A stopped train.py run, however it is stopped: earlier results as they were, no process left
running, a true last line, and a non-zero exit status."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
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
