"""Checks of the MLflow store made before any trial starts: reachable in seconds, and right for the cluster."""

from __future__ import annotations

from collections.abc import Sequence

from sweeps.errors import TrackingUnavailable, UsageError
from sweeps.tracking.client import is_local_uri

__all__ = ["PREFLIGHT_TIMEOUT_S", "check_reachable", "check_tracking_uri"]

PREFLIGHT_TIMEOUT_S = 5.0


def _hosts(node_ips: Sequence[str]) -> list[str]:
    return sorted(set(node_ips))


def check_tracking_uri(uri: str, node_ips: Sequence[str]) -> None:
    """Refuse a local MLflow store (SQLite, file) when the cluster's nodes are on several hosts."""
    hosts = _hosts(node_ips)
    if len(hosts) <= 1 or not is_local_uri(uri):
        return
    raise UsageError(
        f"tracking.uri must be an MLflow tracking server on a multi-host Ray cluster "
        f"({len(hosts)} hosts: {', '.join(hosts)}), but got {uri!r}, a local store "
        "only one host can write. Run a server every node can reach, e.g. on the head node: "
        "`mlflow server --app-name sweeps --host 0.0.0.0 --port 5000 --backend-store-uri "
        "postgresql+psycopg://mlflow@localhost/mlflow --artifacts-destination /mnt/sweeps/mlflow/artifacts` "
        "(cluster.yaml starts one), and pass its http URI via tracking.uri=http://<head-ip>:5000 or "
        "MLFLOW_TRACKING_URI."
    )


def check_reachable(uri: str, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Raise TrackingUnavailable unless the store at `uri` answers within `timeout_s`.

    An HTTP server must answer MLflow's REST API; a database URI must accept a connection. A
    SQLite file or a local folder is created on first use, so there is nothing to check.
    """
    if uri.startswith(("http://", "https://")):
        from sweeps.tracking.http import TrackingHttp

        http = TrackingHttp(uri, connections=1)
        try:
            http.check(timeout_s)
        finally:
            http.close()
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        _check_database(uri, timeout_s)


def _check_database(uri: str, timeout_s: float) -> None:
    import sqlalchemy

    engine = None
    try:
        args = {"connect_timeout": max(1, int(timeout_s))} if uri.startswith(("postgresql", "mysql")) else {}
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        with engine.connect():
            pass
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise TrackingUnavailable(
            f"tracking.uri must name a database that accepts connections, but {_redacted(uri)} did not within "
            f"{timeout_s:g} s ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})."
        ) from exc
    finally:
        if engine is not None:
            engine.dispose()


def _redacted(uri: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:  # an unparseable URI: show only what follows its credentials
        return uri.rsplit("@", maxsplit=1)[-1]
