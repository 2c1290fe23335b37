"""Inside the guest host: install kvm-fwspec the way a user of an arm64 machine would, and run
`kvm-fwspec certify --adapter kvm` from that install; then send what happened to the harness.

The harness brings the wheels (kvm-fwspec's own and its dependencies', built for aarch64, and
pip's) under /wheels, since the guest has no network. Here they are installed into a fresh
virtual environment with pip, offline, and the installed command certifies this machine's
real KVM in-process, with the kernel and host it reports. One JSON line goes back over the
agent's virtio-serial port: each step's command, exit status, output tail and seconds, and the
results file the certification wrote. Stdlib only: this runs on the guest's own Python, before
anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VENV = Path("/tmp/venv")
REPORT = Path("/tmp/report")
DUMP = Path("/tmp/vm.json")
FINGERPRINT = Path("/tmp/host.json")
OUTPUT_KEPT = 4000  # characters of each step's output sent back


def steps(wheels: Path) -> list[list[str]]:
    """A user's commands: a virtual environment, pip install from the wheels, then certify,
    dump and fingerprint this machine's KVM with the installed command."""
    pip = next(wheels.glob("pip-*.whl"))
    install = ["install", "--no-index", "--find-links", str(wheels), "--no-compile"]
    certify = ["certify", "--adapter", "kvm", "--kernel", "auto", "--host", "auto"]
    command = str(VENV / "bin/kvm-fwspec")
    return [
        [sys.executable, "-m", "venv", "--without-pip", str(VENV)],
        [str(VENV / "bin/python"), f"{pip}/pip", *install, "kvm-fwspec"],
        [command, *certify, "--require-all", "--quiet", "--report", str(REPORT)],
        [command, "dump", *certify[1:], "--output", str(DUMP)],
        [command, "fingerprint", *certify[1:], "--output", str(FINGERPRINT)],
    ]


def run(wheels: Path) -> dict[str, Any]:
    # The guest's own agent modules are on PYTHONPATH for this script; the installed command
    # must import only what pip installed.
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    }
    done: list[dict[str, Any]] = []
    for command in steps(wheels):
        started = time.monotonic()
        finished = subprocess.run(command, capture_output=True, text=True, env=env)
        output = finished.stdout + finished.stderr
        done.append({"command": command, "exit": finished.returncode,
                     "output": output[-OUTPUT_KEPT:], "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
        if finished.returncode not in (0, 1):  # 1: certified, not conforming; still a report
            break
    written = {"results": REPORT / "results.json", "dump": DUMP, "fingerprint": FINGERPRINT}
    return {"steps": done} | {
        name: path.read_text() if path.is_file() else None for name, path in written.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", required=True)
    parser.add_argument("--wheels", type=Path, required=True)
    args = parser.parse_args()
    try:
        outcome = run(args.wheels)
    except Exception as exc:  # the harness reads one line whatever happens here
        outcome = {"steps": [], "error": f"{type(exc).__name__}: {exc}"}
    with open(args.port, "w", encoding="utf-8") as port:
        port.write(json.dumps(outcome) + "\n")


if __name__ == "__main__":
    main()
