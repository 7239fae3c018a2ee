"""``python -m proxy.sandbox`` / ``smsleads-sandbox``: serve the sandbox with uvicorn.

    python -m proxy.sandbox --host 127.0.0.1 --port 9000 [--db FILE] [--quirks] [--seed N]
                            [--accounts FILE.json|yaml] [--dlr-delay S] [--failure-rate F]
                            [--clock 2026-11-25T22:14:00+02:00 [--tick S]]

Each flag has an environment variable (SANDBOX_HOST, SANDBOX_PORT, SANDBOX_DB,
SANDBOX_QUIRKS, SANDBOX_SEED, SANDBOX_ACCOUNTS, SANDBOX_DLR_DELAY, SANDBOX_FAILURE_RATE,
SANDBOX_CLOCK, SANDBOX_TICK); a flag wins over its variable. ``--clock`` fixes the sandbox's
time at a moment (RFC 3339, or ``now``: the current minute); it then moves only when told to
(the console, ``POST /sandbox/api/clock``), or ``--tick`` seconds per exchange, so sends made
one after another land on minutes of their own with the same dates in every run.
``python -m proxy --sandbox`` builds its in-process sandbox from the same variables. An
accounts file is a list of objects with the fields of
:class:`~proxy.sandbox.accounts.Account`, e.g.
``[{"username": "acme", "token": "acme-token", "credits": 500}]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path

import uvicorn
import yaml

from proxy.sandbox.accounts import DEMO_CREDITS, DEMO_TOKEN, DEMO_USERNAME, Account
from proxy.sandbox.app import create_app
from proxy.sandbox.clock import FixedClock, TickingClock
from proxy.sandbox.simulator import Sandbox

BANNER = """\
SMS Leads sandbox: the XML API at http://{host}:{port}/api (nothing leaves this machine).
  Console:      http://{host}:{port}/sandbox
  Demo account: username {username}, API token {token}, {credits} credits.
  Try:
    curl -s http://{host}:{port}/api -H 'Authorization: Bearer {token}' \\
         -H 'Content-Type: application/xml' \\
         -d '<balance><user><username>{username}</username></user></balance>'
"""


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: Sequence[str] | None,
               env: Mapping[str, str] = os.environ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smsleads-sandbox",
                                     description="Serve the SMS Leads XML API sandbox.")
    parser.add_argument("--host", default=env.get("SANDBOX_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("SANDBOX_PORT", "9000")))
    parser.add_argument("--db", default=env.get("SANDBOX_DB"),
                        help="SQLite file that keeps the state across restarts")
    parser.add_argument("--quirks", action="store_true",
                        default=_flag(env.get("SANDBOX_QUIRKS", "")),
                        help="answer with the quirks of the provider's examples "
                             "(docs/upstream-protocol.md#quirks)")
    parser.add_argument("--seed", type=int,
                        default=int(env["SANDBOX_SEED"]) if env.get("SANDBOX_SEED") else None)
    parser.add_argument("--accounts", default=env.get("SANDBOX_ACCOUNTS"),
                        help="JSON or YAML file: a list of extra accounts")
    parser.add_argument("--dlr-delay", type=float,
                        default=float(env.get("SANDBOX_DLR_DELAY", "2")),
                        help="seconds from a send to its delivery reports (default 2)")
    parser.add_argument("--failure-rate", type=float,
                        default=float(env.get("SANDBOX_FAILURE_RATE", "0.1")),
                        help="share of destinations whose delivery fails (default 0.1)")
    parser.add_argument("--clock", type=fixed_clock, default=env.get("SANDBOX_CLOCK"),
                        help="a fixed clock starting at this RFC 3339 moment (or 'now'), "
                             "moved by hand or by --tick; default: the system clock")
    parser.add_argument("--tick", type=float, default=float(env.get("SANDBOX_TICK", "0")),
                        help="seconds the --clock moves per exchange (default 0: it stays)")
    return parser.parse_args(argv)


def fixed_clock(text: str) -> FixedClock:
    """``--clock``: an RFC 3339 date-time with its offset, or ``now``."""
    if text.strip().lower() == "now":
        return FixedClock()
    try:
        return FixedClock(datetime.fromisoformat(text.strip()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} (--clock, SANDBOX_CLOCK) is not a date-time with an offset "
            "(2026-11-25T22:14:00+02:00) or 'now'") from exc


def load_accounts(path: str | os.PathLike[str]) -> list[Account]:
    """Accounts from a JSON or YAML file (YAML reads JSON too)."""
    data = yaml.safe_load(Path(path).read_text("utf-8"))
    known = {f.name for f in fields(Account)}
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of accounts")
    accounts = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not {"username", "token", "credits"} <= item.keys():
            raise ValueError(f"{path}[{index}]: needs username, token and credits")
        if item.keys() - known:
            raise ValueError(f"{path}[{index}]: unknown fields {sorted(item.keys() - known)}")
        accounts.append(Account(**{**item, "verified": set(item.get("verified", ()))}))
    return accounts


def build(args: argparse.Namespace) -> Sandbox:
    accounts = load_accounts(args.accounts) if args.accounts else []
    clock = args.clock
    if clock is not None and args.tick:
        clock = TickingClock(clock.now(), timedelta(seconds=args.tick))
    return Sandbox(clock=clock, seed=args.seed, quirks=args.quirks, accounts=accounts,
                   db_path=args.db, dlr_delay=timedelta(seconds=args.dlr_delay),
                   failure_rate=args.failure_rate)


def from_environment(env: Mapping[str, str] = os.environ) -> Sandbox:
    """The sandbox that ``python -m proxy --sandbox`` embeds, configured by SANDBOX_*."""
    return build(parse_args([], env))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        sandbox = build(args)
    except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        sys.exit(f"smsleads-sandbox: {exc}")
    print(BANNER.format(host=args.host, port=args.port, username=DEMO_USERNAME,
                        token=DEMO_TOKEN, credits=DEMO_CREDITS), flush=True)
    try:
        uvicorn.run(create_app(sandbox), host=args.host, port=args.port)
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
