"""The ``tasklab`` command: run workers, the embedded server, inspect a Redis, or a demo."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .. import defaults
from ..core.signing import default_key_file, find_key, keyring, new_key
from ..errors import ConfigurationError, TaskLabError
from ..local.connection import check_url, connect, redact
from ..local.pool import WorkerPool
from ..local.server import EmbeddedServer
from ..local.status import read_status


def _worker(args: argparse.Namespace) -> int:
    if not args.url:
        raise ConfigurationError(f"Give the Redis URL: --url redis://host:6379/0, or ${defaults.URL_ENV}.")
    check_url(args.url)
    secret = None if args.insecure else find_key(secret_file=args.secret_file)
    if secret is None and not args.insecure:
        raise ConfigurationError(
            "No key to check what this Redis hands the workers: anyone who can write to it could run code here. "
            f"Give the lab's key: ${defaults.SECRET_ENV}, --secret-file PATH, or the file {default_key_file()} "
            "(`tasklab secret` makes one). To go without (a Redis only you can reach), pass --insecure."
        )
    if args.insecure:
        print("tasklab worker: --insecure: jobs and code are not checked; anyone who can write to this Redis "
              "can run code here.", file=sys.stderr)  # fmt: skip
    if args.allow_rq_jobs:
        print("tasklab worker: --allow-rq-jobs: unsigned jobs (plain RQ's) run here; anyone who can write to "
              "this Redis can run code here.", file=sys.stderr)  # fmt: skip
    keyring.use(secret, insecure=args.insecure)
    connection = connect(args.url)  # fail now, clearly, rather than in every worker's log
    queues = [q for q in args.queues.split(",") if q]
    pool = WorkerPool(
        args.url, connection, Path(args.log_dir), queues=queues, log_level=args.log_level, secret=secret,
        allow_rq_jobs=args.allow_rq_jobs,
    )  # fmt: skip
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


def _secret(args: argparse.Namespace) -> int:
    key = new_key()
    print(key)
    path = default_key_file()
    print(
        f"\nA new key. Give the same one to the lab and to every worker of a shared Redis, in one of:\n"
        f"  - the file {path}, on each machine, readable by you alone:\n"
        f"      mkdir -p {path.parent} && (umask 077 && tasklab secret > {path})\n"
        f"  - ${defaults.SECRET_ENV} in the environment of the notebook and of `tasklab worker`\n"
        f"  - tasklab.connect(url, secret=...) in the notebook, and --secret-file PATH for `tasklab worker`\n"
        "Keep it secret: whoever has it can run code on your workers.",
        file=sys.stderr,
    )
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
    worker.add_argument(
        "--url",
        default=os.environ.get(defaults.URL_ENV),
        help=f"Redis URL, e.g. redis://host:6379/0 (or ${defaults.URL_ENV})",
    )
    worker.add_argument(
        "--secret-file", default=None, help=f"the key's file (else ${defaults.SECRET_ENV}, or the default file)"
    )
    worker.add_argument("--insecure", action="store_true", help="check no signatures (a Redis only you can reach)")
    worker.add_argument(
        "--allow-rq-jobs", action="store_true", help="also run unsigned jobs, such as plain RQ's: a risk"
    )
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

    secret = sub.add_parser("secret", help="print a new key, for a lab and its workers on a shared Redis")
    secret.set_defaults(run=_secret)

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
