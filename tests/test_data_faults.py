"""The data cache when files, folders, permissions and servers misbehave. Real processes and a local HTTP
server (127.0.0.1 only): the environment variables, the umask and file permissions are those of a fresh
process, as a learner's would be. No test reaches the network."""
import hashlib
import http.server
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rnnlib import data
from rnnlib.data import ChecksumError, DataPathError, Dataset, DownloadError

GOOD = b"to be, or not to be\n" * 100
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
BAD = b"an error page\n"
BAD_SHA = hashlib.sha256(BAD).hexdigest()
REPO = Path(__file__).resolve().parents[1]


class Server:
    """A local HTTP server: /good.txt serves GOOD, /missing answers 404, /flaky 503 twice then GOOD."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                n = server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path == "/good.txt" or (self.path == "/flaky" and n > 2):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(GOOD)))
                    self.end_headers()
                    self.wfile.write(GOOD)
                else:
                    self.send_error(503 if self.path == "/flaky" else 404)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def unprivileged():
    """A command prefix under which file permissions apply (root without its override capabilities)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def run_fetch(url, env, umask=None, prefix=(), sha=GOOD_SHA):
    """Fetch a one-file data set 'fake' from ``url`` in a new Python process with exactly ``env`` set."""
    code = (  # rnnlib/data.py on its own (it needs neither torch nor the rest of rnnlib): a process starts fast
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('data', {str(REPO / 'rnnlib' / 'data.py')!r})\n"
        "data = sys.modules['data'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(data)\n"
        f"data.DATASETS['fake'] = data.Dataset('fake', {url!r}, {{'fake.txt': {sha!r}}})\n"
        "data.time.sleep = lambda s: None\n"
        "try:\n"
        "    print(data.fetch('fake'))\n"
        "except Exception as exc:\n"
        "    print(f'{type(exc).__name__}: {exc}', file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RNNLIB_")}
    full_env.update(env)
    return subprocess.run(list(prefix) + [sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          cwd=REPO, timeout=120, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_downloaded_files_get_the_usual_permissions(server, tmp_path, umask, mode):
    run = run_fetch(f"{server.url}/good.txt", {"RNNLIB_CACHE_DIR": str(tmp_path)}, umask=umask)
    assert run.returncode == 0, run.stderr
    path = tmp_path / "fake" / "fake.txt"
    assert path.read_bytes() == GOOD and stat.S_IMODE(path.stat().st_mode) == mode  # not mkstemp's 0600


def test_a_404_is_not_retried(server, tmp_path):
    run = run_fetch(f"{server.url}/missing", {"RNNLIB_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 1 and server.hits == {"/missing": 1}
    assert "404" in run.stderr and "not retried" in run.stderr


def test_a_503_is_retried_until_it_works(server, tmp_path):
    run = run_fetch(f"{server.url}/flaky", {"RNNLIB_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert server.hits == {"/flaky": 3} and (tmp_path / "fake" / "fake.txt").read_bytes() == GOOD


def test_a_corrupt_cached_file_is_moved_aside_never_deleted_and_the_error_says_so(tmp_path):
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "fake.txt").write_bytes(BAD)
    env = {"RNNLIB_CACHE_DIR": str(tmp_path), "RNNLIB_OFFLINE": "1"}
    run = run_fetch("http://127.0.0.1:9/never-asked", env)
    assert run.returncode == 1
    for needed in (str(folder / "fake.txt"), BAD_SHA, GOOD_SHA, str(folder / "fake.txt.corrupt"), "RNNLIB_CACHE_DIR",
                   "failed its SHA-256 check"):
        assert needed in run.stderr, needed
    assert (folder / "fake.txt.corrupt").read_bytes() == BAD and not (folder / "fake.txt").exists()
    (folder / "fake.txt").write_bytes(b"another wrong file")  # the learner tries again with a wrong file
    run = run_fetch("http://127.0.0.1:9/never-asked", env)
    assert run.returncode == 1 and str(folder / "fake.txt.corrupt.1") in run.stderr
    assert (folder / "fake.txt.corrupt").read_bytes() == BAD  # the earlier one is not overwritten
    assert (folder / "fake.txt.corrupt.1").read_bytes() == b"another wrong file"
    (folder / "fake.txt").write_bytes(GOOD)  # and with the right file, it works
    assert run_fetch("http://127.0.0.1:9/never-asked", env).returncode == 0


def test_online_a_corrupt_cached_file_is_moved_aside_and_fetched_again(server, tmp_path):
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "fake.txt").write_bytes(BAD)
    run = run_fetch(f"{server.url}/good.txt", {"RNNLIB_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert (folder / "fake.txt").read_bytes() == GOOD and (folder / "fake.txt.corrupt").read_bytes() == BAD
    assert "moved aside" in run.stderr and "downloaded again" in run.stderr


def test_an_rnnlib_data_dir_that_does_not_exist_is_an_error_not_skipped(tmp_path):
    target = tmp_path / "mirorr"  # a typo
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNLIB_")}
    env.update(RNNLIB_DATA_DIR=str(target), RNNLIB_CACHE_DIR=str(tmp_path / "cache"), RNNLIB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "rnnlib.data", "temperatures"], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert run.returncode == 1
    assert f"RNNLIB_DATA_DIR is set to {target}, which does not exist" in run.stderr


def test_an_rnnlib_data_dir_that_is_a_file_is_an_error(tmp_path, monkeypatch):
    target = tmp_path / "mirror"
    target.write_text("not a folder")
    monkeypatch.setenv("RNNLIB_DATA_DIR", str(target))
    with pytest.raises(DataPathError, match=f"RNNLIB_DATA_DIR is set to {target}, which is a file, not a folder"):
        data.fetch("temperatures")


def test_a_file_in_the_way_of_the_cache_folder_names_rnnlib_cache_dir(tmp_path):
    in_the_way = tmp_path / "cache"
    in_the_way.write_text("a file where the cache folder should be")
    run = run_fetch("http://127.0.0.1:9/never-asked", {"RNNLIB_CACHE_DIR": str(in_the_way)})
    assert run.returncode == 1 and "DataPathError" in run.stderr
    assert f"{in_the_way} is a file" in run.stderr and f"RNNLIB_CACHE_DIR={in_the_way}" in run.stderr


def test_a_folder_in_the_way_of_a_cached_file_is_named(tmp_path):
    (tmp_path / "fake" / "fake.txt").mkdir(parents=True)
    run = run_fetch("http://127.0.0.1:9/never-asked", {"RNNLIB_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 1
    assert f"{tmp_path / 'fake' / 'fake.txt'} is not a file" in run.stderr and "RNNLIB_CACHE_DIR" in run.stderr


def test_an_unwritable_cache_names_rnnlib_cache_dir_before_downloading(server, tmp_path):
    prefix = unprivileged()
    tmp_path.chmod(0o555)
    try:
        run = run_fetch(f"{server.url}/good.txt", {"RNNLIB_CACHE_DIR": str(tmp_path)}, prefix=prefix)
    finally:
        tmp_path.chmod(0o755)
    assert run.returncode == 1 and "DataPathError" in run.stderr
    assert "Permission denied" in run.stderr and f"RNNLIB_CACHE_DIR={tmp_path}" in run.stderr
    assert server.hits == {}  # nothing downloaded that could not be kept


def test_an_unreadable_cached_file_names_rnnlib_cache_dir(tmp_path):
    prefix = unprivileged()
    (tmp_path / "fake").mkdir()
    path = tmp_path / "fake" / "fake.txt"
    path.write_bytes(GOOD)
    path.chmod(0o000)
    run = run_fetch("http://127.0.0.1:9/never-asked", {"RNNLIB_CACHE_DIR": str(tmp_path), "RNNLIB_OFFLINE": "1"},
                    prefix=prefix)
    path.chmod(0o644)
    assert run.returncode == 1
    assert f"cannot read {path}" in run.stderr and "RNNLIB_CACHE_DIR" in run.stderr and "chmod" in run.stderr
    assert path.read_bytes() == GOOD  # still there


def test_an_unreadable_file_in_rnnlib_data_dir_names_it(tmp_path):
    prefix = unprivileged()
    (tmp_path / "fake").mkdir()
    path = tmp_path / "fake" / "fake.txt"
    path.write_bytes(GOOD)
    path.chmod(0o000)
    run = run_fetch("http://127.0.0.1:9/never-asked", {"RNNLIB_DATA_DIR": str(tmp_path), "RNNLIB_OFFLINE": "1",
                                                       "RNNLIB_CACHE_DIR": str(tmp_path / "cache")}, prefix=prefix)
    path.chmod(0o644)
    assert run.returncode == 1 and f"cannot read {path} (in RNNLIB_DATA_DIR={tmp_path})" in run.stderr


def test_a_wrong_file_in_rnnlib_data_dir_is_refused_and_left_alone(tmp_path, monkeypatch):
    (tmp_path / "fake").mkdir()
    path = tmp_path / "fake" / "fake.txt"
    path.write_bytes(BAD)
    monkeypatch.setitem(data.DATASETS, "fake", Dataset("fake", "https://example.org/fake.txt", {"fake.txt": GOOD_SHA}))
    monkeypatch.setenv("RNNLIB_DATA_DIR", str(tmp_path))
    with pytest.raises(ChecksumError) as info:
        data.fetch("fake")
    message = str(info.value)
    assert str(path) in message and BAD_SHA in message and GOOD_SHA in message and "RNNLIB_DATA_DIR" in message
    assert path.read_bytes() == BAD and sorted(p.name for p in path.parent.iterdir()) == ["fake.txt"]


def test_a_folder_in_rnnlib_data_dir_where_a_file_should_be(tmp_path, monkeypatch):
    (tmp_path / "fake" / "fake.txt").mkdir(parents=True)
    monkeypatch.setitem(data.DATASETS, "fake", Dataset("fake", "https://example.org/fake.txt", {"fake.txt": GOOD_SHA}))
    monkeypatch.setenv("RNNLIB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataPathError, match=r"in RNNLIB_DATA_DIR=.* is not a file"):
        data.fetch("fake")


def test_data_path_errors_are_download_errors_for_the_command_line():
    assert issubclass(DataPathError, DownloadError)  # `python -m rnnlib.data` prints them and exits 1
