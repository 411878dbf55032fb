"""The course's public data sets: downloaded once, checked against pinned SHA-256 digests, cached.

Where a file comes from, in order:

1. ``RNNLIB_DATA_DIR``, if set: a local folder laid out like ``<dataset>/<file>`` (tests, CI and offline
   machines point it at a copy of the files). Its files are digest-checked too, and used in place.
2. The cache: ``RNNLIB_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/rnnlib`` or ``~/.cache/rnnlib``.
3. The network (``requests``, a timeout and a few retries, a progress bar). The bytes are written to a
   temporary file in the cache folder and renamed only after their digest matched, so an interrupted or
   corrupted download never leaves a file that looks complete. ``RNNLIB_OFFLINE=1`` forbids this step
   (the tests set it: no test reaches the network).

A file whose digest differs from the pinned one is refused with both digests and its path in the message.
Nothing the learner may have put somewhere is ever deleted: a cached file that fails its check is moved
aside (``<file>.corrupt``, then ``.corrupt.1``, ... never over an earlier one) before a fresh download.
Every error about a place names the environment variable that chose it (``RNNLIB_CACHE_DIR``,
``RNNLIB_DATA_DIR``): a file or folder in the way, an unreadable file, an unwritable cache, an
``RNNLIB_DATA_DIR`` that does not exist. Files are created with the usual permissions (``0o666`` minus
the umask), so a shared cache works for everyone who shares it. An answer 4xx from the server (the file
is not there) is not retried; 5xx answers, timeouts and dropped connections are.
Run ``python -m rnnlib.data`` to fetch everything ahead of time (``make data`` does).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Dataset:
    """A public data set: where it is downloaded from and the digest of every file we use."""

    name: str
    url: str
    files: dict  # file name -> SHA-256 hex digest
    zip_prefix: str | None = None  # the files sit under this folder inside a zip archive at ``url``
    description: str = ""


_NAMES_SHA256 = {
    "Arabic": "cad93b6bc21add6c364b3733f5936ce693207ba387c690078ac813a876036fb8",
    "Chinese": "49263ef55a8cb1740e841d65cad8214b2f9b5b869bc534c811746422496fa91e",
    "Czech": "145bbbd6d0816578f03388e92c264d39ef1c60df920b081d371fa5c5cc055a8e",
    "Dutch": "924f32b635170eae561f84538632138fc07d4c8bbd70ba3fb980de1ecc4d2af3",
    "English": "dfe263cbcf0cdd64b1534ca713a91810540e4c400df6373cd8004cbc6d8f1c4b",
    "French": "81e65b36c60ed5b89a17422f6edcadbb89546f38ad69e960e64e7ba682012a95",
    "German": "7449cd590b97a733e18d613a4155decd77ec35dc5f8aadd7a82204dce4f051db",
    "Greek": "d55ba1ec8c72d10bccf189bd3feedb27bdb46aba220ee332e98752999b53a390",
    "Irish": "bf34c9f5507e83137ec25411e41f4664a19754776faf1e48bf0b091031acd758",
    "Italian": "f88414c27d0606a11a678b4859277828c2565d6cc4d9ee932deef6e94f3b35e4",
    "Japanese": "e0e717e114fec3e7eade4d9dabe0067c475f43147e36a22b47902ee76ad9e67f",
    "Korean": "cd54221ccb362a6cba4c78828838cf3268a0e59744767a37cf6ec4b74036b136",
    "Polish": "45bab898af2f60ed3a728bbf6980e28821011a7caa53227553b5785903a40826",
    "Portuguese": "50a8735f41f4f73757c8ce5b16cb0275cd86b2b214bcbc8c9805f508cb131c53",
    "Russian": "43b3e64ce351f77f1ac9e0cdf7566012d127f4371875fd25208845b5c9d6f7c3",
    "Scottish": "b15bb28148b190ba6e34eccda8f9cfaa724bd5060bb03c121dae26ec74975f3e",
    "Spanish": "1bcb462ed3316756a85781d68232bddae04498fdddd5d9219c53fd1fbdeba7a7",
    "Vietnamese": "77c6f7cb5ef9383d40eccd33955a371cbbde45ffeffac8d554e8eb15ad6b938c",
}

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset(
            "tinyshakespeare",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            {"input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
            description="1,115,394 characters of Shakespeare (Karpathy's char-rnn corpus)",
        ),
        Dataset(
            "names",
            "https://download.pytorch.org/tutorial/data.zip",
            {f"{lang}.txt": digest for lang, digest in _NAMES_SHA256.items()},
            zip_prefix="data/names/",
            description="surnames by language of origin (PyTorch's char-RNN classification tutorial)",
        ),
        Dataset(
            "temperatures",
            "https://raw.githubusercontent.com/jbrownlee/Datasets/master/daily-min-temperatures.csv",
            {"daily-min-temperatures.csv": "8b9de63ed6789492bf497625e7f9beb96a63d367b4b0a21754006f749fa5e5da"},
            description="daily minimum temperature in Melbourne, 1981-1990",
        ),
    ]
}


class DownloadError(RuntimeError):
    """A data file could not be obtained; the message says what to do."""


class ChecksumError(ValueError):
    """A data file's SHA-256 differs from the pinned digest."""


class DataPathError(DownloadError):
    """A data folder or file cannot be used where it is: in the way, missing, unreadable or unwritable."""


def cache_dir() -> Path:
    """Where downloaded files are kept: ``RNNLIB_CACHE_DIR``, else the user cache folder."""
    if os.environ.get("RNNLIB_CACHE_DIR"):
        return Path(os.environ["RNNLIB_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "rnnlib"


def _cache_origin() -> str:
    """How the cache folder was chosen, for error messages."""
    if os.environ.get("RNNLIB_CACHE_DIR"):
        return f"the cache folder, set by RNNLIB_CACHE_DIR={os.environ['RNNLIB_CACHE_DIR']}"
    return "the default cache folder; set RNNLIB_CACHE_DIR to use another"


def file_mode() -> int:
    """The permissions a new ordinary file gets here: ``0o666`` minus the umask (``mkstemp`` would give 0o600)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:  # Linux: read without changing it
            mask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(path: Path, origin: str) -> str:
    """``sha256_of(path)``, or an error that says which file could not be read and which variable chose it."""
    try:
        return sha256_of(path)
    except OSError as exc:
        raise DataPathError(f"cannot read {path} ({origin}): {exc.strerror or exc}. Make it readable "
                            "(chmod a+r), or move it away so it can be fetched again") from None


def _move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.corrupt`` (or ``.corrupt.1``, ``.corrupt.2``, ...: never over an earlier one)."""
    target, k = path.with_name(path.name + ".corrupt"), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.corrupt.{k}")
    try:
        os.rename(path, target)
    except OSError as exc:
        raise DataPathError(f"{path} ({_cache_origin()}) fails its SHA-256 check and cannot be moved aside to "
                            f"{target}: {exc.strerror or exc}. Move or delete it yourself") from None
    return target


def _download_to_temp(url: str, folder: Path, label: str, retries: int = 3, timeout: float = 30.0,
                      backoff: float = 1.0) -> Path:
    """GET ``url`` into a temporary file in ``folder`` (progress bar), retrying the whole transfer.

    A connection that drops part-way counts as a failed attempt like a refused one: the partial file is
    deleted and the download starts again. After ``retries`` failures, :class:`DownloadError`.
    """
    import requests  # imported here so that `import rnnlib` stays light

    last: Exception | None = None
    for attempt in range(retries):
        try:
            response = requests.get(url, stream=True, timeout=timeout)
            response.raise_for_status()
            return _stream_to_temp(response, folder, label)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                # The server says the request itself is wrong (404: not there, 403: not allowed): asking again
                # gives the same answer. 408 (timeout) and 429 (too many requests) are worth another try.
                raise DownloadError(f"{exc} (not retried: the server answered {status})") from None
            last = exc
        except requests.RequestException as exc:  # connection errors, timeouts, dropped transfers
            last = exc
        if attempt + 1 < retries:
            time.sleep(backoff * 2**attempt)
    raise DownloadError(f"{last} (after {retries} attempts)")


def _stream_to_temp(response, folder: Path, label: str) -> Path:
    """Write a response body to a temporary file in ``folder``, with a progress bar."""
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    total = int(response.headers.get("content-length") or 0) or None
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=label, leave=False
        ) as bar:
            for block in response.iter_content(_CHUNK):
                out.write(block)
                bar.update(len(block))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _place(tmp: Path, target: Path, expected: str, origin: str) -> None:
    """Rename ``tmp`` to ``target`` if its digest is right; otherwise delete it and raise."""
    try:
        actual = sha256_of(tmp)
        if actual != expected:
            raise ChecksumError(
                f"The file downloaded from {origin} for {target} has SHA-256 {actual}, expected {expected}. "
                "It was not saved. The server may have sent an error page or a different version: try again "
                f"later, or download it by hand, check it, and place it at {target}."
            )
        os.chmod(tmp, file_mode())  # mkstemp created it 0600; a data file is for everyone who shares the cache
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


_STALE_SECONDS = 3600.0  # a temporary file this old belongs to a download that was killed


def _remove_stale_parts(folder: Path) -> None:
    """Delete temporary files left by a download that was killed (not by one still running)."""
    if not folder.is_dir():
        return
    now = time.time()
    for part in folder.glob(".*-*.part"):
        try:
            if now - part.stat().st_mtime > _STALE_SECONDS:
                part.unlink()
        except OSError:
            pass


def _download(dataset: Dataset, folder: Path) -> None:
    """Download ``dataset`` into ``folder`` (every file verified, written atomically)."""
    _remove_stale_parts(folder)
    tmp = _download_to_temp(dataset.url, folder, dataset.name)
    if dataset.zip_prefix is None:
        (name, expected), = dataset.files.items()
        _place(tmp, folder / name, expected, dataset.url)
        return
    try:
        with zipfile.ZipFile(tmp) as archive:
            for name, expected in dataset.files.items():
                data = archive.read(dataset.zip_prefix + name)
                fd, part = tempfile.mkstemp(dir=folder, prefix=".extract-", suffix=".part")
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                _place(Path(part), folder / name, expected, f"{dataset.url} ({dataset.zip_prefix}{name})")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DownloadError(f"{dataset.url} is not the expected archive: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _offline_message(dataset: Dataset, folder: Path, reason: str) -> str:
    where = ", ".join(str(folder / f) for f in list(dataset.files)[:3])
    more = " ..." if len(dataset.files) > 3 else ""
    inner = f" (the files are inside the archive under {dataset.zip_prefix})" if dataset.zip_prefix else ""
    local = os.environ.get("RNNLIB_DATA_DIR")
    looked = (f"RNNLIB_DATA_DIR is set to {local}, but {Path(local).expanduser() / dataset.name} holds none of "
              f"its files, so the cache was tried.\n" if local else "")
    return (
        f"Could not download the '{dataset.name}' data set from {dataset.url}: {reason}\n{looked}"
        f"To work offline, download {dataset.url} by hand{inner} and place the file(s) at: {where}{more} "
        f"({_cache_origin()})\n"
        f"or set RNNLIB_DATA_DIR to a folder that holds {dataset.name}/<file> (checked against pinned SHA-256)."
    )


def _from_data_dir(dataset: Dataset, value: str) -> Path | None:
    """The data set's folder under ``RNNLIB_DATA_DIR`` (every file verified), or None if it holds none of it."""
    root = Path(value).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataPathError(f"RNNLIB_DATA_DIR is set to {value}, which {what}. Correct it (a folder that holds "
                            f"{dataset.name}/<file>), or unset it to use the cache ({cache_dir()}) and the network")
    folder = root / dataset.name
    present = [f for f in dataset.files if os.path.lexists(folder / f)]
    if not present:
        return None
    if len(present) < len(dataset.files):
        missing = sorted(set(dataset.files) - set(present))
        raise DataPathError(f"RNNLIB_DATA_DIR={value} has only some files of '{dataset.name}': missing {missing}")
    for f, expected in dataset.files.items():
        path, origin = folder / f, f"in RNNLIB_DATA_DIR={value}"
        if not path.is_file():
            raise DataPathError(f"{path} ({origin}) is not a file (a folder or a broken link is in the way); "
                                f"put the file {f} of '{dataset.name}' there")
        actual = _digest(path, origin)
        if actual != expected:
            raise ChecksumError(
                f"{path} ({origin}) has SHA-256 {actual}, expected {expected}. The file is damaged or a different "
                f"version: replace it with the original from {dataset.url}, or unset RNNLIB_DATA_DIR to download "
                "it into the cache. (Files under RNNLIB_DATA_DIR are yours: rnnlib never moves or deletes them.)"
            )
    return folder


def _check_cache(dataset: Dataset, folder: Path) -> tuple[list[str], list[str]]:
    """``(missing files, notes)`` of the cache folder; a cached file that fails its check is moved aside."""
    for place in (folder.parent, folder):
        if os.path.lexists(place) and not place.is_dir():
            raise DataPathError(f"{place} is a file, where {_cache_origin()} needs a folder: move it away, or "
                                "set RNNLIB_CACHE_DIR to another folder")
    missing, notes = [], []
    for f, expected in dataset.files.items():
        path = folder / f
        if os.path.lexists(path) and not path.is_file():
            raise DataPathError(f"{path} is not a file (a folder or a broken link is in the way) in "
                                f"{_cache_origin()}: move it away so the data file can be stored there")
        if path.is_file():
            actual = _digest(path, _cache_origin())
            if actual == expected:
                continue
            moved = _move_aside(path)
            notes.append(f"{path} failed its SHA-256 check (it has {actual}, expected {expected}): it is damaged or "
                         f"a different version, so it was moved aside to {moved} (not deleted)")
        missing.append(f)
    return missing, notes


def fetch(name: str) -> Path:
    """Return a folder that holds every verified file of data set ``name`` (downloading it if needed)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    dataset = DATASETS[name]

    local = os.environ.get("RNNLIB_DATA_DIR")
    if local:
        folder = _from_data_dir(dataset, local)
        if folder is not None:
            return folder

    import requests

    folder = cache_dir() / name
    try:
        missing, notes = _check_cache(dataset, folder)
        if not missing:
            return folder
        if os.environ.get("RNNLIB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no", "off"):
            reason = "RNNLIB_OFFLINE is set, so the network is not used."
            raise DownloadError(_offline_message(dataset, folder, " ".join(notes + [reason])))
        folder.mkdir(parents=True, exist_ok=True)  # an unwritable cache fails here, before a download
        try:
            _download(dataset, folder)
        except DataPathError:
            raise
        except DownloadError as exc:
            raise DownloadError(_offline_message(dataset, folder, " ".join(notes + [str(exc)]))) from None
    except OSError as exc:
        if isinstance(exc, requests.RequestException):
            raise
        raise DataPathError(f"cannot use {folder} ({_cache_origin()}): {exc.strerror or exc} "
                            f"({exc.filename or folder}). Make it writable, or set RNNLIB_CACHE_DIR to a folder you "
                            "can write to (or RNNLIB_DATA_DIR to one that holds the files)") from None
    for note in notes:
        print(f"{note}; downloaded again.", file=sys.stderr)
    return folder


def load_shakespeare() -> str:
    """The tiny Shakespeare corpus as one string (1,115,394 characters, 65 distinct)."""
    return (fetch("tinyshakespeare") / "input.txt").read_text(encoding="utf-8")


def load_surnames() -> list[tuple[str, str]]:
    """``(surname, language)`` pairs from 18 languages, duplicates within a language removed.

    Some surnames appear under several languages (e.g. both English and Scottish): such pairs are kept,
    which caps the accuracy any classifier can reach.
    """
    folder = fetch("names")
    pairs = []
    for file in sorted(DATASETS["names"].files):
        language = file.removesuffix(".txt")
        names = (folder / file).read_text(encoding="utf-8").split("\n")
        for surname in dict.fromkeys(n.strip() for n in names):
            if surname:
                pairs.append((surname, language))
    return pairs


def load_temperatures() -> tuple[list[str], list[float]]:
    """Melbourne's daily minimum temperatures 1981-1990: ``(dates as "YYYY-MM-DD", degrees Celsius)``."""
    path = fetch("temperatures") / "daily-min-temperatures.csv"
    dates, temps = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            dates.append(row["Date"])
            temps.append(float(row["Temp"]))
    return dates, temps


def main(argv: list[str] | None = None) -> int:
    """``python -m rnnlib.data [name ...]``: fetch data sets ahead of time (all by default)."""
    names = (argv if argv is not None else sys.argv[1:]) or sorted(DATASETS)
    for name in names:
        try:
            print(f"{name:16s} {fetch(name)}")
        except (DownloadError, ChecksumError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
