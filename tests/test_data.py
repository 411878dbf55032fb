"""The data loader: pinned digests, atomic writes, local folder override, clear offline errors. No network."""
import hashlib
import io
import zipfile

import pytest
import requests

from rnnlib import data
from rnnlib.data import ChecksumError, Dataset, DownloadError

GOOD = b"to be, or not to be\n" * 100
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class FakeResponse:
    """Stands in for a streaming requests.Response; can fail part-way."""

    def __init__(self, body: bytes, fail_after: int | None = None, on_fail=None):
        self.body, self.fail_after, self.on_fail = body, fail_after, on_fail
        self.headers = {"content-length": str(len(body))}

    def raise_for_status(self):
        pass

    def iter_content(self, size):
        for k in range(0, len(self.body), 64):
            if self.fail_after is not None and k >= self.fail_after:
                if self.on_fail is not None:
                    self.on_fail()
                raise requests.ConnectionError("connection reset by peer")
            yield self.body[k : k + 64]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A one-file data set 'fake' and an empty cache; the network is replaced by `serve`."""
    ds = Dataset("fake", "https://example.org/fake.txt", {"fake.txt": GOOD_SHA})
    monkeypatch.setitem(data.DATASETS, "fake", ds)
    monkeypatch.setenv("RNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNLIB_DATA_DIR", raising=False)
    monkeypatch.setenv("RNNLIB_OFFLINE", "0")
    monkeypatch.setattr(data.time, "sleep", lambda s: None)
    calls = []

    def serve(response_or_exc):
        def get(url, stream, timeout):
            calls.append(url)
            if isinstance(response_or_exc, Exception):
                raise response_or_exc
            return response_or_exc

        monkeypatch.setattr(requests, "get", get)

    return {"ds": ds, "cache": tmp_path / "cache" / "fake", "serve": serve, "calls": calls, "tmp": tmp_path}


def test_download_verifies_and_caches(fake):
    fake["serve"](FakeResponse(GOOD))
    folder = data.fetch("fake")
    assert (folder / "fake.txt").read_bytes() == GOOD
    assert sorted(p.name for p in folder.iterdir()) == ["fake.txt"]  # no temporary files left
    fake["serve"](AssertionError("must not download again"))
    assert data.fetch("fake") == folder


def test_digest_mismatch_is_refused_and_nothing_is_cached(fake):
    fake["serve"](FakeResponse(b"a different file"))
    with pytest.raises(ChecksumError) as info:
        data.fetch("fake")
    assert GOOD_SHA in str(info.value)
    assert hashlib.sha256(b"a different file").hexdigest() in str(info.value)
    assert ".part" not in str(info.value)  # names the target, not a temporary file that is gone
    assert list(fake["cache"].iterdir()) == []


def test_interrupted_download_leaves_no_file(fake):
    seen_mid_transfer = []

    def look():  # the moment the connection drops: the bytes so far sit in a temporary file only
        seen_mid_transfer.append(sorted(p.name for p in fake["cache"].iterdir()))

    fake["serve"](FakeResponse(GOOD, fail_after=640, on_fail=look))
    with pytest.raises(DownloadError) as info:
        data.fetch("fake")
    assert len(seen_mid_transfer) == 3
    for names in seen_mid_transfer:
        assert len(names) == 1 and names[0].startswith(".download-") and names[0].endswith(".part"), names
    assert list(fake["cache"].iterdir()) == []  # neither a partial file nor a complete-looking one
    assert len(fake["calls"]) == 3  # a transfer that drops part-way is retried like a refused one
    message = str(info.value)
    assert "connection reset by peer" in message and "https://example.org/fake.txt" in message
    assert str(fake["cache"] / "fake.txt") in message  # says where to place the file by hand


def test_dropped_transfer_is_retried_and_then_succeeds(fake, monkeypatch):
    responses = [FakeResponse(GOOD, fail_after=640), FakeResponse(GOOD)]

    def get(url, stream, timeout):
        fake["calls"].append(url)
        return responses.pop(0)

    monkeypatch.setattr(requests, "get", get)
    folder = data.fetch("fake")
    assert (folder / "fake.txt").read_bytes() == GOOD and len(fake["calls"]) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["fake.txt"]


def test_a_part_file_left_by_a_killed_download_is_removed_later(fake):
    import os
    import time

    fake["cache"].mkdir(parents=True)
    old, fresh = fake["cache"] / ".download-old.part", fake["cache"] / ".download-running.part"
    old.write_bytes(GOOD[:100])
    fresh.write_bytes(GOOD[:100])
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    fake["serve"](FakeResponse(GOOD))
    data.fetch("fake")
    assert sorted(p.name for p in fake["cache"].iterdir()) == [fresh.name, "fake.txt"]  # another download's


def test_data_dir_without_the_data_set_says_so(fake, monkeypatch):
    monkeypatch.setenv("RNNLIB_DATA_DIR", str(fake["tmp"] / "empty-mirror"))
    monkeypatch.setenv("RNNLIB_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        data.fetch("fake")
    assert f"RNNLIB_DATA_DIR is set to {fake['tmp'] / 'empty-mirror'}" in str(info.value)


def test_offline_error_names_url_cache_and_what_to_do(fake):
    fake["serve"](requests.ConnectionError("Name or service not known"))
    with pytest.raises(DownloadError) as info:
        data.fetch("fake")
    message = str(info.value)
    assert "https://example.org/fake.txt" in message
    assert str(fake["cache"] / "fake.txt") in message
    assert "RNNLIB_DATA_DIR" in message and "Name or service not known" in message
    assert len(fake["calls"]) == 3  # retried


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_offline_switch_never_calls_the_network(fake, monkeypatch, value):
    monkeypatch.setenv("RNNLIB_OFFLINE", value)
    fake["serve"](AssertionError("network used"))
    with pytest.raises(DownloadError, match="RNNLIB_OFFLINE"):
        data.fetch("fake")
    assert fake["calls"] == []


def test_local_folder_is_used_without_network_and_checked(fake, monkeypatch):
    local = fake["tmp"] / "mirror"
    (local / "fake").mkdir(parents=True)
    (local / "fake" / "fake.txt").write_bytes(GOOD)
    monkeypatch.setenv("RNNLIB_DATA_DIR", str(local))
    fake["serve"](AssertionError("network used"))
    assert data.fetch("fake") == local / "fake"
    (local / "fake" / "fake.txt").write_bytes(GOOD + b"tampered")
    with pytest.raises(ChecksumError, match="expected " + GOOD_SHA):
        data.fetch("fake")


def test_corrupted_cache_entry_is_fetched_again(fake):
    fake["cache"].mkdir(parents=True)
    (fake["cache"] / "fake.txt").write_bytes(b"half a fi")
    fake["serve"](FakeResponse(GOOD))
    assert (data.fetch("fake") / "fake.txt").read_bytes() == GOOD
    assert fake["calls"] == ["https://example.org/fake.txt"]


def test_zip_members_are_extracted_and_verified(fake, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data/names/A.txt", GOOD)
        archive.writestr("data/names/B.txt", b"Smith\n")
    ds = Dataset("zipped", "https://example.org/data.zip",
                 {"A.txt": GOOD_SHA, "B.txt": hashlib.sha256(b"Smith\n").hexdigest()}, zip_prefix="data/names/")
    monkeypatch.setitem(data.DATASETS, "zipped", ds)
    fake["serve"](FakeResponse(buffer.getvalue()))
    folder = data.fetch("zipped")
    assert sorted(p.name for p in folder.iterdir()) == ["A.txt", "B.txt"]


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="tinyshakespeare"):
        data.fetch("shakespear")


# The real files: from RNNLIB_DATA_DIR (CI) or the cache that `make data` filled. Never the network.
def test_tiny_shakespeare():
    text = data.load_shakespeare()
    assert len(text) == 1_115_394 and len(set(text)) == 65
    assert text.startswith("First Citizen:")


def test_surnames():
    pairs = data.load_surnames()
    languages = sorted({lang for _, lang in pairs})
    assert len(languages) == 18 and "Vietnamese" in languages and "Welsh" not in languages
    assert len(pairs) > 18_000 and len(set(pairs)) == len(pairs)
    assert ("Nguyen", "Vietnamese") in pairs


def test_temperatures():
    dates, temps = data.load_temperatures()
    assert len(dates) == len(temps) == 3650
    assert dates[0] == "1981-01-01" and dates[-1] == "1990-12-31"
    assert temps[0] == 20.7 and 0 <= min(temps) and max(temps) < 30
