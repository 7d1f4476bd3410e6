"""``genlab <stage> [key=value …] [-m]`` — one entry point, one sub-command per stage.

Configuration is Hydra's: ``experiments/config.yaml`` and its groups, plus overrides.
DVC stages pass ``--config-dir . --config-name params`` so they run exactly the
composition DVC tracks in ``params.yaml`` (``dvc exp run -S …`` rewrites it).

Before any work starts the composed config is validated against ``genlab.config``;
every user-fixable problem (bad key/type/value, missing or corrupt file, NaN loss, an output
folder that cannot be written) ends as one line on stderr — ``genlab: error: <problem> — fix: <fix>`` —
and exit 2; Ctrl-C ends as one line saying how to resume, and exit 130.

Relative ``paths.*`` from the configuration resolve against the project root (the folder holding
``experiments/`` or the ``--config-dir``), wherever genlab runs from; a stage's outputs are renamed into
place together when it succeeds (``genlab.io.outputs_together``).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import tempfile
from pathlib import Path

USAGE = """usage: genlab <command> [key=value ...] [-m] [--config-dir DIR --config-name NAME]

commands (pipeline stages; `dvc repro` runs them in order):
{stages}
utility commands:
{utilities}

examples:
  genlab classifier model.classifier.mlp.epochs=3 logger.wandb.mode=disabled
  genlab classifier -m model.classifier.mlp.width=32,64        # Hydra multirun sweep
  dvc exp run --temp -S experiment=smoke                       # run the smoke preset (a DVC experiment)
"""

UTILITIES = {   # command → (arguments, what it does)
    "show": ("[key=value ...]", "print the composed, validated config (same overrides as a stage)"),
    "params": ("[key=value ...] [--out FILE] [--force]",
               "write the composed config to params.yaml (what DVC tracks; only the default unless --force)"),
    "check-sweep": ("FILE", "validate a wandb sweep file offline (parameters compose into valid configs)"),
    "fit-scaling": ("CSV --n COL (--d COL | --c COL) --loss COL [--drop-highest K] [--bootstrap B]",
                    "fit L(N, D) = E + A/N^α + B/D^β to any runs table, with bootstrap CIs"),
}


def config_dir() -> Path:
    """experiments/ of the checkout: $GENLAB_CONFIG_DIR, ./experiments, or next to the package."""
    for candidate in (os.environ.get("GENLAB_CONFIG_DIR"), Path.cwd() / "experiments",
                      Path(__file__).resolve().parents[2] / "experiments"):
        if candidate and (Path(candidate) / "config.yaml").exists():
            return Path(candidate).resolve()
    sys.exit("genlab: error: no experiments/config.yaml found — fix: run inside the genlab checkout "
             "or set GENLAB_CONFIG_DIR")


def stages(describe: bool = False) -> dict[str, str]:
    """Stage name → first line of its module docstring (imported only when ``describe``)."""
    import genlab.stages

    out = {}
    for info in pkgutil.iter_modules(genlab.stages.__path__):
        if info.name.startswith("_"):
            continue
        doc = (importlib.import_module(f"genlab.stages.{info.name}").__doc__ or "").strip() if describe else ""
        out[info.name] = doc.splitlines()[0] if doc else ""
    return out


def fail(message: str) -> None:
    print(f"genlab: error: {message}", file=sys.stderr)
    sys.exit(2)


def compose(overrides: list[str], primary_dir: Path | None = None, name: str = "config", raw: bool = False):
    """Compose + validate like a run would (without running). Returns a plain DictConfig: the validated
    one, or with ``raw`` Hydra's resolved composition as DVC's Hydra integration writes it to params.yaml."""
    import yaml
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from genlab.config import validate
    from genlab.errors import GenlabError

    try:
        with initialize_config_dir(str(primary_dir or config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=name, overrides=overrides)
    except yaml.YAMLError as e:
        fail(f"a config file is not valid YAML ({' '.join(str(e).split())[:200]}) — fix: repair it, or regenerate "
             "params.yaml with `genlab params`")
    except (HydraException, OmegaConfBaseException) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        if "Could not load 'hydra/launcher/submitit_" in lines[0]:   # the plugin registers these configs
            fail(f"{lines[0]} (the submitit launcher plugin is not installed) — fix: pip install "
                 "hydra-submitit-launcher")
        if lines[0].startswith("Could not override '"):   # not in the composition: unknown to the schema too?
            key = lines[0].split("'")[1]
            try:
                validate(OmegaConf.from_dotlist([f"{key}=0"]))
            except GenlabError as err:
                if str(err).startswith("unknown config key"):
                    fail(str(err))
            fail(f"'{key}' is not in the composed config — fix: add it with +{key}=…, or check `genlab show`")
        # "Available options in 'trainer':" is followed by one option per line: keep them on the line
        if len(lines) > 1 and lines[1].startswith("Available options"):
            lines = [lines[0], f"{lines[1]} {', '.join(lines[2:]) or '(none)'}"]
        fail(f"{' / '.join(lines[:2])} — fix: check the override against `genlab show` "
             "(append a new key with +key=value)")
    try:
        validated = validate(cfg)
    except GenlabError as e:
        fail(str(e))
    if raw:
        OmegaConf.resolve(cfg)
        return cfg
    return validated


def sweep_points(overrides: list[str]) -> list[list[str]]:
    """Override lists that together touch every value of every swept key (one key varied at a time):
    ``a=1,2 b=x,y`` → ``[a=1 b=x], [a=2 b=x], [a=1 b=y]`` — enough to validate a sweep before launching it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        fail(f"sweep override does not parse: {str(e).splitlines()[0]} — fix: use key=a,b or key=range(1,4)")
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [raw]
               for raw, o in zip(overrides, parsed)]
    base = [c[0] for c in choices]
    return [base] + [base[:i] + [v] + base[i + 1:] for i, c in enumerate(choices) for v in c[1:]]


def _split(argv: list[str]) -> tuple[list[str], list[str], bool]:
    """(hydra flags, overrides, multirun?) from argv after the command."""
    flags, overrides, multirun, i = [], [], False, 0
    while i < len(argv):
        a = argv[i]
        if a in ("-m", "--multirun"):
            multirun = True
        elif a in ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp"):
            flags += [a, argv[i + 1]]
            i += 1
        elif a.startswith(("--config-dir=", "--config-name=", "--config-path=")):
            flags.append(a)
        else:
            overrides.append(a)
        i += 1
    return flags, overrides, multirun


def _flag(flags: list[str], long: str, short: str) -> str | None:
    for i, f in enumerate(flags):
        if f in (long, short):
            return flags[i + 1]
        if f.startswith(long + "="):
            return f.split("=", 1)[1]
    return None


def sweep_paths(cfg, stage: str):
    """In a multirun, give each job its own outputs (under its Hydra job dir) and one wandb group.

    Datasets stay shared; models/checkpoints/reports/logs go to ``<sweep dir>/<job>/``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return cfg
    job_dir = Path(hc.runtime.output_dir)
    cfg.paths.data = str(Path(cfg.paths.data).resolve())
    for key in ("models", "checkpoints", "reports", "logs"):
        cfg.paths[key] = str(job_dir / key)
    cfg.logger.wandb.group = cfg.logger.wandb.group or f"{stage}-sweep-{Path(hc.sweep.dir).name}"
    return cfg


PATH_KEYS = ("data", "models", "checkpoints", "reports", "logs")
OUTPUT_KEYS = ("models", "checkpoints", "reports", "logs")   # what every stage may write (prepare: data too)


def project_root(extra_dir: str | None) -> Path:
    """The folder relative ``paths.*`` belong to: the ``--config-dir`` (DVC passes ``.``, holding
    params.yaml), else the parent of the ``experiments/`` in use."""
    return Path(extra_dir).resolve() if extra_dir else config_dir().parent


def anchor_paths(cfg, overrides: list[str], root: Path):
    """Relative ``paths.*``: those typed on the command line stay relative to the current directory
    (made absolute), the configuration's own resolve against the project ``root``. Returns the keys
    moved to ``root`` (empty when running in ``root``)."""
    here = Path.cwd().resolve()
    typed = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    moved = []
    for key in PATH_KEYS:
        value = Path(cfg.paths[key])
        if value.is_absolute():
            continue
        if f"paths.{key}" in typed or here == root:
            cfg.paths[key] = str(here / value)
        else:
            cfg.paths[key] = str(root / value)
            moved.append(key)
    return moved


def writable_dir(folder: Path) -> bool:
    """Whether ``folder`` could be created and written (probes its nearest existing ancestor; creates nothing)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


CACHE_ENV = {   # where libraries keep caches/config under HOME, and the folder name used instead
    "MPLCONFIGDIR": "matplotlib", "WANDB_CONFIG_DIR": "wandb-config", "WANDB_CACHE_DIR": "wandb-cache",
    "WANDB_DATA_DIR": "wandb-data", "XDG_CACHE_HOME": "xdg-cache", "XDG_CONFIG_HOME": "xdg-config",
    "TORCH_HOME": "torch", "TRITON_CACHE_DIR": "triton",
}


def home_fallback(logs: Path) -> None:
    """With a HOME that cannot be written (a read-only or missing home), give matplotlib, wandb, torch…
    their cache and config folders under ``<logs>/home-cache`` (or the temp dir), instead of letting each
    library print its own warnings about it. Variables the user set are kept."""
    home = Path(os.environ.get("HOME") or Path.home())
    if writable_dir(home / ".cache") and writable_dir(home / ".config"):
        return
    base = logs.absolute() / "home-cache"
    if not writable_dir(base):
        base = Path(tempfile.gettempdir()) / f"genlab-home-cache-{os.getuid()}"
    for var, name in CACHE_ENV.items():
        if not os.environ.get(var):
            (base / name).mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(base / name)


def interrupted() -> None:
    print("genlab: error: interrupted (Ctrl-C) — fix: re-run the same command to resume from the run's last "
          "checkpoint", file=sys.stderr)
    sys.exit(130)


def run_stage(stage: str, argv: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from genlab.config import validate
    from genlab.errors import GenlabError

    flags, overrides, multirun = _split(argv)
    extra_dir, name = _flag(flags, "--config-dir", "-cd"), _flag(flags, "--config-name", "-cn") or "config"
    # fail fast, as one line, before Hydra starts a run (a sweep: every swept value)
    for point in sweep_points(overrides) if multirun else [overrides]:
        first = compose(point, Path(extra_dir).resolve() if extra_dir else None, name)
    root = project_root(extra_dir)
    moved = anchor_paths(first, overrides, root)
    if moved:
        print(f"[genlab] running outside the project: paths.{{{','.join(moved)}}} resolve against {root}")
    # before torch/matplotlib/wandb are imported: they read these once
    home_fallback(Path(first.paths.logs))
    from genlab.io import check_writable, outputs_together
    from genlab.quiet import quiet_logs
    from genlab.runner import seed_all
    from genlab.tracking import wandb_environment
    wandb_environment(first.logger.wandb.mode)
    module = importlib.import_module(f"genlab.stages.{stage}")

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def task(cfg: DictConfig) -> None:
        quiet_logs()
        try:
            cfg = validate(OmegaConf.to_container(cfg, resolve=True))
            anchor_paths(cfg, overrides, root)
            cfg = sweep_paths(cfg, stage)
            # a read-only reports/ must stop the run now, not after training replaced models/
            check_writable(*(cfg.paths[k] for k in (("data",) if stage == "prepare" else ()) + OUTPUT_KEYS))
            # torch's start-up seed is random: seed before the stage builds anything (networks made
            # before a training run's own seed_all would otherwise differ from process to process)
            seed_all(cfg)
            # Lightning's DDP launcher re-runs `sys.argv` once per extra rank: give it the real command
            sys.argv = [argv0, stage, *sys.argv[1:]]
            with outputs_together():   # a stage that fails half-way replaces none of its outputs
                module.run(cfg)
        except GenlabError as e:
            fail(str(e))
        except KeyboardInterrupt:
            interrupted()

    logs = Path(first.paths.logs)   # Hydra's own run folders go with the logs (absolute: not into the cwd)
    defaults = [f"hydra.run.dir={logs}/hydra/{stage}/${{now:%Y-%m-%d_%H-%M-%S}}",
                f"hydra.sweep.dir={logs}/multirun/{stage}/${{now:%Y-%m-%d_%H-%M-%S}}",
                f"hydra.job.name={stage}"]
    given = {o.split("=", 1)[0] for o in overrides}
    argv0 = sys.argv[0]   # Hydra parses sys.argv[1:] as its own arguments: the stage is put back in `task`
    sys.argv = [argv0, *flags, *(["-m"] if multirun else []),
                *[d for d in defaults if d.split("=", 1)[0] not in given], *overrides]
    task()


def utility_line(command: str, args: str, what: str) -> str:
    """``  command args   what`` in two columns; a long synopsis puts the description on its own line."""
    head = f"  {command} {args}"
    return f"{head:<34}{what}" if len(head) < 34 else f"{head}\n{'':<34}{what}"


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(stages="\n".join(f"  {k:<18}{v}" for k, v in stages(describe=True).items()),
                           utilities="\n".join(utility_line(k, a, d) for k, (a, d) in UTILITIES.items())))
        return
    command, rest = argv[0], argv[1:]
    if command == "fit-scaling":                 # its own argparse --help lists every option
        from genlab.errors import GenlabError
        from genlab.scaling_cli import main as fit_scaling

        try:
            sys.exit(fit_scaling(rest))
        except GenlabError as e:
            fail(str(e))
    if command in UTILITIES and any(a in ("-h", "--help") for a in rest):
        args, what = UTILITIES[command]
        print(f"usage: genlab {command} {args}\n{what}")
        return
    if command == "check-sweep":
        from genlab import sweeps
        from genlab.errors import GenlabError

        if len(rest) != 1:
            fail("check-sweep takes one sweep file — fix: genlab check-sweep experiments/sweeps/<file>.yaml")
        try:
            n = sweeps.check(rest[0], compose)
        except GenlabError as e:
            fail(str(e))
        print(f"[genlab] {rest[0]}: {n} parameter values compose into valid configs")
        return
    if command in ("show", "params"):
        from omegaconf import OmegaConf

        force, out = "--force" in rest, None
        rest = [a for a in rest if a != "--force"]
        if "--out" in rest:
            i = rest.index("--out")
            if i + 1 == len(rest):
                fail("--out needs a file — fix: genlab params [key=value ...] --out FILE")
            out, rest = rest[i + 1], rest[:i] + rest[i + 2:]
        flags, overrides, _ = _split(rest)
        extra_dir = _flag(flags, "--config-dir", "-cd")
        where = (Path(extra_dir).resolve() if extra_dir else None, _flag(flags, "--config-name", "-cn") or "config")
        cfg = compose(overrides, *where, raw=command == "params")
        text = OmegaConf.to_yaml(cfg)
        if command == "show":
            print(text, end="")
        else:
            from genlab.io import atomic_write
            # the tracked params.yaml holds the default composition (tests and `dvc status` rely on it):
            # a preset or override goes to a DVC experiment, another file, or needs --force
            if out is None and not force and overrides and cfg != compose([], *where, raw=True):
                fail(f"`genlab params {' '.join(overrides)}` would rewrite the tracked params.yaml with a "
                     f"non-default config — fix: run it as a DVC experiment, which leaves params.yaml alone: "
                     f"dvc exp run --temp {' '.join('-S ' + o for o in overrides)} (or write another file with "
                     "--out FILE, or overwrite params.yaml anyway with --force)")
            atomic_write(out or "params.yaml", lambda fh: fh.write(text), mode="w")
            print(f"[genlab] wrote {out or 'params.yaml'}")
        return
    available = stages()
    if command not in available:
        fail(f"unknown command '{command}' — fix: use one of {', '.join([*available, *UTILITIES])}")
    if any(a in ("-h", "--help") for a in rest):
        print(importlib.import_module(f"genlab.stages.{command}").__doc__)
        print(f"overrides: key=value (see `genlab show`); sweeps: genlab {command} -m key=a,b")
        return
    try:
        run_stage(command, rest)
    except KeyboardInterrupt:   # before or after the stage itself (imports, Hydra start-up)
        interrupted()


if __name__ == "__main__":
    main()
