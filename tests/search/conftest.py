"""A real, throwaway PostgreSQL server for the search tests (Optuna's RDB storage against PostgreSQL).

The ``postgres_url`` fixture runs the server binaries of the machine (``initdb``, ``pg_ctl``, ``postgres``)
on a temporary data directory and a free loopback port, and stops the server when the module is done.
Without the binaries the tests are skipped, except under CI (``CI`` set), where they fail: CI installs
Debian's ``postgresql`` package in ``.ci/run`` so that these tests run there.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

_BINARIES = ("initdb", "pg_ctl", "postgres")
_USER = "archlab"  # the server's superuser, made by initdb; trust auth, so no password
_DATABASE = "archlab_test"
_SERVICE_USER = "postgres"  # the system user Debian's package creates; the server refuses to run as root


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> NoReturn:
    """Skip, or under CI fail: CI must exercise the server rather than silently skip it."""
    if _in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure rather than a skip)", pytrace=False)
    pytest.skip(reason)


def _version_key(bin_dir: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: newest by number, so 16 beats 9.6
    return tuple(int(n) for n in re.findall(r"\d+", Path(bin_dir).parent.name))


def _find_binaries() -> dict[str, str] | None:
    on_path = {name: shutil.which(name) for name in _BINARIES}
    if all(on_path.values()):
        return {name: str(path) for name, path in on_path.items()}
    # Debian installs the server off PATH, in one folder per major version.
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        found = {name: os.path.join(bin_dir, name) for name in _BINARIES}
        if all(os.access(path, os.X_OK) for path in found.values()):
            return found
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid)


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL of a fresh database on a PostgreSQL server that lives as long as the module."""
    binaries = _find_binaries()
    if binaries is None:
        _unavailable("PostgreSQL server binaries not found; .ci/run installs Debian's postgresql package")

    as_root = os.geteuid() == 0
    if as_root:
        # initdb and postgres refuse to run as root, so run them as the postgres system user, in a folder
        # of its own: pytest's temp folders are private to root, and the postgres user could not enter them.
        try:
            service = pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            _unavailable(f"running as root and there is no {_SERVICE_USER!r} system user to run PostgreSQL as")
        base = Path(tempfile.mkdtemp(prefix="archlab-pg-"))
        os.chmod(base, 0o755)
    else:
        base = tmp_path_factory.mktemp("postgres")
    data, sockets, log = base / "data", base / "sockets", base / "server.log"
    sockets.mkdir()
    if as_root:
        _chown_tree(base, service.pw_uid, service.pw_gid)

    def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
        if as_root:
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", _SERVICE_USER, "--", *cmd]
            else:
                cmd = ["su", _SERVICE_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]
        # cwd=base: the postgres user may not be allowed into the caller's working directory
        return subprocess.run(cmd, cwd=base, capture_output=True, text=True, **kwargs)

    started = False
    try:
        done = run(
            [binaries["initdb"], "-D", str(data), "-U", _USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            timeout=120,
        )
        if done.returncode != 0:
            pytest.fail(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)

        # The port is free when picked but could be taken before the server binds it: try a few.
        for _attempt in range(3):
            port = _free_port()
            options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
            done = run(
                [binaries["pg_ctl"], "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
                timeout=120,
            )
            started = done.returncode == 0
            if started or "could not bind" not in _log_tail(log):
                break
        if not started:
            pytest.fail(
                f"PostgreSQL did not start ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                f"--- tail of {log} ---\n{_log_tail(log)}",
                pytrace=False,
            )

        try:
            import psycopg2
        except ImportError:
            _unavailable("psycopg2 is not installed (it comes with the dev extra)")
        connection = psycopg2.connect(host="127.0.0.1", port=port, user=_USER, dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {_DATABASE}")
        finally:
            connection.close()

        yield f"postgresql+psycopg2://{_USER}@127.0.0.1:{port}/{_DATABASE}"
    finally:
        if started:
            # Always stop it, passed or failed; immediate: the data directory is thrown away anyway.
            done = run([binaries["pg_ctl"], "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=60)
            if done.returncode != 0:
                # Last resort, so that no server outlives the tests: SIGQUIT to the postmaster pg_ctl started.
                print(f"pg_ctl stop failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
                try:
                    os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)
                except (OSError, ValueError, IndexError):
                    pass
        if as_root:
            shutil.rmtree(base, ignore_errors=True)
