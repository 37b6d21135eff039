"""Every ``--help`` of ccsim: defaults beside each option, the exit codes and an example."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["EXIT_CODES", "HelpFormatter", "command_help"]

EXIT_CODES = """\
exit codes: 0 ok; 1 a ledger invariant or the reconciliation failed (verify: a figure differs);
2 bad input, nothing written; 3 an SLO was breached; 130 interrupted (Ctrl-C); 141 the output pipe
was closed (ccsim … | head)."""


def command_help(example: str, exit_codes: str = EXIT_CODES) -> dict[str, Any]:
    """A subcommand's help: defaults shown beside each option, the exit codes and an example."""
    return {"epilog": f"{exit_codes}\n\nexample:\n  {example}", "formatter_class": HelpFormatter}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults beside each option (unless its help says it in words); the epilog kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default in (None, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
