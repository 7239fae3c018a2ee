"""``python -m proxy`` / ``smsleads-proxy``: serve the REST proxy with uvicorn."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette

from proxy.settings import OPTIONS, Settings, SettingsError, load_settings

SANDBOX_BANNER = """\
SMS Leads REST proxy on the embedded sandbox: nothing leaves this machine.
  Demo account: username demo, API token demo-token, 1000 credits.
  API:          {base}/openapi.yaml
  Try:          curl -u demo:demo-token {base}/v1/balance
"""
SANDBOX_WORKERS = (
    "  Note: each of the {workers} workers has a sandbox of its own (credits, lists, reports).\n"
)


def app_from_env() -> Starlette:
    """The factory each uvicorn worker calls; settings travel in the environment."""
    from proxy.app import create_app

    return create_app(load_settings([], os.environ))


def _export(settings: Settings) -> None:
    for option in OPTIONS:
        value = getattr(settings, option.field)
        os.environ[option.env] = str(value).lower() if isinstance(value, bool) else str(value)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
        from proxy.app import create_app

        create_app(settings)  # fail now, with a message, on a bad table or spec
    except (SettingsError, ValueError) as exc:
        sys.exit(f"smsleads-proxy: {exc}")
    _export(settings)
    if settings.sandbox:
        banner = SANDBOX_BANNER.format(base=f"http://{settings.host}:{settings.port}")
        if settings.workers > 1:
            banner += SANDBOX_WORKERS.format(workers=settings.workers)
        print(banner, flush=True)
    uvicorn.run("proxy.__main__:app_from_env", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, log_level=settings.log_level)


if __name__ == "__main__":
    main()
