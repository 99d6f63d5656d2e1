"""colorize-review: people prune the curated images in the FiftyOne App; every decision
is kept in git (data/curation/decisions.csv), the truth `dvc repro` reapplies.

    colorize-review app [--port 5151]   # the App on 127.0.0.1 (`make review`); decisions saved on exit
    colorize-review sync                # export the App's decisions now (`make sync`)

Also `python -m colorize.cli.review`. Tag a sample `reject` plus `reason:<why>` (or
`reject:<why>`), or `keep` to overrule an automatic drop. Ctrl-C, `kill` and closing
the terminal all end the App the same way: decisions saved, its server and mongod gone.
"""
from __future__ import annotations

import argparse
import contextlib
import signal

from colorize.common import paths
from colorize.common.errors import run_main
from colorize.curation import fodb
from colorize.curation.review import export_decisions, open_dataset

SERVER_GRACE_S = 3  # the App's server exits within ~2.5 s of SIGTERM


class _StopOnSignals:
    """Ctrl-C, `kill` and closing the terminal all end the App the same way: decisions saved.

    Installed explicitly: a command started with `&` from a script inherits SIGINT ignored,
    and Python then installs no KeyboardInterrupt handler of its own. SIGHUP ignored on
    purpose (`nohup`) stays ignored: the App is meant to outlive the terminal there. The
    first signal stops the App; later ones are ignored, so a second Ctrl-C cannot cut the
    export short.
    """

    def __init__(self):
        self.stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            signal.signal(sig, self)

    def __call__(self, signum, frame):
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt


def _close_app(session) -> None:
    """Stop the App's server now: left to FiftyOne, it may outlive us by seconds, or for good.

    FiftyOne runs the server under a watcher (`service/main.py --51-service server`) in a
    process group of its own, which Ctrl-C does not reach; the watcher is to stop the
    server when our end of its stdin closes, and exits when the server does. The server
    keeps nothing of its own (tags are in the database): a short grace, then SIGKILL.
    """
    import psutil  # fiftyone's own dependency

    watchers, servers = _app_servers()
    for p in servers:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(servers + watchers, timeout=SERVER_GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    session.close()


def _app_servers() -> tuple[list, list]:
    """FiftyOne's watchers of the App's server among our children, and the servers under them."""
    import psutil

    watchers, servers = [], []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "--51-service" in child.cmdline():
                servers += child.children(recursive=True)
                watchers.append(child)
    return watchers, servers


def launch_app(name: str | None = None, port: int = 5151, address: str = "127.0.0.1") -> None:
    import fiftyone as fo

    ds = open_dataset(name)
    _StopOnSignals()
    session = None
    try:
        session = fo.launch_app(ds, port=port, address=address, auto=False)
        print(f"review: the FiftyOne App is at http://{address}:{port}/ — tag samples `reject` (+ `reason:<why>`) "
              f"or `keep`; press Ctrl-C to save decisions to {paths.DECISIONS}", flush=True)
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        out = export_decisions(name)
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP); the file is written
            print(f"review: {len(out)} decision(s) saved to {paths.DECISIONS}; commit it, then `dvc repro`", flush=True)
        if session is not None:
            _close_app(session)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="colorize-review", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    app = sub.add_parser("app", help="open the FiftyOne App on 127.0.0.1; decisions are saved on exit")
    app.add_argument("--port", type=int, default=5151)
    app.add_argument("--address", default="127.0.0.1", help="bind address (default: loopback only)")
    app.add_argument("--dataset", help="default: see colorize.curation.review.dataset_name")
    sync = sub.add_parser("sync", help="export the App's decisions to data/curation/decisions.csv")
    sync.add_argument("--dataset", help="default: see colorize.curation.review.dataset_name")
    args = parser.parse_args(argv)
    with fodb.database():
        if args.command == "app":
            launch_app(args.dataset, args.port, args.address)
        else:
            out = export_decisions(args.dataset)
            print(f"review: {len(out)} decision(s) in {paths.DECISIONS}")


def run() -> None:
    """The `colorize-review` console script."""
    run_main(main)


if __name__ == "__main__":
    run()
