"""The bakery shift board end to end: real st-peter, real Telepact server, real adapter."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from st_peter_telepact import AuthError, OnAuth

UNAUTHENTICATED = {"ErrorUnauthenticated_": {"message!": "Valid authentication is required."}}


def password(username: str, secret: str) -> dict:
    return {"@auth_": {"Password": {"username": username, "password": secret}}}


def session(token: str) -> dict:
    return {"@auth_": {"Session": {"token": token}}}


def result(response: list) -> dict:
    headers, body = response
    return body


@pytest.fixture(scope="module")
def staff(bakery):
    """The owner logs in with the CLI and grants the two staff rows with it."""
    login = bakery.grant_cli("login", "--target", bakery.st_peter.target, "--identifier",
                             "owner", "--password-stdin", "--json", stdin="owner of the corner bakery\n")
    assert login.returncode == 0, login.stderr
    owner = json.loads(login.stdout)
    assert owner["user_id"] == bakery.user_ids["owner"]
    for identifier, sets in [
        ("lead-baker", ["@employeeId=baker-001", "@station=oven"]),
        ("cashier@bakery.example", ["@employeeId=cashier-002", "@station=counter"]),
    ]:
        args = ["grant", "--target", bakery.st_peter.target, "--roles-db", str(bakery.roles_db),
                "--identifier", identifier, "--actor-id", owner["user_id"], "--json"]
        for assignment in sets:
            args += ["--set", assignment]
        granted = bakery.grant_cli(*args, token=owner["token"])
        assert granted.returncode == 0, granted.stderr
    return owner


def test_grant_takes_the_actor_token_from_the_environment_only(bakery, staff):
    args = ["grant", "--target", bakery.st_peter.target, "--roles-db", str(bakery.roles_db),
            "--identifier", "apprentice", "--set", "@employeeId=apprentice-003",
            "--actor-id", staff["user_id"]]
    refused = bakery.grant_cli(*args)
    assert refused.returncode != 0
    assert "ST_PETER_ACTOR_TOKEN" in refused.stderr
    no_flag = bakery.grant_cli(*args, "--actor-token", staff["token"])
    assert no_flag.returncode != 0
    listed = bakery.grant_cli("list", "--roles-db", str(bakery.roles_db), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["handle"]: row["headers"] for row in json.loads(listed.stdout)}
    assert rows == {
        "lead-baker": {"@employeeId": "baker-001", "@station": "oven"},
        "cashier": {"@employeeId": "cashier-002", "@station": "counter"},
    }


def test_lead_baker_works_the_oven(bakery, staff):
    got = bakery.call(password("lead-baker", "open sesame, said Ali Baba"), {"fn.myShift": {}})
    assert result(got) == {
        "Ok_": {"employeeId": "baker-001", "station": "oven", "pastry": "sesame loaf"}
    }


def test_cashier_works_the_counter(bakery, staff):
    got = bakery.call(password("cashier", "knock knock, who goes there"), {"fn.myShift": {}})
    assert result(got) == {
        "Ok_": {"employeeId": "cashier-002", "station": "counter", "pastry": "almond croissant"}
    }


def test_only_the_oven_approves_the_special(bakery, staff):
    body = {"fn.approveSpecial": {"special": "plum tart"}}
    got = bakery.call(password("cashier", "knock knock, who goes there"), body)
    assert result(got) == {
        "ErrorUnauthorized_": {"message!": "oven station required to approve the special"}
    }
    got = bakery.call(password("lead-baker", "open sesame, said Ali Baba"), body)
    assert result(got) == {"Ok_": {"special": "plum tart", "approvedBy": "baker-001"}}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(password("lead-baker", "opensesamE"), id="wrong password"),
        pytest.param(password("nobody", "open sesame, said Ali Baba"), id="unknown user"),
        pytest.param(password("apprentice", "flour power in the morning"), id="no role row"),
        pytest.param(session("stp_" + "A" * 43), id="made-up token"),
        pytest.param({}, id="no credentials"),
    ],
)
def test_refused_callers_are_unauthenticated(bakery, staff, headers):
    assert result(bakery.call(headers, {"fn.myShift": {}})) == UNAUTHENTICATED


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({**password("cashier", "knock knock, who goes there"), "@employeeId": "baker-001"},
                     id="valid login, spoofed employeeId"),
        pytest.param({**password("cashier", "knock knock, who goes there"), "@station": "oven"},
                     id="valid login, spoofed station"),
        pytest.param({**password("cashier", "knock knock, who goes there"), "@station": None},
                     id="valid login, spoofed null station"),
        pytest.param({"@employeeId": "baker-001", "@station": "oven"},
                     id="spoofed headers, no credentials"),
    ],
)
def test_spoofed_identity_headers_are_unauthenticated(bakery, staff, headers):
    for body in ({"fn.myShift": {}}, {"fn.approveSpecial": {"special": "plum tart"}}):
        assert result(bakery.call(headers, body)) == UNAUTHENTICATED


def test_open_functions_never_see_client_sent_identity(bakery, staff):
    spoofed = {"@employeeId": "baker-001", "@station": "oven"}
    got = bakery.call(spoofed, {"fn.menu": {}})
    assert result(got)["Ok_"]["staffPrices"] is False
    # fn.menu skips auth, so even real credentials are not verified there: no identity.
    got = bakery.call({**password("lead-baker", "open sesame, said Ali Baba"), **spoofed}, {"fn.menu": {}})
    assert result(got)["Ok_"]["staffPrices"] is False


def login_token(bakery, handle: str, secret: str) -> str:
    out = bakery.grant_cli("login", "--target", bakery.st_peter.target, "--identifier", handle,
                           "--password-stdin", stdin=secret + "\n")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_session_variant_with_a_token_from_login(bakery, staff):
    token = login_token(bakery, "lead-baker", "open sesame, said Ali Baba")
    assert token.startswith("stp_")
    got = bakery.call(session(token), {"fn.myShift": {}})
    assert result(got) == {
        "Ok_": {"employeeId": "baker-001", "station": "oven", "pastry": "sesame loaf"}
    }


def test_identity_log_holds_exactly_the_authenticated_requests(bakery, staff):
    before = len(bakery.log_lines())
    token = login_token(bakery, "cashier", "knock knock, who goes there")
    calls = [
        (password("lead-baker", "open sesame, said Ali Baba"), {"fn.myShift": {}}, True),
        (password("lead-baker", "wrong-password"), {"fn.myShift": {}}, False),
        (session(token), {"fn.approveSpecial": {"special": "rye"}}, True),
        ({"@employeeId": "baker-001"}, {"fn.myShift": {}}, False),
        ({"@employeeId": "baker-001"}, {"fn.menu": {}}, False),
        (password("apprentice", "flour power in the morning"), {"fn.myShift": {}}, False),
        (session(token), {"fn.myShift": {}}, True),
    ]
    for headers, body, _ in calls:
        bakery.call(headers, body)
    lines = bakery.log_lines()[before:]
    assert lines == [
        {"function": "fn.myShift", "@employeeId": "baker-001", "@station": "oven"},
        {"function": "fn.approveSpecial", "@employeeId": "cashier-002", "@station": "counter"},
        {"function": "fn.myShift", "@employeeId": "cashier-002", "@station": "counter"},
    ]
    text = bakery.identity_log.read_text()
    assert "open sesame, said Ali Baba" not in text and token not in text and "@auth_" not in text


def test_concurrent_requests_each_on_its_own_thread_and_event_loop(bakery, staff):
    tokens = {
        "lead-baker": login_token(bakery, "lead-baker", "open sesame, said Ali Baba"),
        "cashier": login_token(bakery, "cashier", "knock knock, who goes there"),
    }
    expected = {"lead-baker": "baker-001", "cashier": "cashier-002"}
    secrets = {"lead-baker": "open sesame, said Ali Baba", "cashier": "knock knock, who goes there"}
    jobs = []
    for i in range(16):
        handle = "lead-baker" if i % 2 else "cashier"
        headers = session(tokens[handle]) if i % 4 < 2 else password(handle, secrets[handle])
        jobs.append((handle, headers))
    barrier = threading.Barrier(len(jobs))
    results: dict[int, object] = {}

    def direct(i: int, headers: dict) -> None:
        barrier.wait()
        try:
            results[i] = asyncio.run(bakery.on_auth(dict(headers)))
        except BaseException as e:  # recorded and asserted below
            results[i] = e

    threads = [threading.Thread(target=direct, args=(i, h)) for i, (_, h) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, (handle, _) in enumerate(jobs):
        assert isinstance(results[i], dict), results[i]
        assert results[i]["@employeeId"] == expected[handle]

    # The same through the HTTP server, which runs asyncio.run() per request thread.
    http_results: dict[int, object] = {}
    barrier = threading.Barrier(len(jobs))

    def over_http(i: int, headers: dict) -> None:
        barrier.wait()
        http_results[i] = result(bakery.call(headers, {"fn.myShift": {}}))

    threads = [threading.Thread(target=over_http, args=(i, h)) for i, (_, h) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, (handle, _) in enumerate(jobs):
        assert http_results[i]["Ok_"]["employeeId"] == expected[handle], http_results[i]


def test_blocked_calls_do_not_hold_the_gil_or_each_other(bakery, staff):
    # A listener that completes TCP handshakes but never answers: every call waits for the
    # request timeout. Eight concurrent calls must take about one timeout, not eight.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    try:
        adapter = OnAuth(target=f"http://127.0.0.1:{hole.getsockname()[1]}",
                         roles_db=str(bakery.roles_db), request_timeout=1.0)
        errors: list[BaseException] = []
        ticks = 0

        def call() -> None:
            try:
                asyncio.run(adapter(password("lead-baker", "open sesame, said Ali Baba")))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=call) for _ in range(8)]
        started = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            ticks += 1  # Python keeps running here while the calls wait in Rust
            time.sleep(0.01)
        elapsed = time.monotonic() - started
    finally:
        hole.close()
    assert len(errors) == 8 and all(isinstance(e, AuthError) for e in errors), errors
    assert "unavailable" in str(errors[0])
    assert elapsed < 4.0, f"8 calls of a 1 s timeout took {elapsed:.1f} s: serialized"
    assert ticks > 20


def test_st_peter_stopped_fails_closed_except_cached_sessions(bakery, staff):
    cached = login_token(bakery, "lead-baker", "open sesame, said Ali Baba")
    fresh = login_token(bakery, "cashier", "knock knock, who goes there")
    assert "Ok_" in result(bakery.call(session(cached), {"fn.myShift": {}}))
    bakery.st_peter.stop()
    try:
        assert result(bakery.call(password("lead-baker", "open sesame, said Ali Baba"),
                                  {"fn.myShift": {}})) == UNAUTHENTICATED
        assert result(bakery.call(session(fresh), {"fn.myShift": {}})) == UNAUTHENTICATED
        # Verified a moment ago: the client's cache still vouches for it within its TTL.
        got = result(bakery.call(session(cached), {"fn.myShift": {}}))
        assert got["Ok_"]["employeeId"] == "baker-001"
    finally:
        bakery.st_peter.start()
    assert "Ok_" in result(bakery.call(session(fresh), {"fn.myShift": {}}))


def test_two_factor_users_must_use_the_session_variant(bakery, staff):
    # A separate user, so enrolling TOTP does not change the other tests' users.
    bakery.st_peter.admin("user", "add", "--handle", "pastry-chef", "--password-stdin",
                          stdin="puff pastry folded seven times\n")
    token = login_token(bakery, "pastry-chef", "puff pastry folded seven times")
    owner_args = ["grant", "--target", bakery.st_peter.target, "--roles-db",
                  str(bakery.roles_db), "--identifier", "pastry-chef", "--set",
                  "@employeeId=chef-004", "--set", "@station=oven", "--actor-id",
                  staff["user_id"]]
    assert bakery.grant_cli(*owner_args, token=staff["token"]).returncode == 0
    bakery.st_peter.admin("user", "totp", "enroll", "pastry-chef")
    got = bakery.call(password("pastry-chef", "puff pastry folded seven times"), {"fn.myShift": {}})
    assert result(got) == UNAUTHENTICATED
    # A session from a completed login (here one made before enrolment) still works.
    got = bakery.call(session(token), {"fn.myShift": {}})
    assert result(got)["Ok_"]["employeeId"] == "chef-004"
