"""Console entry point ``demolab-app``: gevent monkey-patching FIRST, then everything else."""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from .app import create_app  # noqa: E402  (imports pyramid, redis, pymongo, socketio)
from .audience import audience_url, make_server  # noqa: E402
from .config import load_settings  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demolab-app", description=__doc__)
    parser.add_argument("--config", help="INI file with a [demolab_app] section")
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default from config: 8080)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("demolab_app")
    settings = load_settings(args.config)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    app, services = create_app(settings)
    server = WSGIServer(
        (host, port),
        app,
        backlog=settings.backlog,
        log=logging.getLogger("demolab_app.access") if settings.access_log else None,
        error_log=logging.getLogger("demolab_app.http"),
    )

    audience = None

    def stop(signum: int) -> None:
        log.info("signal %s: stopping", signum)
        services.shutdown()
        if audience is not None:
            audience.stop(timeout=2)
        server.stop(timeout=2)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)
    server.start()
    # audience mode: the same app, read-only and capped, on the lab network address too
    audience = make_server(
        settings, app, server.server_port, backlog=settings.backlog, log=server.log,
        error_log=server.error_log,
    )  # fmt: skip
    services.audience = audience
    if audience is not None:
        audience.start()
        log.info("audience: %s", audience_url(settings, server.server_port))
    services.start()
    log.info(
        "demolab-app listening on http://%s:%s (ffmpeg: %s)",
        host, server.server_port, services.ffmpeg_version or "NOT FOUND",
    )  # fmt: skip
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
