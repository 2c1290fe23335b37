"""Judgements over the spec and evidence: migration checking, register dumps and the VMM
judge and report. They use the conformance core, never the lab that gathers evidence."""
