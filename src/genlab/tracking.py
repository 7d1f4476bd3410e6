"""Experiment tracking: the CSV and wandb loggers of every training run, and wandb's global settings.

wandb is ``offline`` by default and then never touches the network, telemetry included
(``wandb_environment`` must run before ``import wandb``). An ``online`` run is refused at once, as one
line, when the server cannot be reached or the key is rejected. A resumed run appends to its CSV log.
"""
from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf

from genlab.errors import GenlabError


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def has_wandb_credentials() -> bool:
    """An API key in the environment or in ``~/.netrc`` (where ``wandb login`` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


# wandb's own telemetry (an OpenTelemetry exporter thread in this process, error reporting in its
# service process) reads the environment, not ``wandb.init(mode=…)``: an "offline" run still looked up
# and posted to wandb's analytics host. Every process that may import wandb sets these first.
OFFLINE_ENV = {"WANDB_ERROR_REPORTING": "false", "WANDB_DISABLE_CODE": "true", "WANDB_DISABLE_GIT": "true"}
ONLINE_INIT_TIMEOUT = 30   # seconds wandb.init may take online before genlab gives up (wandb's default: 90)


def wandb_environment(mode: str) -> None:
    """Put wandb's global settings in the environment for a run in ``mode`` (offline, disabled, online).

    Call before ``import wandb``: offline and disabled runs get ``WANDB_MODE`` and no telemetry or
    error reports, so nothing leaves the machine; an online run gets ``WANDB_MODE=online``.
    """
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    if mode != "online":
        os.environ.update(OFFLINE_ENV)


def wandb_args(cfg: DictConfig, stage: str, name: str, *tags: str) -> dict:
    """``wandb.init`` arguments shared by every genlab run: grouped by stage (or sweep), tagged with
    the stage and git sha, the full config as a plain dict. Creates ``<logs>/wandb``."""
    wb = cfg.logger.wandb
    (Path(cfg.paths.logs) / "wandb").mkdir(parents=True, exist_ok=True)
    wandb_environment(wb.mode)
    args = dict(project=wb.project, entity=wb.entity, group=wb.group or stage, mode=wb.mode, name=name,
                job_type=stage, dir=str(cfg.paths.logs), tags=[stage, f"git:{git_sha()}", *tags, *wb.tags],
                config=OmegaConf.to_container(cfg, resolve=True))
    if wb.mode == "online":   # fail within a bounded time (a bad key or no route otherwise stalls, then a traceback)
        probe_wandb_server()
        import wandb
        args["settings"] = wandb.Settings(init_timeout=ONLINE_INIT_TIMEOUT)
    return args


def probe_wandb_server(timeout: float = 5.0) -> None:
    """Refuse at once a wandb server that does not accept connections (wandb.init would retry until its
    timeout). Skipped behind a proxy, where only the proxy can tell."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return
    url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise GenlabError(f"logger.wandb.mode=online but the wandb server {url} cannot be reached "
                          f"({getattr(e, 'strerror', None) or e})",
                          "check the network and WANDB_BASE_URL, or use logger=wandb_offline "
                          "(sync later with `wandb sync`)") from None


def wandb_init_failed(e: BaseException, mode: str) -> GenlabError:
    """A failed ``wandb.init`` as one line (online: unreachable server, rejected key, timeout)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    why = lines[0][:200] if lines else type(e).__name__
    return GenlabError(f"wandb ({mode}) could not start a run: {why}",
                       "check `wandb login` / WANDB_API_KEY and the network (WANDB_BASE_URL), "
                       "or use logger=wandb_offline")


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger, except that a resumed run keeps the rows logged before its resume point
    (Lightning deletes ``metrics.csv`` whenever the version folder exists). ``fit`` sets
    ``resume_step`` before the first row is logged; otherwise the file starts afresh."""

    resume_step: int | None = None

    @property
    def experiment(self):
        if self._experiment is None:
            self._experiment = _Writer(self.log_dir, self.resume_step)
        return self._experiment


class _Writer(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None):
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self.resume_step is None or not path.is_file():
            path.unlink(missing_ok=True)
            return
        with open(path, newline="") as fh:   # keep what was logged before the checkpoint the run resumes from
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") and float(r["step"]) < self.resume_step]
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


def loggers(cfg: DictConfig, stage: str, run: str, run_hash: str) -> list[Logger]:
    out: list[Logger] = []
    if cfg.logger.csv:
        out.append(ResumableCSVLogger(Path(cfg.paths.logs) / "csv", name=stage, version=f"{run}-{run_hash}"))
    if cfg.logger.wandb.mode != "disabled":
        args = wandb_args(cfg, stage, f"{stage}/{run}", f"cfg:{run_hash}")
        log = WandbLogger(save_dir=args.pop("dir"), **args)
        log._wandb_init.pop("anonymous", None)   # Lightning always passes it; wandb warns that it has no effect
        out.append(log)
    return out


def start_loggers(logs: list[Logger], mode: str) -> None:
    """Start the wandb run now (Lightning would on the first logged step, mid-fit): a failure is one line
    before any training, not a traceback from inside it."""
    for log in logs:
        if isinstance(log, WandbLogger) and rank_zero_only.rank == 0:
            import wandb
            try:
                log.experiment
            except wandb.Error as e:   # CommError (unreachable, rejected key, init timeout), UsageError…
                raise wandb_init_failed(e, mode) from None


def finish_loggers(logs: list[Logger]) -> None:
    """Close wandb runs (also on failure) so sweep jobs never share a run."""
    for log in logs:
        if isinstance(log, WandbLogger):
            import wandb
            wandb.finish()
