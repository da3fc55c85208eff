"""Pre-flight checks of the tracking store: a local store refused on several hosts, an absent server in seconds."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sweeps.config import CONFIG_DIR
from sweeps.errors import TrackingUnavailable, UsageError
from sweeps.tracking.preflight import check_reachable, check_tracking_uri

TWO_HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.2"]
ONE_HOST = ["127.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize(
    "uri", ["sqlite:///mlflow.db", "sqlite:////mnt/sweeps/mlflow.db", "file:///tmp/mlruns", "mlruns"]
)
def test_local_tracking_store_on_multi_host_cluster_is_refused(uri: str) -> None:
    with pytest.raises(
        UsageError,
        match=rf"tracking.uri must be an MLflow tracking server on a multi-host Ray cluster "
        rf"\(2 hosts: 10.0.0.1, 10.0.0.2\), but got '{uri}', a local store only one host can write\. "
        r"Run a server every node can reach, e.g. on the head node: `mlflow server --app-name sweeps --host 0.0.0.0 "
        r"--port 5000 .*--artifacts-destination .*` \(cluster.yaml starts one\), and pass its http URI via "
        r"tracking.uri=http://<head-ip>:5000 or MLFLOW_TRACKING_URI\.",
    ):
        check_tracking_uri(uri, TWO_HOSTS)


@pytest.mark.parametrize("uri", ["http://10.0.0.1:5000", "https://mlflow.example.com", "postgresql://u@db/mlflow"])
def test_server_tracking_uris_pass_on_multi_host_cluster(uri: str) -> None:
    check_tracking_uri(uri, TWO_HOSTS)


def test_sqlite_passes_on_one_host() -> None:
    check_tracking_uri("sqlite:///mlflow.db", ONE_HOST)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_that_is_not_there_fails_in_seconds() -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=rf"tracking.uri must name an MLflow tracking server that answers, "
                                                  rf"but {uri} did not within 2 s \(ConnectError"):
        check_reachable(uri, timeout_s=2)
    assert time.monotonic() - started < 10


class _Handler(BaseHTTPRequestHandler):
    status = 200
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        body = b'{"experiments": []}' if self.status == 200 else b"<html>nope</html>"
        try:
            self.send_response(self.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first: what the test wants
            return

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def fake_server(request: pytest.FixtureRequest) -> Iterator[str]:
    status, delay = request.param
    handler = type("H", (_Handler,), {"status": status, "delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("fake_server", [(200, 0.0)], indirect=True)
def test_a_server_answering_the_rest_api_passes(fake_server: str) -> None:
    check_reachable(fake_server, timeout_s=5)


@pytest.mark.parametrize("fake_server", [(403, 0.0)], indirect=True)
def test_a_server_refusing_the_client_says_how_to_authenticate(fake_server: str) -> None:
    with pytest.raises(TrackingUnavailable, match=r"refused this client \(HTTP 403\); set MLFLOW_TRACKING_USERNAME"):
        check_reachable(fake_server, timeout_s=5)


@pytest.mark.parametrize("fake_server", [(404, 0.0)], indirect=True)
def test_something_that_is_not_mlflow_is_refused(fake_server: str) -> None:
    with pytest.raises(TrackingUnavailable, match=r"answered MLflow's REST API with HTTP 404"):
        check_reachable(fake_server, timeout_s=5)


@pytest.mark.parametrize("fake_server", [(200, 2.0)], indirect=True)
def test_a_server_that_hangs_fails_at_the_timeout(fake_server: str) -> None:
    with pytest.raises(TrackingUnavailable, match=r"did not within 0.5 s \(ReadTimeout"):
        check_reachable(fake_server, timeout_s=0.5)


def test_a_database_that_is_not_there_fails_in_seconds_without_its_password() -> None:
    uri = f"postgresql+psycopg://user:secret@127.0.0.1:{_closed_port()}/mlflow"
    rule = r"a database that accepts connections, but postgresql\+psycopg://user:\*\*\*@127.0.0.1:\d+/mlflow did not"
    with pytest.raises(TrackingUnavailable, match=rule) as info:
        check_reachable(uri, timeout_s=2)
    assert "secret" not in str(info.value)


def test_local_stores_need_no_check() -> None:
    check_reachable("sqlite:////nonexistent-dir/mlflow.db")
    check_reachable("mlruns")


def test_sweeps_run_against_an_absent_server_fails_in_seconds_before_any_state(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sweeps.cli import app

    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", "--config", str(CONFIG_DIR / "smoke.yaml"), f"data.path={data_dir}",
                                      f"sweep.storage={tmp_path / 'state'}", f"tracking.uri={uri}"])
    assert time.monotonic() - started < 60, "seconds, not MLflow's minutes of retries"
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: tracking.uri must name an MLflow tracking server that answers, but {uri} "
                               "did not within 5 s"), lines[0]
    assert not (tmp_path / "state").exists(), "nothing recorded: the check runs before the sweep starts"
