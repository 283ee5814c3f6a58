from typing import Any, Awaitable, Callable, Iterable, Optional

from ._native import AuthError as AuthError

__all__ = ["AuthError", "OnAuth"]

Middleware = Callable[[Any, Any], Awaitable[Any]]

class OnAuth:
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
    ) -> None: ...
    async def __call__(self, headers: dict[str, Any]) -> dict[str, Any]: ...
    def authenticate(self, headers: dict[str, Any]) -> dict[str, Any]: ...
    def owned_headers(self) -> list[str]: ...
    def feed_status(self) -> dict[str, Any]: ...
    def middleware(self, inner: Optional[Middleware] = None) -> Middleware: ...

def _cli() -> None: ...
