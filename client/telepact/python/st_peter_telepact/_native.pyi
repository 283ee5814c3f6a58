from typing import Callable, Optional

class AuthError(Exception):
    """The request is refused: Telepact answers ErrorUnauthenticated_."""

class Pending:
    def cancel(self) -> None: ...

class OnAuth:
    def __init__(
        self,
        target: str,
        roles_db: str,
        owned_headers: list[str] = ...,
        cache_ttl: Optional[float] = None,
        request_timeout: Optional[float] = None,
        fallback_ttl: Optional[float] = None,
        revocation_feed: bool = True,
        api_key: Optional[str] = None,
    ) -> None: ...
    def authenticate(self, headers_json: str) -> str: ...
    def start_authenticate(
        self, headers_json: str, settle: Callable[[bool, str], None]
    ) -> Pending: ...
    def owned_headers(self) -> list[str]: ...
    def feed_status(self) -> tuple[bool, int, int]: ...

def cli_main(argv: list[str]) -> int: ...
