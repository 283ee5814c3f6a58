"""The bakery shift board: a Telepact server authenticated through st-peter.

    python bakery_server.py --st-peter http://127.0.0.1:50051 --roles-db bakery-roles.db

Serves ``POST /api/telepact``. Identity comes only from the st-peter adapter: handlers read
``@employeeId`` and ``@station``, which the adapter sets (or strips) on every request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, TextIO

from st_peter_telepact import OnAuth
from telepact import FunctionRouter, Message, Server, TelepactSchema

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
OVEN = "oven"


def pastry_for(station: str | None) -> str:
    return "sesame loaf" if station == OVEN else "almond croissant"


async def my_shift(function_name: str, message: Message) -> Message:
    headers = message.headers
    station = headers.get("@station")
    return Message(
        {},
        {
            "Ok_": {
                "employeeId": headers["@employeeId"],
                "station": station,
                "pastry": pastry_for(station),
            }
        },
    )


async def approve_special(function_name: str, message: Message) -> Message:
    headers = message.headers
    if headers.get("@station") != OVEN:
        return Message(
            {},
            {"ErrorUnauthorized_": {"message!": "oven station required to approve the special"}},
        )
    special = message.get_body_payload()["special"]
    return Message({}, {"Ok_": {"special": special, "approvedBy": headers["@employeeId"]}})


async def menu(function_name: str, message: Message) -> Message:
    # Open to anyone: `@employeeId` is here only if the adapter verified it, because the
    # adapter's middleware strips it from requests that skipped authentication.
    staff = message.headers.get("@employeeId") is not None
    return Message(
        {},
        {"Ok_": {"items": ["sesame loaf", "almond croissant", "rye"], "staffPrices": staff}},
    )


class IdentityLog:
    """Middleware that writes one JSON line per authenticated request: the function and
    the identity headers the adapter set. Requests without a verified identity (refused
    ones never get here; open ones are stripped first) are not logged."""

    def __init__(self, on_auth: OnAuth, sink: TextIO) -> None:
        self._on_auth = on_auth
        self._sink = sink
        self._lock = threading.Lock()

    async def __call__(self, message: Message, function_router: FunctionRouter) -> Message:
        owned = self._on_auth.owned_headers()
        identity = {key: message.headers[key] for key in owned if key in message.headers}
        if identity:
            line = json.dumps({"function": message.get_body_target(), **identity}, sort_keys=True)
            with self._lock:
                self._sink.write(line + "\n")
                self._sink.flush()
        return await function_router.route(message)


def build_server(on_auth: OnAuth, identity_log: TextIO,
                 on_error: Callable[[Exception], None] | None = None) -> Server:
    schema = TelepactSchema.from_directory(str(SCHEMA_DIR))
    router = FunctionRouter(
        {"fn.myShift": my_shift, "fn.approveSpecial": approve_special, "fn.menu": menu}
    )
    options = Server.Options()
    options.on_auth = on_auth
    # Strip adapter-owned headers from requests the adapter did not answer, then log.
    options.middleware = on_auth.middleware(IdentityLog(on_auth, identity_log))
    if on_error is not None:
        options.on_error = on_error
    return Server(schema, router, options)


def make_http_server(telepact: Server, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/api/telepact":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            # Each request runs on its own thread with its own event loop.
            response = asyncio.run(telepact.process(body))
            self.send_response(200)
            content_type = "application/octet-stream" if "@bin_" in response.headers else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(response.bytes)))
            self.end_headers()
            self.wfile.write(response.bytes)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the identity log is the request log

    class Http(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # the default 5 resets connections under a burst

    return Http((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8000", help="host:port to serve on")
    parser.add_argument("--st-peter", default="http://127.0.0.1:50051", help="st-peter's address")
    parser.add_argument("--roles-db", default="bakery-roles.db", help="the local roles file")
    parser.add_argument("--identity-log", help="file for the identity log (default stdout)")
    args = parser.parse_args(argv)

    sink = open(args.identity_log, "a", encoding="utf-8") if args.identity_log else sys.stdout
    on_auth = OnAuth(target=args.st_peter, roles_db=args.roles_db)
    host, _, port = args.listen.rpartition(":")
    http = make_http_server(build_server(on_auth, sink), host, int(port))
    print(f"bakery shift board on http://{args.listen}/api/telepact", file=sys.stderr)
    try:
        http.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        http.server_close()


if __name__ == "__main__":
    main()
