"""The shift board as a st-peter service account (issue 15): st-peter started with
``--require-caller-credentials`` and 3 s service tokens answers verifications only for
callers with a service token. The adapter gets its API key from ``ST_PETER_API_KEY`` (no
code), and the roles CLI grants as the service."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from bakery_server import build_server, make_http_server
from conftest import StPeter, st_peter_binary, telepact_cli_run
from st_peter_telepact import AuthError, OnAuth

UNAUTHENTICATED = {"ErrorUnauthenticated_": {"message!": "Valid authentication is required."}}
BAKER = ("lead-baker", "open sesame, said Ali Baba")
CASHIER = ("cashier", "knock knock, who goes there")


@dataclass
class Guarded:
    st_peter: StPeter
    roles_db: Path
    log: Path
    user_ids: dict
    # {"user_id", "key_id", "api_key"} of shift-board; kept out of failure messages.
    service: dict = field(default_factory=dict, repr=False)

    def audits(self, event: str, outcome: str) -> int:
        """st-peter's audit lines for this event and outcome so far."""
        return sum(
            1 for line in self.log.read_text(encoding="utf-8").splitlines()
            if " audit: " in line and f'event="{event}"' in line and f'outcome="{outcome}"' in line
        )

    def add_service(self, name: str) -> dict:
        user = self.st_peter.admin("service", "add", name)
        key = self.st_peter.admin("service", "key", "create", name)
        return {"user_id": user["user_id"], "key_id": key["key_id"], "api_key": key["api_key"]}

    def cli(self, *args: str, api_key: str | None = None) -> subprocess.CompletedProcess:
        return telepact_cli_run(*args, "--target", self.st_peter.target, "--roles-db",
                                str(self.roles_db), api_key=api_key)

    def token(self, handle: str, password: str) -> str:
        # Login is open to any caller, credentials or not.
        login = telepact_cli_run("login", "--target", self.st_peter.target, "--identifier",
                                 handle, "--password-stdin", stdin=password + "\n")
        assert login.returncode == 0, login.stderr
        return login.stdout.strip()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    tmp = tmp_path_factory.mktemp("guarded")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ST_PETER_")}
    st_peter = StPeter(st_peter_binary(), tmp / "st-peter.db", env=env,
                       serve_args=("--require-caller-credentials", "--api-token-ttl", "3s"),
                       log=tmp / "st-peter.log")
    user_ids = {}
    for handle, password in (BAKER, CASHIER):
        user = st_peter.admin("user", "add", "--handle", handle, "--email",
                              f"{handle}@bakery.example", "--password-stdin",
                              stdin=password + "\n")
        user_ids[handle] = user["user_id"]
    st_peter.start()
    guarded = Guarded(st_peter, tmp / "bakery-roles.db", tmp / "st-peter.log", user_ids)
    guarded.service = guarded.add_service("shift-board")
    try:
        yield guarded
    finally:
        st_peter.stop()


@pytest.fixture(scope="module")
def staff(guarded: Guarded) -> dict:
    """shift-board gets st-peter:lookup, then grants both rows with the CLI as itself."""
    guarded.st_peter.admin("user", "role", "grant", "shift-board", "st-peter:lookup")
    for identifier, sets in [
        ("lead-baker@bakery.example", ["@employeeId=baker-001", "@station=oven"]),
        ("cashier", ["@employeeId=cashier-002", "@station=counter"]),
    ]:
        args = ["grant", "--identifier", identifier, "--json"]
        for assignment in sets:
            args += ["--set", assignment]
        granted = guarded.cli(*args, api_key=guarded.service["api_key"])
        assert granted.returncode == 0, granted.stderr
        assert guarded.service["api_key"][4:] not in granted.stdout + granted.stderr
        assert json.loads(granted.stdout)["granted_by"] == guarded.service["user_id"]
    return guarded.service


@contextlib.contextmanager
def shift_board(on_auth: OnAuth) -> Iterator[str]:
    """The bakery's Telepact server with this adapter; yields its URL."""
    http = make_http_server(build_server(on_auth, io.StringIO()), "127.0.0.1", 0)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}/api/telepact"
    finally:
        http.shutdown()
        http.server_close()


def call(url: str, headers: dict, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps([headers, body]).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())[1]


def session(token: str) -> dict:
    return {"@auth_": {"Session": {"token": token}}}


def test_grant_as_a_service_needs_the_lookup_role(guarded: Guarded):
    till = guarded.add_service("till-printer")  # no st-peter:lookup
    args = ["grant", "--identifier", "cashier", "--set", "@employeeId=cashier-002"]
    refused = guarded.cli(*args, api_key=till["api_key"])
    assert refused.returncode != 0
    assert "may not look users up" in refused.stderr and "st-peter:lookup" in refused.stderr
    assert till["api_key"][4:] not in refused.stdout + refused.stderr
    assert not granted_by(guarded, till["user_id"])
    # The key from the environment only, never an argument.
    as_flag = guarded.cli(*args, "--api-key", till["api_key"])
    assert as_flag.returncode != 0
    # A revoked key is rejected, and said so.
    guarded.st_peter.admin("service", "key", "revoke", till["key_id"])
    guarded.st_peter.admin("user", "role", "grant", "till-printer", "st-peter:lookup")
    rejected = guarded.cli(*args, api_key=till["api_key"])
    assert rejected.returncode != 0
    assert "rejected the API key in ST_PETER_API_KEY" in rejected.stderr
    assert till["api_key"][4:] not in rejected.stdout + rejected.stderr
    assert not granted_by(guarded, till["user_id"])


def granted_by(guarded: Guarded, user_id: str) -> list:
    listed = telepact_cli_run("list", "--roles-db", str(guarded.roles_db), "--json")
    assert listed.returncode == 0, listed.stderr
    return [row for row in json.loads(listed.stdout) if row["granted_by"] == user_id]


def test_the_shift_board_runs_as_the_service_across_token_refreshes(
    guarded: Guarded, staff: dict, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ST_PETER_API_KEY", staff["api_key"])
    # No cache: every request is a VerifyToken, which st-peter answers only for a service.
    on_auth = OnAuth(target=guarded.st_peter.target, roles_db=str(guarded.roles_db),
                     cache_ttl=0, fallback_ttl=0)
    assert staff["api_key"][4:] not in repr(on_auth) + repr(vars(on_auth))
    token = guarded.token(*BAKER)
    exchanged, refused = guarded.audits("api_key", "exchanged"), guarded.audits("caller", "refused")
    requests = 0
    with shift_board(on_auth) as url:
        started = time.monotonic()
        # 10 s on 3 s service tokens: the adapter exchanges its key again every ~2 s.
        while time.monotonic() - started < 10:
            got = call(url, session(token), {"fn.myShift": {}})
            assert got == {"Ok_": {"employeeId": "baker-001", "station": "oven",
                                   "pastry": "sesame loaf"}}, f"request {requests}"
            requests += 1
            time.sleep(0.05)
    exchanges = guarded.audits("api_key", "exchanged") - exchanged
    print(f"{requests} requests in 10 s on 3 s service tokens: {exchanges} exchanges")
    assert 4 <= exchanges <= 7, exchanges
    # Refreshed before expiry: st-peter never refused a call, not even one retried.
    assert guarded.audits("caller", "refused") == refused


def test_an_adapter_without_a_key_is_refused_there(guarded: Guarded, staff: dict):
    token = guarded.token(*CASHIER)
    anonymous = OnAuth(target=guarded.st_peter.target, roles_db=str(guarded.roles_db),
                       cache_ttl=0, fallback_ttl=0)
    with pytest.raises(AuthError, match="caller credentials"):
        anonymous.authenticate(session(token))
    with shift_board(anonymous) as url:
        assert call(url, session(token), {"fn.myShift": {}}) == UNAUTHENTICATED

    made_up = OnAuth(target=guarded.st_peter.target, roles_db=str(guarded.roles_db),
                     api_key="stk_" + "A" * 43, cache_ttl=0, fallback_ttl=0)
    with pytest.raises(AuthError, match="rejected this adapter's API key"):
        made_up.authenticate(session(token))

    # A session token pasted as the key never leaves the process, nor shows in the error.
    with pytest.raises(ValueError, match="does not start with stk_") as error:
        OnAuth(target=guarded.st_peter.target, roles_db=str(guarded.roles_db), api_key=token)
    assert token[4:] not in str(error.value)
