"""``python -m jaxlearn`` (also installed as ``jaxlearn``): run, list, show, resume, plot, clean,
experiments, fields, new-experiment, tensorboard."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import pathlib
import shutil
import sys

from jaxlearn.runner import config as cfg
from jaxlearn.runner import configfile as cfgfile
from jaxlearn.runner import store
from jaxlearn.runner.distributed import is_writer
from jaxlearn.runner.experiment import list_experiments, load_experiment
from jaxlearn.runner.launch import LaunchError, check_options
from jaxlearn.runner.plan import FINAL_STATUSES, GROUPS_DIR, Group, is_final, read_status, stored_group, stored_run
from jaxlearn.runner.results import load
from jaxlearn.runner.sinks import KNOWN_SINKS, LOG_ENV, log_sweep_plots, sink_names
from jaxlearn.runner.tables import FORMATS, render

__all__ = ["main"]

SWEEPS_DIR = "_sweeps"

EPILOG = {
    "run": "examples:\n"
           "  jaxlearn run configs/population_digits.yaml\n"
           "  jaxlearn run configs/population_digits.yaml --variant smoke\n"
           "  jaxlearn run configs/population_digits.yaml --set num_steps=500 --sweep learning_rate=log:1e-3:1:5 "
           "--sweep seed=0,1,2\n"
           "  jaxlearn run configs/population_digits.yaml --sweep learning_rate=0.01,0.1 --sweep seed=3,4 --zip\n"
           "  jaxlearn run configs/population_digits.yaml --sweep learning_rate=log:1e-4:1:0 --random 16\n"
           "  jaxlearn run configs/population_digits.yaml --launcher ray                    "
           "(groups as Ray tasks; local Ray)\n"
           "  jaxlearn run configs/population_digits.yaml --launcher ray --address auto     (an existing Ray cluster)\n"
           "  jaxlearn run configs/population_digits.yaml --launcher slurm --launcher-opt slurm_partition=gpu "
           "--launcher-opt gpus_per_node=1 --launcher-opt timeout_min=120\n"
           "  srun jaxlearn run configs/population_digits.yaml --distributed                 "
           "(one task per host: one job over all hosts' devices)\n"
           "  jaxlearn run configs/population_digits.yaml --log tensorboard,mlflow          "
           "(live tracking; then: jaxlearn tensorboard runs)\n"
           "sweep values: v1,v2,...  |  lin:START:STOP:NUM  |  log:START:STOP:NUM  (--random samples inside ranges)",
    "ls": "examples:\n  jaxlearn ls\n  jaxlearn ls --experiment population_digits --status finished\n"
          "  jaxlearn ls --rebuild        (index.sqlite lost or copied between machines)",
    "show": "examples:\n  jaxlearn show 3fa2c1\n  jaxlearn show population_digits/3fa2c1d0e5b6a7c8",
    "resume": "examples:\n  jaxlearn resume 3fa2c1      (re-running the same `run` command resumes too)",
    "plot": "examples:\n  jaxlearn plot 3fa2c1          (one run)\n"
            "  jaxlearn plot sweep:9b1e0f2a  (a sweep, id printed by `run`)\n"
            "  jaxlearn plot population_digits (every run of an experiment)",
    "clean": "examples:\n  jaxlearn clean                 (failed and interrupted runs, stale checkpoints)\n"
             "  jaxlearn clean --experiment population_digits --all --yes",
    "experiments": "examples:\n  jaxlearn experiments",
    "fields": "examples:\n  jaxlearn fields population_digits\n"
              "  jaxlearn fields configs/edge_of_stability.yaml --variant smoke   (+ the values the file sets)\n"
              "  jaxlearn fields population_digits --format json\n"
              "static fields change the compiled program (one group per value); dynamic ones can be swept\n"
              "inside one vmapped program. Set them with --set FIELD=VALUE, sweep with --sweep FIELD=VALUES.",
    "tensorboard": "examples:\n  jaxlearn tensorboard               (TensorBoard on runs/: scalars live, HParams)\n"
                   "  jaxlearn tensorboard runs/teacher_student --port 6007\n"
                   "needs the tensorboard package: pip install 'jaxlearn[tensorboard]'",
    "new-experiment": "examples:\n"
                      "  jaxlearn new-experiment my_study      (experiments/my_study.py, configs/my_study.yaml,\n"
                      "                                        tests/experiments/test_my_study.py)\n"
                      "  jaxlearn run configs/my_study.yaml --variant smoke --check",
}


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1 (else argparse's one-line usage error names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value


def _add_format_option(p, what: str) -> None:
    p.add_argument("--format", choices=FORMATS, default="table",
                   help=f"{what}: an aligned table (default), CSV or JSON for scripts (other messages go to stderr)")


def _add_device_options(p) -> None:
    """--devices, --distributed and --log, shared by `run` and `resume`."""
    p.add_argument("--devices", type=_positive_int, default=None, metavar="N",
                   help="shard each group's runs over at most N local devices (default: all)")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-host job first (jax.distributed; settings from JAXLEARN_* or SLURM "
                        "variables, else JAX's cluster detection); every host runs the same command")
    p.add_argument("--log", default=None, metavar="SINKS",
                   help=f"live tracking sinks, comma-separated: {', '.join(KNOWN_SINKS)}, or none "
                        f"(default: ${LOG_ENV}, else tensorboard); mlflow and wandb need "
                        "pip install 'jaxlearn[mlflow]' / 'jaxlearn[wandb]'")


def _parser(run_fields: str = "") -> argparse.ArgumentParser:
    """The argument parser; ``run_fields`` (the fields of a config file's experiment) is appended to
    ``run --help``."""
    parser = argparse.ArgumentParser(prog="jaxlearn", description="jaxlearn experiment runner",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="run `jaxlearn COMMAND --help` for examples")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text):
        epilog = EPILOG[name] + (f"\n\n{run_fields}" if name == "run" and run_fields else "")
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--out", default="runs", help="run root directory (default: runs)")
        return p

    p = command("run", "run a config file's sweep (finished runs are skipped)")
    p.add_argument("config", help="a YAML config file, or a study's name (its configs/NAME.yaml here, else the "
                                  "one installed with jaxlearn)")
    p.add_argument("--variant", default="default", help="named variant of the config file (e.g. smoke, paper)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value")
    p.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="KEY=VALUES", help="add a sweep axis")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--zip", action="store_true", help="pair the axes elementwise instead of a grid")
    mode.add_argument("--random", type=int, metavar="N", help="sample N random points of the axes")
    p.add_argument("--seed", type=int, default=0, help="seed of --random sampling")
    p.add_argument("--force", action="store_true", help="recompute finished runs")
    p.add_argument("--max-group-size", type=int, default=None, help="at most this many runs per vmapped program")
    p.add_argument("--no-plot", action="store_true", help="skip the plots")
    p.add_argument("--check", action="store_true",
                   help="assert the experiment's published claim afterwards (its smoke_check with --variant smoke)")
    p.add_argument("--wait", action="store_true",
                   help="wait for runs that other processes are computing (and compute those they leave "
                        "unfinished), then summarize and check the whole sweep")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _add_format_option(p, "the summary")
    _add_device_options(p)
    p.add_argument("--launcher", choices=["local", "ray", "slurm"], default="local",
                   help="where groups run: this process (default), Ray tasks, or SLURM jobs via submitit "
                        "(pip install 'jaxlearn[cluster]')")
    p.add_argument("--address", default=None,
                   help="Ray cluster to attach to (auto, HOST:6379 or ray://HOST:10001; default: $RAY_ADDRESS, "
                        "else a new local Ray)")
    p.add_argument("--launcher-opt", dest="launcher_opts", action="append", default=[], metavar="KEY=VALUE",
                   help="a Ray task option (num_cpus, num_gpus, ...) or a submitit parameter "
                        "(timeout_min, slurm_partition, gpus_per_node, ...)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="run a group whose worker died again at most N times (launchers; default 2)")

    p = command("ls", "list runs with their status and final metrics")
    p.add_argument("--experiment")
    p.add_argument("--status", choices=["running", "finished", "diverged", "failed"])
    p.add_argument("--limit", type=int, default=50, help="show at most this many (newest last)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the index from the run directories first")
    _add_format_option(p, "the list")

    p = command("show", "show a run's config, metrics and provenance")
    p.add_argument("run", help="run id, unique prefix, or experiment/run_id")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="text (default); csv: the metric rows; json: one object with everything shown")

    p = command("resume", "continue an interrupted run's group from its last checkpoint")
    p.add_argument("run", help="run id, unique prefix, or experiment/run_id")
    p.add_argument("--quiet", action="store_true")
    _add_device_options(p)

    p = command("plot", "write PNG plots of a run, a sweep or an experiment's runs")
    p.add_argument("target", help="run id/prefix, sweep:ID, or an experiment name")

    p = command("clean", "delete failed or interrupted runs and stale checkpoints (asks first)")
    p.add_argument("--experiment")
    p.add_argument("--all", action="store_true", help="delete finished runs too")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    command("experiments", "list available experiments")

    p = command("tensorboard", "open TensorBoard on the run root (live scalars, HParams of every run)")
    p.add_argument("root", nargs="?", default=None, help="the directory to show (default: --out, i.e. runs)")
    p.add_argument("--port", type=_positive_int, default=None, help="TensorBoard's port (default: its own, 6006)")

    p = command("fields", "list an experiment's config fields: type, default, static/dynamic, range, help")
    p.add_argument("target", help="an experiment name, or a config file (adds the values it sets)")
    p.add_argument("--variant", default="default", help="the config file's variant (default: its base config)")
    _add_format_option(p, "the fields")

    p = sub.add_parser("new-experiment", help="write a working study skeleton (study, config, test)",
                       description="write a working study skeleton on the shared training base: "
                                   "experiments/NAME.py, configs/NAME.yaml (with a smoke variant) and "
                                   "tests/experiments/test_NAME.py; existing files are never overwritten",
                       epilog=EPILOG["new-experiment"], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="the study's module name (a Python identifier)")
    p.add_argument("--root", default=".", help="repository root to write under (default: the working directory)")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(_run_help_fields(argv)).parse_args(argv)
    if getattr(args, "distributed", False):
        from jaxlearn.runner import distributed

        distributed.initialize()  # before anything touches a device
    try:
        return COMMANDS[args.command](args, argv)
    except (cfg.ConfigError, store.StoreError, FileNotFoundError) as err:
        print(f"jaxlearn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except LaunchError as err:
        print(f"jaxlearn {args.command}: error: {err}", file=sys.stderr)
        return 1


def _cmd_run(args, argv) -> int:
    from jaxlearn.runner.execute import env_hook
    from jaxlearn.runner.launch import launch_sweep
    from jaxlearn.runner.sweep import enable_compilation_cache, resolve, run_sweep

    if args.distributed and args.launcher != "local":
        raise cfg.ConfigError("--distributed: not with --launcher (a launcher's groups run as independent jobs)")
    if args.distributed and args.wait:
        raise cfg.ConfigError("--wait: not with --distributed (start the job once the other processes are done)")
    options = _launcher_options(args)  # checked before anything is planned
    sinks = sink_names(args.log)  # an unknown or missing sink stops here, before anything compiles
    mode = "zip" if args.zip else "random" if args.random is not None else None
    experiment, configs = resolve(args.config, variant=args.variant, overrides=args.overrides, sweeps=args.sweeps,
                                  mode=mode, num=args.random, seed=args.seed)
    if args.launcher == "local":
        enable_compilation_cache(args.out)
        report = run_sweep(experiment, configs, root=args.out, force=args.force, progress=not args.quiet,
                           max_group_size=args.max_group_size, argv=["jaxlearn", *argv], devices=args.devices,
                           wait=args.wait, hook=env_hook(), log=sinks)
    else:
        report = launch_sweep(experiment, configs, root=args.out, launcher=args.launcher, force=args.force,
                              max_group_size=args.max_group_size, argv=["jaxlearn", *argv], devices=args.devices,
                              address=args.address, options=options, retries=args.retries, wait=args.wait,
                              log=sinks)
    if not is_writer():
        return 0  # another process of a --distributed job: process 0 records, prints and plots
    return _report_sweep(args, argv, experiment, report, sinks)


def _report_sweep(args, argv, experiment, report, sinks) -> int:
    """What ``jaxlearn run`` prints once its sweep is computed, for any state of the sweep: a
    count line, the summary and plots of the finished runs, the check (``--check``) when every
    run is done. Returns the exit code: 0, 1 when the check fails, 2 when it cannot run yet."""
    busy = len(report.busy)
    results = load(args.out, experiment=experiment.name, run_ids=report.run_ids, curves=True)
    any_finished = not results.finished().runs.empty
    if args.check and busy and not any_finished:
        print(f"nothing to check yet: {busy} runs running elsewhere (use --wait)", file=sys.stderr)
        return 2
    sweep_id = _record_sweep(args.out, report, args.config, args.variant, argv)
    info = sys.stdout if args.format == "table" else sys.stderr  # stdout: only the data, for scripts
    if not args.quiet:
        print(file=info)  # below the progress output
    print(f"{experiment.name}: {len(report.run_ids)} runs: {len(report.computed)} computed, "
          f"{len(report.skipped)} already finished, {busy} running elsewhere  (sweep:{sweep_id})", file=info)
    if any_finished:
        _print_summary(experiment, results, args.format)
        if not args.no_plot:
            plots = _write_plots(experiment, results, pathlib.Path(args.out) / SWEEPS_DIR / sweep_id)
            for path in plots:
                print(f"plot saved to {path}", file=info)
            log_sweep_plots(sinks, sweep_id, experiment.name, report.run_ids, plots)
    checker = experiment.checker(args.variant)
    if args.check and checker:
        if busy:
            print(f"not checked yet: {busy} of {len(report.run_ids)} runs running elsewhere (use --wait)",
                  file=sys.stderr)
            return 2
        try:
            checker(results)
        except AssertionError as err:
            print(f"check failed: {str(err).splitlines()[0] if str(err) else 'the claim does not hold'}",
                  file=sys.stderr)
            return 1
        print("check passed: the experiment's claim holds", file=info)
    return 0


def _launcher_options(args) -> dict:
    if args.launcher == "local" and (args.launcher_opts or args.address):
        raise cfg.ConfigError("--launcher-opt/--address: only with --launcher ray or slurm")
    if args.address and args.launcher != "ray":
        raise cfg.ConfigError("--address: only with --launcher ray")
    if args.retries < 0:
        raise cfg.ConfigError(f"--retries: expected an int >= 0, got {args.retries}")
    options = {}
    for text in args.launcher_opts:
        key, value = cfgfile.parse_assignment(text)
        options[key] = value
    return check_options(args.launcher, options) if args.launcher != "local" else options


def _record_sweep(root, report, config_file, variant, argv) -> str:
    from jaxlearn.runner.sweep import sweep_id as make_sweep_id

    sweep_id = make_sweep_id(report.experiment, report.run_ids)
    store.atomic_write_json(pathlib.Path(root) / SWEEPS_DIR / f"{sweep_id}.json",
                            {"experiment": report.experiment, "run_ids": list(report.run_ids),
                             "config": str(config_file), "variant": variant, "argv": argv, "time": store.now_iso()})
    return sweep_id


def _print_summary(experiment, results, fmt: str = "table") -> None:
    summarize = experiment.hook("summarize")
    rows = summarize(results) if summarize else _default_rows(experiment, results)
    if rows or fmt == "json":
        print(render(rows, fmt))


def _default_rows(experiment, results) -> list[dict]:
    runs = results.runs
    fields = [f.name for f in dataclasses.fields(experiment.config_cls)]
    metrics = [c for c in runs.columns if c not in fields and c not in ("run_id", "experiment", "version", "step")
               and "." not in c][:5]
    return [{"run": r["run_id"][:8], **{c: r[c] for c in cfg.dynamic_fields(experiment.config_cls) if c in runs},
             **{m: r[m] for m in metrics}} for _, r in runs.iterrows()]


def _write_plots(experiment, results, directory) -> list[pathlib.Path]:
    from jaxlearn.runner.plots import curves_figure, save_figure

    written = []
    if experiment.trains and not results.curves.empty:  # a study logs a single row per run: no curves to draw
        written.append(pathlib.Path(directory) / "curves.png")
        save_figure(curves_figure(results, results.config_columns), written[0])
    if experiment.hook("plot"):
        written.append(pathlib.Path(directory) / f"{experiment.name}.png")
        save_figure(experiment.hook("plot")(results), written[-1])
    return written


def _cmd_ls(args, argv) -> int:
    with store.Index(args.out) as index:
        index.rebuild() if args.rebuild else index.sync()
        records = index.rows(experiment=args.experiment, status=args.status)
    if not records:
        if args.format != "csv":  # CSV: no header without columns
            print("[]" if args.format == "json" else "no runs")
        return 0
    rows = []
    for record in records[-args.limit:]:
        metrics = dict(list((record["final_metrics"] or {}).items())[:3])
        rows.append({"run": record["run_id"], "experiment": record["experiment"], "status": record["status"],
                     "step": record["step"], "started": (record["started"] or "")[:19], **metrics})
    print(render(rows, args.format))
    if len(records) > args.limit:
        print(f"... {len(records) - args.limit} more (use --limit)", file=sys.stdout if args.format == "table"
              else sys.stderr)
    return 0


def _cmd_show(args, argv) -> int:
    path = store.resolve_run(args.out, args.run)
    record = store.read_json(path / "run.json")
    status = store.read_json(path / "status.json") if (path / "status.json").exists() else {}
    rows = store.read_jsonl(path / "metrics.jsonl")
    provenance = store.read_json(path / "provenance.json") if (path / "provenance.json").exists() else None
    if args.format == "json":
        print(json.dumps({"run": record, "status": status, "metrics": rows, "provenance": provenance}))
        return 0
    if args.format == "csv":
        print(render(rows, "csv"))
        return 0
    print(f"run {record['run_id']}  ({record['experiment']} version {record['version']})  {path}")
    print(f"status: {status.get('status')} at step {status.get('step')}"
          + (f", diverged at step {status['diverged_step']}" if status.get("diverged_step") is not None else ""))
    print("config:\n" + json.dumps(record["config"], indent=2, sort_keys=True))
    if status.get("final_metrics"):
        print("final metrics:\n" + render([status["final_metrics"]]))
    if rows:
        print(f"metrics: {len(rows)} rows, steps {rows[0]['step']}..{rows[-1]['step']}")
        print(render(rows if len(rows) <= 6 else rows[:3] + rows[-3:]))
    if provenance is not None:
        print("provenance:\n" + json.dumps(provenance, indent=2, sort_keys=True))
    return 0


def _cmd_resume(args, argv) -> int:
    from jaxlearn.runner.distributed import broadcast_json
    from jaxlearn.runner.execute import env_hook, run_group
    from jaxlearn.runner.progress import Progress
    from jaxlearn.runner.sweep import enable_compilation_cache

    sinks = sink_names(args.log)
    path = store.resolve_run(args.out, args.run)
    record = store.read_json(path / "run.json")
    status = read_status(path) or {}
    if is_final(path):
        print(f"run {record['run_id']} is already {status['status']}")
        return 0
    experiment = load_experiment(record["experiment"])
    if record["version"] != experiment.version:
        raise store.StoreError(f"run {record['run_id']}: written by {experiment.name} version {record['version']!r}, "
                               f"the code is version {experiment.version!r}; run the config again instead")
    group = stored_group(args.out, experiment, status) or Group(
        experiment, (stored_run(args.out, experiment, record["run_id"]),))
    runs = group.runs
    claims = []
    # Several processes (--distributed): every one has read the same group above (before the first
    # collective, so before process 0 writes anything); process 0 alone claims and writes.
    enable_compilation_cache(args.out)  # before anything compiles
    try:
        busy = None
        for run in runs if is_writer() else ():
            claim = store.RunClaim.try_acquire(run.dir(args.out))
            if claim is None:
                busy = run.run_id
                break
            claims.append(claim)
        busy = broadcast_json(busy)
        if busy is not None:
            print(f"run {busy} is being computed by another process", file=sys.stderr)
            return 1
        with store.Index(args.out) if is_writer() else contextlib.nullcontext() as index:
            statuses = run_group(group, args.out, index,
                                 progress=Progress(1, len(runs), enabled=not args.quiet and is_writer()),
                                 argv=["jaxlearn", *argv], devices=args.devices, hook=env_hook(), sinks=sinks)
    finally:
        for claim in claims:
            claim.release()
    print(f"resumed group of {len(runs)} runs: " + ", ".join(f"{k[:8]} {v}" for k, v in statuses.items()))
    return 0


def _cmd_plot(args, argv) -> int:
    root = pathlib.Path(args.out)
    if args.target.startswith("sweep:"):
        sweep = store.read_json(root / SWEEPS_DIR / f"{store.check_name(args.target[6:], 'sweep id')}.json")
        name, run_ids, directory = sweep["experiment"], sweep["run_ids"], root / SWEEPS_DIR / args.target[6:]
    elif args.target in list_experiments():
        name, run_ids, directory = args.target, None, root / SWEEPS_DIR / f"all_{args.target}"
    else:
        path = store.resolve_run(root, args.target)
        record = store.read_json(path / "run.json")
        name, run_ids, directory = record["experiment"], [record["run_id"]], path / "plots"
    experiment = load_experiment(name)
    results = load(root, experiment=name, run_ids=run_ids, curves=True)
    if results.runs.empty:
        print(f"no runs of {name} to plot")
        return 1
    for path in _write_plots(experiment, results, directory):
        print(f"plot saved to {path}")
    return 0


def _cmd_clean(args, argv) -> int:
    claims = []  # held until the runs are deleted, so no runner can start one meanwhile
    try:
        return _clean(args, claims)
    finally:
        for claim in claims:
            claim.release()


def _clean(args, claims) -> int:
    root = pathlib.Path(args.out)
    results = load(root, experiment=args.experiment)
    doomed = []
    for _, run in results.runs.iterrows() if not results.runs.empty else ():
        if args.all or run["status"] not in FINAL_STATUSES:
            path = store.run_dir(root, run["experiment"], run["run_id"])
            claim = store.RunClaim.try_acquire(path)
            if claim is None:
                continue  # being computed right now
            claims.append(claim)
            doomed.append((run["experiment"], run["run_id"], path))
    doomed_ids = {run_id for _, run_id, _ in doomed}
    finished = set(results.runs[results.runs.status.isin(FINAL_STATUSES)].run_id) if not results.runs.empty else set()
    stale = []
    for gdir in sorted((root / GROUPS_DIR).glob("*")) if (root / GROUPS_DIR).exists() else ():
        members = store.read_json(gdir / "members.json") if (gdir / "members.json").exists() else {"runs": []}
        if all(rid in doomed_ids or rid in finished for rid in members["runs"]) and (
                args.experiment is None or members.get("experiment") == args.experiment):
            stale.append(gdir)
    if not doomed and not stale:
        print("nothing to clean")
        return 0
    print(f"will delete {len(doomed)} runs" + (f" and {len(stale)} group checkpoints" if stale else ""))
    if not args.yes:
        answer = input("proceed? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing deleted")
            return 1
    with store.Index(root) as index:
        for experiment, run_id, path in doomed:
            shutil.rmtree(path)
            index.remove(experiment, run_id)
    for path in stale:
        shutil.rmtree(path)
    print(f"deleted {len(doomed)} runs" + (f" and {len(stale)} group checkpoints" if stale else ""))
    return 0


def _cmd_experiments(args, argv) -> int:
    found = list_experiments()
    if not found:
        print("no experiments found (neither an experiments/ package here nor the studies installed with jaxlearn)")
        return 1
    width = max(map(len, found))
    for name, description in found.items():
        print(f"{name.ljust(width)}  {description}")
    return 0


def _field_listing(target: str, variant: str = "default") -> tuple[str, list[dict]]:
    """``(experiment name, rows)`` for ``jaxlearn fields``: every field of an experiment (by name) or of
    a config file's experiment, then with the ``value`` the file's variant sets and the axes it
    sweeps (``swept``)."""
    from jaxlearn.runner.sweep import load_variant

    if target.endswith((".yaml", ".yml")) or pathlib.Path(target).is_file() or variant != "default":
        experiment, chosen = load_variant(target, variant)  # a path, or a study's config by name
        rows = cfg.field_rows(experiment.config_cls, chosen["config"])
        for row in rows:
            axis = chosen["sweep"].get(row["field"])
            if axis is not None:
                row["swept"] = (list(axis.values) if axis.kind == "list"
                                else f"{axis.kind}:{axis.low:g}:{axis.high:g}:{len(axis.values)}")
        return experiment.name, rows
    experiment = load_experiment(target)
    return experiment.name, cfg.field_rows(experiment.config_cls)


def _fields_text(rows: list[dict]) -> str:
    """The fields as a table for people: ``(required)`` instead of a default where there is none,
    ``null`` for a ``None`` default, and the ``value``/``swept`` columns only when some field has one."""
    columns = ["field", "kind", "type", "default", *[c for c in ("value", "swept") if any(c in r for r in rows)],
               "range", "help"]
    shown = []
    for row in rows:
        default = "(required)" if row["required"] else "null" if row["default"] is None else row["default"]
        shown.append({c: default if c == "default" else row.get(c) for c in columns})
    return render(shown)


def _run_help_fields(argv) -> str:
    """For ``jaxlearn run CONFIG --help``: the fields of CONFIG's experiment, as text ("" otherwise)."""
    if argv[:1] != ["run"] or not {"-h", "--help"} & set(argv):
        return ""
    config = next((a for a in argv[1:] if a.endswith((".yaml", ".yml"))), None)
    if config is None and len(argv) > 1 and not argv[1].startswith("-"):
        config = argv[1]  # a study's name (jaxlearn run population_digits --help)
    if config is None:
        return ""
    variant = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--variant"), "default")
    try:
        from jaxlearn.runner.sweep import find_config

        name, rows = _field_listing(str(find_config(config)), variant)
    except (cfg.ConfigError, OSError) as err:
        return f"(cannot list the fields of {config}: {err})"
    return f"fields of {name} (--set FIELD=VALUE, --sweep FIELD=VALUES):\n" + _fields_text(rows)


def _cmd_fields(args, argv) -> int:
    name, rows = _field_listing(args.target, args.variant)
    if args.format == "table":
        print(f"{name}: {len(rows)} fields (static: one compiled program per value; dynamic: may be swept "
              f"inside one vmapped program)")
        print(_fields_text(rows))
    else:
        print(render(rows, args.format))
    return 0


def _cmd_tensorboard(args, argv) -> int:
    """Replaces this process by ``tensorboard --logdir ROOT`` (the same Python's)."""
    root = pathlib.Path(args.root if args.root is not None else args.out)
    if importlib.util.find_spec("tensorboard") is None:
        raise cfg.ConfigError("needs the tensorboard package: pip install 'jaxlearn[tensorboard]'")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory (runs are written under --out, default runs)")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(root)]
    if args.port is not None:
        command += ["--port", str(args.port)]
    sys.stdout.flush()
    os.execv(sys.executable, command)
    return 0  # not reached: execv does not return


def _cmd_new_experiment(args, argv) -> int:
    from jaxlearn.runner.template import new_experiment

    for path in new_experiment(args.name, args.root):
        print(f"wrote {path}")
    print(f"next: jaxlearn run {pathlib.Path(args.root) / 'configs' / (args.name + '.yaml')} --variant smoke --check")
    return 0


COMMANDS = {"run": _cmd_run, "ls": _cmd_ls, "show": _cmd_show, "resume": _cmd_resume, "plot": _cmd_plot,
            "clean": _cmd_clean, "experiments": _cmd_experiments, "fields": _cmd_fields,
            "new-experiment": _cmd_new_experiment, "tensorboard": _cmd_tensorboard}
