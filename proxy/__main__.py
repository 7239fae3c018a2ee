"""``python -m proxy`` / ``smsleads-proxy``: serve the REST proxy with uvicorn."""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.config
import os
import sys
import time
from collections.abc import Sequence

from starlette.applications import Starlette

from proxy import logs
from proxy.metrics import multiprocess_dir
from proxy.server import reserve_descriptors, serve
from proxy.settings import OPTIONS, Settings, SettingsError, load_settings, named

SANDBOX_BANNER = """\
SMS Leads REST proxy on the embedded sandbox: nothing leaves this machine.
  Demo account: username demo, API token demo-token, 1000 credits.
  API docs:     {base}/docs
  Console:      {base}/sandbox (what the phones would see)
  API:          {base}/openapi.yaml
  Try:          curl -u demo:demo-token {base}{read}
"""
SANDBOX_WORKERS = (
    "  Note: each of the {workers} workers has a sandbox of its own (credits, lists, reports).\n"
)

_log = logging.getLogger("smsleads_proxy.main")


def app_from_env() -> Starlette:
    """The factory each uvicorn worker calls; settings travel in the environment."""
    from proxy.app import create_app

    app = create_app(load_settings([], os.environ))
    prepare_process(app)
    return app


def prepare_process(app: Starlette) -> None:
    """What concerns the whole process, not one app: the held token is scrubbed from every
    log line, and the start-up objects (spec, tables, validators: ~60,000, as long-lived as
    the process) are frozen out of the collector's full passes, each a 10-15 ms pause of every
    request in flight (bench/RESULTS.md: p99)."""
    if app.state.tenant is not None:
        logs.hide(app.state.tenant.token)
    gc.collect()
    gc.freeze()


def _first_read() -> str:
    """A path to try: the table's readiness probe, a read every account may make."""
    from proxy.mapping import load_table

    table = load_table()
    return table.operation(table.probe).path if table.probe else "/openapi.yaml"


def _export(settings: Settings) -> None:
    defaults = Settings()
    for option in OPTIONS:
        value = getattr(settings, option.field)
        if value is not None:
            os.environ[option.env] = str(value).lower() if isinstance(value, bool) else str(value)
        elif getattr(defaults, option.field) is not None:
            # ``none`` chosen over a default (a rate of the spend guard): said as chosen, or
            # the workers would read the default back.
            os.environ[option.env] = "none"


def _check(settings: Settings) -> None:
    """Build the app and open its store once before forking workers: a bad table, spec,
    single-tenant setup, state directory or Redis stops the start here, with a message,
    instead of in every worker."""
    from proxy.app import create_app
    from proxy.store import StoreError, open_store
    from proxy.store.redis import RedisUnsafe

    create_app(settings)

    async def open_and_close() -> None:
        store = await open_store(settings, time.time)
        await store.close()

    try:
        asyncio.run(open_and_close())
    except RedisUnsafe as exc:
        raise SettingsError(f"{exc}; to run on it all the same, set "
                            f"{named('redis_volatile_ok')}") from exc
    except StoreError as exc:
        raise SettingsError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        sys.exit(f"smsleads-proxy: {exc}")
    logging.config.dictConfig(logs.config(settings.log_level))
    if settings.workers > 1 and settings.store_kind == "memory":
        _log.warning("with several workers and the memory store, each worker keeps its own "
                     "Idempotency-Keys: a retry that reaches another worker is sent again")
    # The workers import prometheus_client after the directory is in their environment (this
    # process only supervises them), and it is removed when they have all stopped.
    with multiprocess_dir(settings.workers) as metrics_dir:
        try:
            _check(settings)
            reserve_descriptors(settings)
        except (SettingsError, ValueError) as exc:
            sys.exit(f"smsleads-proxy: {exc}")
        _export(settings)
        _log.info("starting", extra={
            "host": settings.host, "port": settings.port, "workers": settings.workers,
            "upstream": "sandbox" if settings.sandbox else settings.upstream_url,
            "single_tenant": bool(settings.api_keys or settings.api_keys_file),
            "metrics_dir": metrics_dir})
        if settings.sandbox:
            banner = SANDBOX_BANNER.format(base=f"http://{settings.host}:{settings.port}",
                                           read=_first_read())
            if settings.workers > 1:
                banner += SANDBOX_WORKERS.format(workers=settings.workers)
            print(banner, flush=True)
        serve(settings, "proxy.__main__:app_from_env", logs.config(settings.log_level))


if __name__ == "__main__":
    main()
