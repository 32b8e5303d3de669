"""What a multirun does when its last job ends (the Hydra callback of conf/config.yaml `hydra.callbacks`): print the
sweep's table, write its report.html, and set the exit status from the jobs that failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vqa.errors import USER_ERROR_EXIT_STATUS
from vqa.inspection.report import report_at_the_end
from vqa.inspection.sweep_report import STATUS, USER_ERROR, collect_rows, print_sweep_table


class SweepReportAtTheEnd(Callback):
    """The sweep's table and report.html when a multirun ends; exit status 2 when every failed job was the user's
    mistake, 1 when one was a bug."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(f"\nsweep report: {sweep_dir}\n", flush=True)
        collected = collect_rows(sweep_dir)  # once: read again, a damaged metrics.json would be warned about twice
        failed = [row for row in print_sweep_table(sweep_dir, collected=collected) if row[STATUS] == "failed"]
        if config.get("report", True):
            report_at_the_end(sweep_dir, collected=collected)
        if failed:
            print(f"\n{len(failed)} of the sweep's jobs failed (above)", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT_STATUS if all(row[USER_ERROR] for row in failed) else 1)
