"""Real redis-server (and Redis Sentinel) processes on 127.0.0.1 free ports, for the tests.

``redis-server`` comes from Debian's redis-server package (./scripts/setup installs it);
Sentinel is ``redis-server <conf> --sentinel`` (the same binary). Nothing is persisted.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT = 20.0
PASSWORD = "redis-test-pw-Zq81"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "redis-server is not on PATH: run ./scripts/setup (it installs Debian's "
            "redis-server package as root) or install it (apt-get install redis-server)"
        )
    return found


def make_tls_files(directory: Path) -> Path:
    """A private CA and a server certificate for 127.0.0.1 it signed: ca.pem, server.pem,
    server.key in ``directory`` (returned)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("kstlib test CA"))
        .issuer_name(name("kstlib test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory


def _ping(port: int, password: str | None, tls: Path | None = None) -> bool:
    import redis

    extra: dict[str, Any] = {}
    if tls is not None:
        extra = {"ssl": True, "ssl_ca_certs": str(tls / "ca.pem")}
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        **extra,
    )
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


@dataclass
class RedisServer:
    """One redis-server (a primary, or a replica of ``replica_of``)."""

    directory: Path
    port: int = field(default_factory=free_port)
    password: str | None = PASSWORD
    replica_of: int | None = None
    sentinel: bool = False
    extra: tuple[str, ...] = ()
    tls: Path | None = None  # a directory from make_tls_files: serve TLS only
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _config(self) -> Path:
        if self.tls is not None:
            ports = [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self.tls / 'server.pem'}",
                f"tls-key-file {self.tls / 'server.key'}",
                f"tls-ca-cert-file {self.tls / 'ca.pem'}",
                "tls-auth-clients no",
            ]
        else:
            ports = [f"port {self.port}"]
        lines = [
            *ports,
            "bind 127.0.0.1",
            "protected-mode no",
            f"dir {self.directory}",
            "save ''",
            "appendonly no",
            f"logfile {self.directory / 'redis.log'}",
        ]
        if self.password and not self.sentinel:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        if self.replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {self.replica_of}")
        lines += list(self.extra)
        path = self.directory / ("sentinel.conf" if self.sentinel else "redis.conf")
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [_binary(), str(self._config())]
        if self.sentinel:
            args.append("--sentinel")
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        password = None if self.sentinel else self.password
        while not _ping(self.port, password, self.tls):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.directory / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start: {tail}")
            time.sleep(0.02)
        return self

    def client(self, **kwargs: Any) -> Any:
        import redis

        password = None if self.sentinel else self.password
        return redis.Redis(host="127.0.0.1", port=self.port, password=password, **kwargs)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a goodbye (connections drop)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class SentinelCluster:
    """A primary, one replica and three sentinels watching them (quorum 2, fast failover)."""

    directory: Path
    service_name: str = "kstlib-test"
    primary: RedisServer | None = None
    replica: RedisServer | None = None
    sentinels: list[RedisServer] = field(default_factory=list)

    def start(self) -> SentinelCluster:
        self.primary = RedisServer(self.directory / "primary").start()
        self.replica = RedisServer(self.directory / "replica", replica_of=self.primary.port).start()
        for index in range(3):
            extra = (
                f"sentinel monitor {self.service_name} 127.0.0.1 {self.primary.port} 2",
                f"sentinel auth-pass {self.service_name} {PASSWORD}",
                f"sentinel down-after-milliseconds {self.service_name} 1000",
                f"sentinel failover-timeout {self.service_name} 5000",
                f"sentinel parallel-syncs {self.service_name} 1",
            )
            sentinel = RedisServer(
                self.directory / f"sentinel{index}", sentinel=True, password=None, extra=extra
            )
            self.sentinels.append(sentinel.start())
        self.wait_replicated()
        return self

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def primary_port(self) -> int:
        """The primary's port as the sentinels see it (the first that answers)."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            client = sentinel.client(socket_timeout=1)
            try:
                host, port = client.sentinel_get_master_addr_by_name(self.service_name)
                return int(port)
            except Exception:
                continue
            finally:
                client.close()
        raise RuntimeError("no sentinel answered")

    def wait_replicated(self, timeout: float = START_TIMEOUT) -> None:
        """Until the replica is in sync and every sentinel knows the replica and the others."""
        assert self.replica is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            client = self.replica.client(socket_timeout=1)
            try:
                info = client.info("replication")
            finally:
                client.close()
            ready = info.get("master_link_status") == "up"
            for sentinel in self.sentinels:
                s_client = sentinel.client(socket_timeout=1)
                try:
                    master = s_client.sentinel_master(self.service_name)
                finally:
                    s_client.close()
                ready = ready and int(master.get("num-slaves", 0)) >= 1
                ready = ready and int(master.get("num-other-sentinels", 0)) >= 2
            if ready:
                return
            time.sleep(0.1)
        raise RuntimeError("the Sentinel cluster did not settle")

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Until the sentinels name a new primary (not ``old_port``); its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                port = self.primary_port()
            except RuntimeError:
                port = old_port
            if port != old_port:
                return port
            time.sleep(0.1)
        raise RuntimeError("Sentinel did not fail over")

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            if server is not None:
                server.stop()
