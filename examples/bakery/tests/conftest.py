"""A real st-peter (the `st-peter` binary on a temp SQLite file), users made with its admin
CLI, identity rows granted with the `st-peter-telepact` CLI, and the bakery server on an
ephemeral port, all on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))

from bakery_server import build_server, make_http_server  # noqa: E402
from st_peter_telepact import OnAuth  # noqa: E402

USERS = {"owner": "owner of the corner bakery", "lead-baker": "open sesame, said Ali Baba", "cashier": "knock knock, who goes there",
         "apprentice": "flour power in the morning"}


def st_peter_binary() -> str:
    explicit = os.environ.get("ST_PETER_BIN")
    if explicit:
        return explicit
    built = REPO / "target" / "debug" / "st-peter"
    if not built.exists():
        subprocess.run(["cargo", "build", "-q", "-p", "st-peter-server"], cwd=REPO, check=True)
    return str(built)


def telepact_cli() -> str:
    # The console script installed beside this interpreter by `pip install ./client/telepact`.
    script = Path(sys.executable).parent / "st-peter-telepact"
    return str(script) if script.exists() else shutil.which("st-peter-telepact") or "st-peter-telepact"


@dataclass
class StPeter:
    binary: str
    database: Path
    port: int = 0  # 0 until started: the server picks its port and writes it to a ready file
    process: subprocess.Popen | None = None
    env: dict = field(default_factory=dict)
    serve_args: tuple = ()  # extra `serve` flags, e.g. --require-caller-credentials
    log: Path | None = None  # st-peter's stderr goes here when set (else nowhere)

    @property
    def target(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, *args: str, stdin: str | None = None) -> dict:
        out = subprocess.run(
            [self.binary, "--database-url", f"sqlite://{self.database}", "--json", *args],
            input=stdin, capture_output=True, text=True, check=True, env=self.env,
        )
        return json.loads(out.stdout)

    def start(self) -> None:
        """Serves on the port it had (or one it picks), and waits for the ready file that
        the server writes once its listener is bound."""
        ready = self.database.with_name("st-peter.ready")
        ready.unlink(missing_ok=True)
        stderr = open(self.log, "a", encoding="utf-8") if self.log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [self.binary, "--database-url", f"sqlite://{self.database}", "serve",
                 "--listen", f"127.0.0.1:{self.port}", "--ready-file", str(ready),
                 *self.serve_args],
                stdout=subprocess.DEVNULL, stderr=stderr, env=self.env,
            )
        finally:
            if self.log:
                stderr.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"st-peter exited with {self.process.returncode}")
            if ready.exists():
                self.port = int(ready.read_text().strip().rsplit(":", 1)[1])
                return
            time.sleep(0.02)
        raise RuntimeError("st-peter wrote no ready file within 30 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None


@dataclass
class Bakery:
    st_peter: StPeter
    roles_db: Path
    url: str
    identity_log: Path
    user_ids: dict
    on_auth: OnAuth

    def call(self, headers: dict, body: dict) -> list:
        request = urllib.request.Request(
            self.url, data=json.dumps([headers, body]).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def log_lines(self) -> list[dict]:
        text = self.identity_log.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line]

    def grant_cli(self, *args: str, token: str | None = None, stdin: str | None = None,
                  api_key: str | None = None):
        return telepact_cli_run(*args, token=token, stdin=stdin, api_key=api_key)


def telepact_cli_run(*args: str, token: str | None = None, stdin: str | None = None,
                     api_key: str | None = None) -> subprocess.CompletedProcess:
    """The roles CLI with the actor token and the service API key given here, or unset."""
    secrets = ("ST_PETER_ACTOR_TOKEN", "ST_PETER_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    if token is not None:
        env["ST_PETER_ACTOR_TOKEN"] = token
    if api_key is not None:
        env["ST_PETER_API_KEY"] = api_key
    return subprocess.run([telepact_cli(), *args], input=stdin, capture_output=True,
                          text=True, env=env)


@pytest.fixture(scope="session", autouse=True)
def no_api_key_from_the_shell():
    """An ST_PETER_API_KEY in the developer's shell would make every adapter here a service
    account; the tests that want one set it themselves."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("ST_PETER_API_KEY", raising=False)
        yield


@pytest.fixture(scope="module")
def bakery(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("bakery")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ST_PETER_")}
    st_peter = StPeter(st_peter_binary(), tmp / "st-peter.db", env=env)
    user_ids = {}
    for handle, password in USERS.items():
        user = st_peter.admin("user", "add", "--handle", handle, "--email",
                              f"{handle}@bakery.example", "--password-stdin",
                              stdin=password + "\n")
        user_ids[handle] = user["user_id"]
    st_peter.start()
    roles_db = tmp / "bakery-roles.db"
    identity_log = tmp / "identity.log"
    identity_log.touch()
    on_auth = OnAuth(target=st_peter.target, roles_db=str(roles_db))
    sink = open(identity_log, "a", encoding="utf-8")
    http = make_http_server(build_server(on_auth, sink), "127.0.0.1", 0)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    bakery = Bakery(st_peter, roles_db, f"http://127.0.0.1:{http.server_address[1]}/api/telepact",
                    identity_log, user_ids, on_auth)
    try:
        yield bakery
    finally:
        http.shutdown()
        http.server_close()
        sink.close()
        st_peter.stop()
