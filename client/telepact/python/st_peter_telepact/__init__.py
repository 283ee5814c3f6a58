"""Telepact ``on_auth`` adapter for st-peter.

    options.on_auth = OnAuth(target="http://127.0.0.1:50051", roles_db="bakery-roles.db")
    options.middleware = options.on_auth.middleware()

With ``ST_PETER_API_KEY`` set (or ``api_key=...``) it runs as that st-peter service account,
as a st-peter started with ``--require-caller-credentials`` requires.

The hook verifies ``@auth_`` (``Session`` or ``Password``) with st-peter and returns the
user's identity headers from the local roles table. It returns *every* header the adapter
owns, ``None`` for keys the user's row lacks, and refuses a request that sends an owned
header itself. Any refusal raises :class:`AuthError`; Telepact then answers
``ErrorUnauthenticated_``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys
from typing import Any, Awaitable, Callable, Iterable, Optional

from . import _native
from ._native import AuthError

__all__ = ["AuthError", "OnAuth"]

# The headers dict a request was verified with, in this request's context: the middleware
# keeps owned headers only on the very request the hook answered.
_verified: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar(
    "st_peter_telepact_verified", default=None
)


def _not_json(value: object) -> None:
    # Binary header values say nothing about identity; only their keys matter here.
    return None


def _settle(answer: "asyncio.Future[str]", error: bool, value: str) -> None:
    # On the loop's thread. The caller may have stopped waiting (cancelled) meanwhile.
    if answer.done():
        return
    if error:
        answer.set_exception(AuthError(value))
    else:
        answer.set_result(value)


class OnAuth:
    """An async ``on_auth`` hook for a Telepact ``Server``.

    Safe to share across threads and event loops: calls run on one process-wide Tokio
    runtime, sharing one st-peter connection and one verification cache. The cache follows
    st-peter's revocation feed (one stream, opened by the first verification): a logout,
    revoked session, disabled user or role change made anywhere evicts what it makes stale
    within about a second. While the feed is subscribed answers are kept ``cache_ttl``
    seconds (default 300); while it is not (st-peter unreachable, between streams, or
    ``revocation_feed=False``) only ``fallback_ttl`` seconds (default 5), which is then how
    long a token revoked elsewhere can still pass. Awaiting the hook never blocks the event
    loop and takes no thread from it: the answer comes back through
    ``loop.call_soon_threadsafe``. st-peter unreachable means refused, except for answers
    still cached; ``request_timeout`` (seconds, default 5) bounds each call to st-peter.

    Service identity: with ``api_key`` (a service account's key, ``stk_...``, from
    ``st-peter service key create``), or without it when the environment variable
    ``ST_PETER_API_KEY`` holds one, the adapter acts as that service account. It exchanges
    the key for a short-lived token of the account, refreshes it before it expires, and
    sends it with every verification and the revocation feed, as a st-peter started with
    ``--require-caller-credentials`` demands. A malformed key raises ``ValueError`` here; a
    key st-peter rejects, or no key where st-peter wants one, refuses every request
    (:class:`AuthError`). Neither the key nor the token is ever printed.

    The constructor opens the roles file and blocks while it does: build the hook once, at
    start-up, not per request.
    """

    def __init__(
        self,
        target: str = "http://127.0.0.1:50051",
        roles_db: str = "roles.db",
        *,
        owned_headers: Iterable[str] = (),
        cache_ttl: Optional[float] = None,
        request_timeout: Optional[float] = None,
        fallback_ttl: Optional[float] = None,
        revocation_feed: bool = True,
        api_key: Optional[str] = None,
    ) -> None:
        self._native = _native.OnAuth(
            target,
            str(roles_db),
            list(owned_headers),
            cache_ttl,
            request_timeout,
            fallback_ttl,
            revocation_feed,
            api_key,
        )

    async def __call__(self, headers: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(headers, default=_not_json)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def settle(error: bool, value: str) -> None:
            # On a runtime thread, once st-peter and the roles file have answered.
            try:
                loop.call_soon_threadsafe(_settle, answer, error, value)
            except RuntimeError:
                pass  # the loop is closed: nobody is left waiting

        pending = self._native.start_authenticate(payload, settle)
        try:
            identity = json.loads(await answer)
        finally:
            pending.cancel()  # a no-op unless the caller stopped waiting
        _verified.set(headers)
        return identity

    def authenticate(self, headers: dict[str, Any]) -> dict[str, Any]:
        """The blocking form of the hook, for code without an event loop."""
        return json.loads(self._native.authenticate(json.dumps(headers, default=_not_json)))

    def owned_headers(self) -> list[str]:
        """The header keys this adapter sets (and strips where it did not set them). Read
        from memory, so it is cheap enough for every request on the loop's thread; a key
        granted by another process (the ``grant`` CLI) is seen within about 250 ms."""
        return self._native.owned_headers()

    def feed_status(self) -> dict[str, Any]:
        """The revocation feed, for operators and tests: ``subscribed`` (a stream is caught
        up, so answers get the full ``cache_ttl``), ``last_sequence`` (the last one it saw)
        and ``subscriptions`` (streams opened so far). Read from memory."""
        subscribed, last_sequence, subscriptions = self._native.feed_status()
        return {
            "subscribed": subscribed,
            "last_sequence": last_sequence,
            "subscriptions": subscriptions,
        }

    def middleware(
        self,
        inner: Optional[Callable[[Any, Any], Awaitable[Any]]] = None,
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        """A Telepact middleware that removes owned headers from any request this hook did
        not answer, such as calls to functions declared ``"$authenticated": false`` (which
        never reach ``on_auth``), so a client cannot slip ``@employeeId`` past it. Then it
        calls ``inner(message, function_router)``, or routes the message."""

        async def strip_unverified(message: Any, function_router: Any) -> Any:
            if _verified.get() is not message.headers:
                for key in self.owned_headers():
                    message.headers.pop(key, None)
            if inner is None:
                return await function_router.route(message)
            return await inner(message, function_router)

        return strip_unverified


def _cli() -> None:
    sys.exit(_native.cli_main(sys.argv))
