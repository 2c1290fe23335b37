"""The checkout under test, and how tests run its command: this interpreter and the CLI's
module, as the installed `kvm-fwspec` script does, without depending on PATH."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KVM_FWSPEC = [sys.executable, "-m", "kvm_fwspec.conformance.commands.cli"]
