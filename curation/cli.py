"""The `curation` command: run, status, verify, inspect, stages, demo."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import sys

from curation.lease import LeaseHeld
from curation.pipeline import DEFAULT_PIPELINES, PipelineError, available_stages, load_pipeline, stage_class


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (PipelineError, FileNotFoundError, KeyError, ValueError, LeaseHeld) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(f"error: no space left on the device ({err.filename or 'output'}): free space and run the same "
              "command again; it resumes from the last commit", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curation", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a pipeline over sources into a corpus folder")
    _add_run_arguments(run)
    run.add_argument("--input", required=True, help="a folder (searched recursively), a text file of paths, "
                                                    "or a .parquet/.csv manifest with a 'path' column")
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="generate the embedded demo videos and run a pipeline on them")
    _add_run_arguments(demo, default_output="out/demo")
    demo.add_argument("--input", default="out/demo-input", help="where the demo videos are generated")
    demo.set_defaults(handler=_demo)

    status = commands.add_parser("status", help="counts of sources, clips, rejects, shards, samples")
    status.add_argument("output")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument("--target-hours", type=float, default=7200.0,
                        help="hours of kept footage the bill projects CPU-/GPU-hours and raw hours for (docs/cost.md)")
    status.set_defaults(handler=_status)

    verify = commands.add_parser("verify", help="check every commit against its files and member hashes")
    verify.add_argument("output")
    verify.add_argument("--json", action="store_true", help="one JSON object")
    verify.add_argument("--repair", action="store_true", help="move what it finds to quarantine/ now, so the next "
                                                              "run redoes those sources (a run's own recovery checks sizes only)")
    verify.set_defaults(handler=_verify)

    inspect = commands.add_parser("inspect", help="one sample: its metadata and a contact sheet PNG")
    inspect.add_argument("output")
    inspect.add_argument("key")
    inspect.add_argument("--png", help="where to write the contact sheet (default OUT/inspect/KEY.png)")
    inspect.set_defaults(handler=_inspect)

    listing = commands.add_parser("stages", help="list stages and their parameters")
    listing.set_defaults(handler=_stages)
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser, default_output: str | None = None) -> None:
    parser.add_argument("--pipeline", default="ingest", help="a pipeline name from the pipelines file")
    parser.add_argument("--pipelines", default=str(DEFAULT_PIPELINES), help="the pipelines YAML file")
    parser.add_argument("--output", required=default_output is None, default=default_output)
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local: in-process, sequential; ray: Ray Data, local or --ray-address")
    parser.add_argument("--workers", type=int, help="Ray: tasks/actors per segment (default: as many as fit)")
    parser.add_argument("--ray-address", help="connect to an existing Ray cluster (e.g. ray://head:10001 or auto)")
    parser.add_argument("--chunk-sources", type=int, default=10_000,
                        help="Ray: sources handed to one streaming execution (the driver holds one chunk at a time)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                        help="override a stage parameter (repeatable)")
    parser.add_argument("--force", action="store_true", help="add to a corpus built with another configuration")
    parser.add_argument("--no-progress", action="store_true")


def _run(args) -> int:
    from curation.run import RunOptions, run_pipeline, summary_text

    pipeline = load_pipeline(args.pipeline, args.pipelines, args.overrides)
    options = RunOptions(args.input, args.output, args.executor, args.workers, args.ray_address, args.force,
                         progress=not args.no_progress, chunk_sources=args.chunk_sources)
    record = run_pipeline(pipeline, options)
    print(summary_text(record, args.output))
    return 0


def _demo(args) -> int:
    from curation.demo import make_demo_inputs

    make_demo_inputs(args.input)
    return _run(args)


def _status(args) -> int:
    from curation.status import corpus_status, status_text

    status = corpus_status(args.output, args.target_hours)
    print(json.dumps(status, indent=1) if args.json else status_text(status))
    return 0


def _verify(args) -> int:
    """Read-only unless --repair: then what it finds goes to quarantine/ (under the output's lease)
    and the next run redoes those sources. Exit 1 if anything was found."""
    import secrets
    import time

    from curation.commit import inspect, quarantine
    from curation.lease import Lease
    from curation.storage import Storage

    storage = Storage(args.output)
    found = inspect(storage, deep=True)
    if args.repair and (found.problems or found.orphans):
        repair_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-verify-" + secrets.token_hex(2)
        with Lease(storage, repair_id):
            quarantine(storage, inspect(storage, deep=True), repair_id)
    report = {"commits": len(found.commits), "samples": sum(len(c.members) for c in found.commits),
              "damaged": [{k: v for k, v in p.items() if k != "commit"} for p in found.problems],
              "uncommitted": found.orphans}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{args.output}: {report['commits']} commits, {report['samples']} samples checked (sizes and member hashes)")
        for problem in report["damaged"]:
            print(f"  damaged  {problem['path']}: {problem['reason']}: {problem['detail']}")
        for path in report["uncommitted"]:
            print(f"  uncommitted  {path}: no commit names it")
        print("  all commits stand" if not (found.problems or found.orphans) else
              "  moved to quarantine/: the next run processes their sources again" if args.repair else
              "  a run moves damaged and uncommitted files to quarantine/ (a changed byte needs --repair) "
              "and processes their sources again")
    return 1 if found.problems or found.orphans else 0


def _inspect(args) -> int:
    from curation.inspect_sample import inspect_sample

    document, sheet = inspect_sample(args.output, args.key, args.png)
    print(json.dumps(document, indent=1, ensure_ascii=False))
    if sheet:
        print(f"contact sheet: {sheet}", file=sys.stderr)
    return 0


def _stages(args) -> int:
    for name in available_stages():
        cls = stage_class(name)
        print(f"{name} ({cls.level}, v{cls.version})")
        for field_name, field in cls.Params.model_fields.items():
            default = "required" if field.is_required() else repr(field.default)
            print(f"    {field_name} = {default}    {field.description or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
