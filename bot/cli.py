"""`sigops`: the one console command: parse it and run it (`bot/runners.py` has the commands
that run on the runtime; `detect` is here, as it runs on a CSV alone)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import logging
import sys
from collections.abc import Sequence

from bot.parts.detection import build_detection
from bot.settings import Settings, load_settings
from engine.detection.replay import read_points, replay, write_csv
from engine.errors import ConfigError, PayloadError, SigOpsError

log = logging.getLogger("sigops")


def _version() -> str:
    try:
        return importlib.metadata.version("sigops")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigops",
        description="Self-hosted chat-ops copilot: signals in, alerts and answers out. "
        "Settings come from SIGOPS_* environment variables or .env (see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"sigops {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="HTTP ingest + workers + chat front ends + scheduler")
    serve.add_argument("--workers", type=int, help="worker tasks in this process (default SIGOPS_WORKERS)")
    worker = sub.add_parser("worker", help="only workers (scale out: run several against one Redis)")
    worker.add_argument("--workers", type=int, default=1, help="worker tasks in this process")
    demo = sub.add_parser("demo", help="the whole loop on generated signals, in one process")
    demo.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    demo.add_argument("--interval", type=float, default=2.0, help="seconds between live demo steps")
    demo.add_argument("--no-http", action="store_true", help="do not start the HTTP server")
    sub.add_parser("chat", help="a terminal chat with the same commands as the chat apps")
    detect = sub.add_parser(
        "detect", help="replay a CSV of timestamp,value rows through the live detection (tuning, backfill)"
    )
    detect.add_argument("file", help="CSV with a header row: timestamp,value")
    detect.add_argument("--out", help="where to write the result CSV (default: standard output)")
    detect.add_argument("--series", default="replay", help="series name used in explanations")
    dead = sub.add_parser("dead-letters", help="signals set aside because processing them failed, and why")
    dead.add_argument("--limit", type=int, default=50)
    brief = sub.add_parser("brief", help="the brief of the last 24 hours, as chat would show it")
    brief.add_argument(
        "--print", action="store_true", help="print it here (the default; sending is scheduled)"
    )
    audit = sub.add_parser("audit", help="what people did to alerts from chat: who, where, when, what")
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--json", action="store_true")
    trend = sub.add_parser("forecast", help="when a series' steady trend reaches its limit")
    trend.add_argument("series")
    trend.add_argument("--limit", type=float, help="default: the series' `limit` label, or 100 for *_pct")
    trend.add_argument("--hours", type=float, default=6.0, help="history to fit (default 6)")
    ask = sub.add_parser("ask", help="answer a question from the stored signals")
    ask.add_argument("question", nargs="+")
    ask.add_argument("--json", action="store_true", help="the answer, evidence and figures as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"sigops: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per job run, per Telegram poll or per HTTP call to a chat API is noise at INFO, and
    # so is faiss telling which CPU build it could not load before the one it did.
    if logging.getLogger().level >= logging.INFO:
        for noisy in ("apscheduler", "httpx", "httpcore", "telegram.ext", "faiss.loader"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "detect":  # offline: it needs none of the runtime, nor its imports
            return _detect(settings, args)
        from bot.runners import RUNNERS  # the runtime (~0.8 s of imports detect does without)

        return asyncio.run(RUNNERS[args.command](settings, args))
    except KeyboardInterrupt:
        return 130
    except SigOpsError as exc:
        print(f"sigops: {exc}", file=sys.stderr)
        return 1


def _detect(settings: Settings, args: argparse.Namespace) -> int:
    try:
        with open(args.file, newline="", encoding="utf-8") as source:
            points = read_points(source)
    except OSError as exc:
        print(f"sigops: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except PayloadError as exc:
        print(f"sigops: {args.file}: {exc}", file=sys.stderr)
        return 2
    # The points stay alive for the whole replay: keep the garbage collector from walking
    # them again and again (a tenth of the time on a million rows).
    gc.freeze()
    rows = replay(points, build_detection(settings), args.series)
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as out:
            count = write_csv(rows, out)
        print(f"sigops: {count} rows written to {args.out}", file=sys.stderr)
    else:
        write_csv(rows, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
