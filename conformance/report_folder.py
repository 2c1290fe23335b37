"""A report folder holds one run's evidence or none: a run writes into a staging folder beside
it, and only a run that completed replaces the report's files. An earlier run's results.json
can then never be read, or published, as this run's."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from kvm_fwspec.spec.errors import UsageError

RESULTS = "results.json"
SIGNATURE = "results.json.sig"
# The files a run owns in its report folder. results.json goes last on publishing (and first
# on removal), so a reader that finds it finds the rest of the same run beside it.
REPORT_FILES = ("results.junit.xml", "report.html", SIGNATURE, RESULTS)


class ReportFolder:
    """The report folder a run will publish to, checked before the run starts."""

    def __init__(self, target: Path) -> None:
        self.target = target
        if target.exists() and not target.is_dir():
            raise UsageError(f"--report {target}: is a file; a report is a folder")
        blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise UsageError(f"--report {target}: {blocking} is a file, not a folder")
        for name in REPORT_FILES:
            if (target / name).exists() and not (target / name).is_file():
                raise UsageError(f"--report {target}: {name} there is not a file")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.run-", dir=target.parent))
        except OSError as exc:
            raise UsageError(
                f"--report {target}: cannot write beside it: {exc.strerror or exc}"
            ) from None

    def publish(self) -> None:
        """Replace the report's files with the staged ones; files the run did not write (a
        signature of an earlier run) are removed, others in the folder are left alone."""
        try:
            self.target.mkdir(exist_ok=True)
            for name in reversed(REPORT_FILES):
                (self.target / name).unlink(missing_ok=True)
            for name in REPORT_FILES:
                if (self.staging / name).is_file():
                    os.replace(self.staging / name, self.target / name)
        except OSError as exc:
            raise UsageError(
                f"--report {self.target}: cannot publish the report: {exc.strerror or exc}"
            ) from None
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staging folder and whatever an unfinished run left in it."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.staging)
