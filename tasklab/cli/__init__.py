"""The ``tasklab`` command: run workers, the embedded server, inspect a Redis, or a demo."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .. import defaults
from ..errors import TaskLabError
from ..local.connection import connect, redact
from ..local.pool import WorkerPool
from ..local.server import EmbeddedServer
from ..local.status import read_status


def _worker(args: argparse.Namespace) -> int:
    connection = connect(args.url)  # fail now, clearly, rather than in every worker's log
    queues = [q for q in args.queues.split(",") if q]
    pool = WorkerPool(args.url, connection, args.log_dir, queues=queues, log_level=args.log_level)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pool.scale(args.processes)
    print(f"{len(pool)} worker(s) on {redact(args.url)} serving {','.join(queues)}; logs in {args.log_dir}")
    print("Press Ctrl-C to stop.", flush=True)
    stop.wait()
    print("stopping workers (each finishes its current job)...", flush=True)
    pool.stop()
    return 0


def _server(args: argparse.Namespace) -> int:
    server = EmbeddedServer(args.data_dir)

    def ready() -> None:
        print(server.url, flush=True)
        print(f"data in {server.data_dir}; press Ctrl-C to stop.", file=sys.stderr, flush=True)

    status = server.run_foreground(ready)
    return 0 if status in (0, -signal.SIGTERM) else status


def _info(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        server = EmbeddedServer(args.data_dir)
        if not server.is_running():
            print(
                f"No embedded server is running for {server.data_dir}. Start one with `tasklab server`, or pass --url.",
                file=sys.stderr,
            )
            return 1
        url = server.url
    print(read_status(connect(url), url))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # the demo prints a DataFrame: pandas loads for it alone

    run_demo(n_workers=args.workers, data_dir=args.data_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tasklab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser("worker", help="run worker processes against a Redis (how other machines join)")
    worker.add_argument("--url", required=True, help="Redis URL, e.g. redis://host:6379/0")
    worker.add_argument("--queues", default=defaults.QUEUE, help="comma-separated, in priority order")
    worker.add_argument("--processes", type=int, default=defaults.worker_count(), help="default: one per CPU")
    worker.add_argument("--log-dir", default=f"{defaults.DATA_DIR}/logs", help="where worker logs go")
    worker.add_argument(
        "--log-level",
        default=defaults.WORKER_LOG_LEVEL,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=f"default: {defaults.WORKER_LOG_LEVEL}; DEBUG also logs every job taken and done",
    )
    worker.set_defaults(run=_worker)

    server = sub.add_parser("server", help="run the embedded Redis in the foreground and print its URL")
    server.add_argument("--data-dir", default=None, help=f"default: ./{defaults.DATA_DIR}")
    server.set_defaults(run=_server)

    info = sub.add_parser("info", help="print server version, queues and workers")
    info.add_argument("--url", default=None, help="default: the embedded server of --data-dir")
    info.add_argument("--data-dir", default=None)
    info.set_defaults(run=_info)

    demo = sub.add_parser("demo", help="run a few tasks on the embedded server and print what happened")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--data-dir", default=None)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except TaskLabError as exc:
        print(f"tasklab {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
