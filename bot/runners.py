"""The `sigops` subcommands that run on the runtime (serve, worker, demo, chat, ask, ...).

`bot/cli.py` parses the command line and imports this module only for these subcommands, so
`sigops detect` (offline, on a CSV) starts without loading the runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

from bot.app import (
    Runtime,
    build_narrator,
    choose_embedder,
    make_redis,
    open_runtime,
    standalone_core,
    start_chat_front_ends,
    start_http,
    start_notifications,
    start_scheduler,
    start_workers,
)
from bot.console import ConsoleNotifier, console_context, render_text, run_repl
from bot.parts.stores import open_record
from bot.settings import Settings
from engine.alerting.routing import Timing
from engine.demo import DemoWorld
from engine.detection.forecast import forecast, limit_for
from engine.errors import QueueUnavailable
from engine.signal import Signal
from storage.keys import Keys
from storage.notify_store import NotifyStore
from storage.record import Record
from storage.redis_stream import RedisSignalQueue

log = logging.getLogger("sigops")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


def _say_missing(settings: Settings) -> None:
    for note in settings.missing():
        print(f"sigops: {note}", file=sys.stderr)


def _tune_gc() -> None:
    """Signals are many small objects without cycles, freed by reference counting as each
    batch ends. The cyclic collector walking them every 700 allocations took a fifth of a
    worker's time; what start-up built is frozen out of its walks (it is never garbage) and
    the young generation is collected every 50,000 allocations instead."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    chats = settings.telegram_chat_ids or settings.slack_channels or settings.routing_file
    console = None if chats else ConsoleNotifier(tz=settings.tz, chart_dir=settings.data_dir / "charts")
    rt = await open_runtime(settings, console=console)
    _tune_gc()
    _say_missing(settings)
    try:
        port = await start_http(rt)
        log.info("listening on http://%s:%d", settings.http_host, port)
        start_workers(rt, stop, settings.workers if args.workers is None else args.workers)
        start_notifications(rt, stop)
        start_chat_front_ends(rt, stop)
        scheduler = start_scheduler(rt)
        await stop.wait()
        scheduler.shutdown(wait=False)
        await rt.supervisor.finish_jobs()
        await _finish(rt)
    finally:
        await rt.close()
    return 0


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    rt = await open_runtime(settings)
    _tune_gc()
    try:
        start_workers(rt, stop, args.workers)
        await stop.wait()
        await _finish(rt)
    finally:
        await rt.close()
    return 0


async def _finish(rt: Runtime) -> None:
    """Let workers finish their batch and save detector state."""
    if rt.tasks:
        await asyncio.wait(rt.tasks, timeout=15)


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    if settings.redis_configured:
        settings = settings.model_copy(update={"redis_prefix": "sigops-demo"})
    path = settings.data_dir / "demo.db"
    for stale in (path, path.with_name("demo.db-wal"), path.with_name("demo.db-shm")):
        stale.unlink(missing_ok=True)  # every demo starts from a clean slate
    stop = asyncio.Event()
    _stop_on_signals(stop)
    console = ConsoleNotifier(tz=settings.tz, chart_dir=settings.data_dir / "charts")
    # The demo's incidents unfold in seconds, so its groups wait and repeat on that scale too.
    timing = Timing(group_wait=2, group_interval=10, repeat_interval=3600, critical_skips_wait=True)
    rt = await open_runtime(settings, sqlite_path=path, console=console, timing=timing)
    print("SigOps demo: generated signals from checkout, payments, auth and search.", file=sys.stderr)
    _say_missing(settings)
    print(f"sigops: record in {path}", file=sys.stderr)
    try:
        if not args.no_http:
            try:
                port = await start_http(rt)
                print(
                    f"sigops: HTTP ingest on http://{settings.http_host}:{port}/v1/signals", file=sys.stderr
                )
            except OSError as exc:
                print(f"sigops: HTTP server not started ({exc}); the demo runs without it", file=sys.stderr)
        start_workers(rt, stop, max(1, settings.workers))
        start_notifications(rt, stop)
        tasks = [asyncio.create_task(_generate(rt, stop, args.interval))]
        if args.duration:
            tasks.append(asyncio.create_task(_stop_after(stop, args.duration)))
        if sys.stdin.isatty():
            tasks.append(asyncio.create_task(run_repl(rt.core, stop)))
        await stop.wait()
        for task in tasks:
            task.cancel()
        await _finish(rt)
        status = await rt.core.handle(console_context(), "/status")
        print("\n" + render_text(status))
    finally:
        await rt.close()
    return 0


async def _generate(rt: Runtime, stop: asyncio.Event, interval: float) -> None:
    world = DemoWorld()
    now = time.time()
    for batch in world.history(now - 3 * 3600, now - interval):
        await _publish(rt, batch)
    step = 0
    while not stop.is_set():
        await _publish(rt, world.tick(time.time(), step))
        step += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _publish(rt: Runtime, batch: list[Signal]) -> None:
    try:
        await rt.ingest.publish(batch)
    except QueueUnavailable as exc:
        log.warning("demo signals dropped: %s", exc)


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()


async def _forecast(settings: Settings, args: argparse.Namespace) -> int:
    record = await _open_record(settings)
    try:
        limit = args.limit
        if limit is None:
            limit = limit_for(args.series, await record.latest_labels(args.series))
        if limit is None:
            print(f"sigops: no limit known for {args.series}; give one with --limit", file=sys.stderr)
            return 2
        points = await record.series_points(args.series, time.time() - args.hours * 3600)
        result = forecast(args.series, points, limit)
        if result is None:
            print(
                f"{args.series}: no steady trend towards {limit:g} "
                f"in {len(points)} points of the last {args.hours:g} h"
            )
        else:
            print(result.text)
    finally:
        await record.close()
    return 0


async def _brief(settings: Settings, args: argparse.Namespace) -> int:
    record = await _open_record(settings)
    try:
        reply = await standalone_core(settings, record).handle(console_context(), "/brief")
    finally:
        await record.close()
    print(render_text(reply))
    return 0


async def _audit(settings: Settings, args: argparse.Namespace) -> int:
    record = await _open_record(settings)
    try:
        entries = await NotifyStore(record).audit_log(args.limit)
    finally:
        await record.close()
    if args.json:
        print(orjson.dumps([asdict(e) for e in entries], option=orjson.OPT_INDENT_2).decode())
        return 0
    if not entries:
        print("no actions recorded yet")
    for e in entries:
        when = datetime.fromtimestamp(e.ts, settings.tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        change = f"{e.before} -> {e.after}" if e.before else e.after
        print(
            f"{when}  {e.user_name} ({e.platform}:{e.user_id}, chat {e.chat_id})  "
            f"{e.action} {e.target}: {change}"
        )
    return 0


async def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    redis, embedded = make_redis(settings)
    if embedded:
        print("sigops: no SIGOPS_REDIS_URL set: dead letters live in the configured Redis", file=sys.stderr)
        return 2
    try:
        queue = RedisSignalQueue(redis, Keys(settings.redis_prefix), maxlen=settings.stream_maxlen)
        letters = await queue.dead_letters(args.limit)
    finally:
        await redis.aclose()
    if not letters:
        print("no signals set aside")
    for when, letter, error in letters:
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} UTC  {letter.series}  id {letter.id}  value {letter.value}\n    {error}")
    return 0


async def _open_record(settings: Settings) -> Record:
    return await open_record(settings)


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    record = await _open_record(settings)
    try:
        stop = asyncio.Event()
        _stop_on_signals(stop)  # Ctrl-C ends the console at once, even while it waits for a line
        await run_repl(standalone_core(settings, record, await choose_embedder(settings)), stop)
    finally:
        await record.close()
    return 0


async def _ask(settings: Settings, args: argparse.Namespace) -> int:
    question = " ".join(args.question)
    record = await _open_record(settings)
    embedder = await choose_embedder(settings)  # SIGOPS_EMBED_MODEL, as serve uses it
    try:
        if args.json:
            result = await build_narrator(settings, record, embedder).answer(question)
            data = {
                "question": question,
                "mode": result.mode,
                "answer": result.text,
                "note": result.note,
                "unverified_figures": result.unverified,
                "window_s": result.retrieval.window_s,
                "services": result.retrieval.services,
                "evidence": result.retrieval.evidence,
                "figures": result.retrieval.figures,
            }
            print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        else:
            core = standalone_core(settings, record, embedder)
            reply = await core.handle(console_context(), f"/ask {question}")
            print(render_text(reply))
    finally:
        await record.close()
    return 0


RUNNERS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "serve": _serve,
    "worker": _worker,
    "demo": _demo,
    "chat": _chat,
    "ask": _ask,
    "forecast": _forecast,
    "dead-letters": _dead_letters,
    "audit": _audit,
    "brief": _brief,
}
