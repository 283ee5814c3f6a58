"""The adapter inside one asyncio event loop: awaiting it never blocks the loop's thread, and
it takes no thread from the loop's default executor (which the loop itself needs, e.g. for
every ``getaddrinfo``)."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time

from bakery_server import build_server
from st_peter_telepact import AuthError, OnAuth
from telepact import Message

UNAUTHENTICATED = {"ErrorUnauthenticated_": {"message!": "Valid authentication is required."}}


def password(username: str, secret: str) -> dict:
    return {"@auth_": {"Password": {"username": username, "password": secret}}}


class Heartbeat:
    """Ticks every 10 ms on the loop and keeps the longest gap between two ticks: a gap much
    over 10 ms means something held the loop's thread."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task | None = None

    async def _beat(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> "Heartbeat":
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def test_one_loop_keeps_running_while_many_requests_wait_for_st_peter(tmp_path):
    # st-peter as slow as it gets: a listener that completes TCP handshakes and never
    # answers, so every verification waits out the 1 s request timeout.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(128)
    calls = 32
    try:
        adapter = OnAuth(target=f"http://127.0.0.1:{hole.getsockname()[1]}",
                         roles_db=str(tmp_path / "roles.db"), request_timeout=1.0)
        telepact = build_server(adapter, io.StringIO())
        body = json.dumps([password("lead-baker", "open sesame, said Ali Baba"), {"fn.myShift": {}}]).encode()

        async def main() -> tuple[list, float, float, float, BaseException | None]:
            loop = asyncio.get_running_loop()
            with Heartbeat() as heartbeat:
                started = time.monotonic()
                requests = [asyncio.ensure_future(telepact.process(body)) for _ in range(calls)]
                # One more caller gives up early: cancelling it must not disturb the rest.
                impatient: BaseException | None = None
                try:
                    await asyncio.wait_for(adapter(password("cashier", "knock knock, who goes there")), 0.2)
                except BaseException as e:  # asserted below
                    impatient = e
                # While all of them wait, the loop's own executor work runs at once.
                probe = time.monotonic()
                await loop.getaddrinfo("127.0.0.1", 80)
                probe = time.monotonic() - probe
                responses = await asyncio.gather(*requests)
                elapsed = time.monotonic() - started
            return responses, elapsed, probe, heartbeat.longest, impatient

        responses, elapsed, probe, longest_gap, impatient = asyncio.run(main())
    finally:
        hole.close()
    assert [json.loads(r.bytes)[1] for r in responses] == [UNAUTHENTICATED] * calls
    assert isinstance(impatient, asyncio.TimeoutError), impatient
    # Each call waits on st-peter without holding a thread: 32 calls take one timeout,
    # not 32 spread over the handful of threads a loop's default executor has.
    assert elapsed < 3.0, f"{calls} requests of a 1 s timeout took {elapsed:.1f} s"
    assert probe < 0.5, f"getaddrinfo waited {probe:.2f} s for the loop's executor"
    assert longest_gap < 0.25, f"the loop stood still for {longest_gap * 1000:.0f} ms"


def test_one_loop_serves_many_real_requests_while_it_keeps_ticking(bakery, tmp_path):
    roles_db = tmp_path / "roles.db"
    owner = bakery.grant_cli("login", "--target", bakery.st_peter.target, "--identifier",
                             "owner", "--password-stdin", "--json", stdin="owner of the corner bakery\n")
    assert owner.returncode == 0, owner.stderr
    owner = json.loads(owner.stdout)
    granted = bakery.grant_cli(
        "grant", "--target", bakery.st_peter.target, "--roles-db", str(roles_db),
        "--identifier", "lead-baker", "--set", "@employeeId=baker-001", "--set",
        "@station=oven", "--actor-id", owner["user_id"], token=owner["token"])
    assert granted.returncode == 0, granted.stderr
    tokens = []
    for _ in range(3):
        login = bakery.grant_cli("login", "--target", bakery.st_peter.target, "--identifier",
                                 "lead-baker", "--password-stdin", stdin="open sesame, said Ali Baba\n")
        assert login.returncode == 0, login.stderr
        tokens.append(login.stdout.strip())
    adapter = OnAuth(target=bakery.st_peter.target, roles_db=str(roles_db))
    log = io.StringIO()
    telepact = build_server(adapter, log)
    bodies = [json.dumps([{"@auth_": {"Session": {"token": tokens[i % 3]}}},
                          {"fn.myShift": {}}]).encode() for i in range(12)]
    bodies.append(json.dumps([password("lead-baker", "open sesame, said Ali Baba"), {"fn.myShift": {}}]).encode())

    async def main() -> tuple[list, float]:
        with Heartbeat() as heartbeat:
            responses = await asyncio.gather(*(telepact.process(body) for body in bodies))
        return responses, heartbeat.longest

    responses, longest_gap = asyncio.run(main())
    expected = {"Ok_": {"employeeId": "baker-001", "station": "oven", "pastry": "sesame loaf"}}
    assert [json.loads(r.bytes)[1] for r in responses] == [expected] * len(bodies)
    assert len(log.getvalue().splitlines()) == len(bodies)
    # Verifications and a login (a password hash at st-peter) ran; the loop never waited.
    assert longest_gap < 0.25, f"the loop stood still for {longest_gap * 1000:.0f} ms"
    # The blocking form still works, for code without an event loop.
    assert adapter.authenticate(password("lead-baker", "open sesame, said Ali Baba"))["@station"] == "oven"


def test_owned_headers_are_read_from_memory_and_follow_grants_from_another_process(
        bakery, tmp_path):
    roles_db = tmp_path / "roles.db"
    adapter = OnAuth(target=bakery.st_peter.target, roles_db=str(roles_db),
                     owned_headers=["@employeeId"])
    assert adapter.owned_headers() == ["@employeeId"]
    # The middleware asks for the owned set on the loop's thread for every request, so it
    # must be a memory read (about a microsecond), not a SQLite query through the runtime
    # (tens of microseconds at best, and as long as the database makes it wait at worst).
    started = time.perf_counter()
    for _ in range(10_000):
        adapter.owned_headers()
    elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"10,000 owned_headers() took {elapsed * 1000:.0f} ms: not from memory"

    # A grant by the CLI, another process writing the same file, adds a key: the adapter
    # owns it soon after, without a query per request.
    owner = bakery.grant_cli("login", "--target", bakery.st_peter.target, "--identifier",
                             "owner", "--password-stdin", "--json", stdin="owner of the corner bakery\n")
    owner = json.loads(owner.stdout)
    granted = bakery.grant_cli(
        "grant", "--target", bakery.st_peter.target, "--roles-db", str(roles_db),
        "--identifier", "cashier", "--set", "@shiftLead=yes", "--actor-id",
        owner["user_id"], token=owner["token"])
    assert granted.returncode == 0, granted.stderr
    deadline = time.monotonic() + 2.0
    while "@shiftLead" not in adapter.owned_headers():
        assert time.monotonic() < deadline, "a key granted by another process never became owned"
        time.sleep(0.02)
    assert adapter.owned_headers() == ["@employeeId", "@shiftLead"]

    seen: list[dict] = []

    async def inner(message: Message, function_router: object) -> Message:
        seen.append(dict(message.headers))
        return Message({}, {"Ok_": {}})

    async def main() -> None:
        middleware = adapter.middleware(inner)
        # A request that skipped on_auth keeps none of the owned keys it sent...
        await middleware(Message({"@shiftLead": "yes", "@other": 1}, {"fn.menu": {}}), None)
        # ...and one that sends an owned key to on_auth is refused as a forgery.
        try:
            await adapter({**password("cashier", "knock knock, who goes there"), "@shiftLead": "no"})
        except AuthError as e:
            assert "@shiftLead" in str(e)
        else:
            raise AssertionError("a forged owned header passed")
        identity = await adapter(password("cashier", "knock knock, who goes there"))
        assert identity == {"@employeeId": None, "@shiftLead": "yes"}

    asyncio.run(main())
    assert seen == [{"@other": 1}]
