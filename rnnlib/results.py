"""Headline results of a notebook, each beside the band it is expected to fall in.

Every chapter ends with a :class:`Results` table. In full mode a figure outside its band fails the cell
(so a regression cannot slip into the built book); in quick mode, where models train for seconds, only
entries marked ``always=True`` (parity differences, which do not depend on training) are enforced.
Entries marked ``timing=True`` (wall-clock figures: speed ratios, losses read at a time budget) are shown
beside their band but never enforced: they depend on the machine and on what else it is doing.
When ``RNNLIB_RESULTS_DIR`` is set (``make book`` sets it), the table is also written there as JSON and
the book's results page collects all of them.
"""
from __future__ import annotations

import html
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import mode


@dataclass
class Entry:
    name: str
    value: float
    low: float
    high: float
    unit: str = ""
    always: bool = False  # enforce the band in quick mode too
    timing: bool = False  # a wall-clock figure: shown with its band, never enforced

    @property
    def enforced(self) -> bool:
        return not self.timing and (self.always or mode() == "full")

    @property
    def ok(self) -> bool:
        return not math.isnan(self.value) and self.low <= self.value <= self.high

    def band(self) -> str:
        lo = "-inf" if self.low == -math.inf else _fmt(self.low)
        hi = "inf" if self.high == math.inf else _fmt(self.high)
        return f"[{lo}, {hi}]"


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.2e}" if abs(x) < 1e-3 or abs(x) >= 1e5 else f"{x:.4g}"


class Results:
    """Collects ``name -> value`` with an expected band ``(low, high)``.

    >>> r = Results("7.1 Foundations")
    >>> r.add("max |ours - nn.RNN|", 3e-16, (0, 1e-12), always=True)
    >>> r.check()   # raises AssertionError naming what regressed
    """

    def __init__(self, notebook: str):
        self.notebook = notebook
        self.entries: list[Entry] = []
        self.started = time.time()

    def add(
        self,
        name: str,
        value: float,
        band: tuple[float, float],
        unit: str = "",
        always: bool = False,
        timing: bool = False,
    ) -> float:
        low, high = band
        if low > high:
            raise ValueError(f"band for {name!r} is empty: {band}")
        if always and timing:
            raise ValueError(f"{name!r}: a timing entry is never enforced, so it cannot be always=True")
        value = float(value)
        self.entries = [e for e in self.entries if e.name != name]
        self.entries.append(Entry(name, value, float(low), float(high), unit, always, timing))
        return value

    def failures(self) -> list[Entry]:
        return [e for e in self.entries if e.enforced and not e.ok]

    def check(self) -> None:
        """Raise ``AssertionError`` listing every enforced entry outside its band; save first if asked."""
        self.save()
        bad = self.failures()
        if bad:
            lines = [f"  {e.name} = {_fmt(e.value)} {e.unit}, expected {e.band()}" for e in bad]
            raise AssertionError(
                f"{len(bad)} result(s) of '{self.notebook}' fell outside their expected band ({mode()} mode):\n"
                + "\n".join(lines)
                + "\nSomething regressed: compare with the book's results page, and check the code and settings "
                "that produce these figures."
            )

    @staticmethod
    def _status(e: Entry) -> str:
        if e.ok:
            return "ok (timing)" if e.timing else "ok"
        if e.enforced:
            return "FAIL"
        return "outside (timing, not enforced)" if e.timing else "outside (quick mode)"

    def rows(self) -> list[dict]:
        return [
            {
                "result": e.name,
                "value": _fmt(e.value),
                "unit": e.unit,
                "expected": e.band(),
                "status": self._status(e),
            }
            for e in self.entries
        ]

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ("result", "value", "unit", "expected", "status"))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in ("result", "value", "unit", "expected", "status")) + "</tr>"
            for r in self.rows()
        )
        return f"<p><b>{html.escape(self.notebook)}</b> ({mode()} mode)</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        lines = [f"{self.notebook} ({mode()} mode)"]
        for r in self.rows():
            lines.append(f"  {r['result']:<45} {r['value']:>10} {r['unit']:<10} {r['expected']:<22} {r['status']}")
        return "\n".join(lines)

    def save(self, folder: str | os.PathLike | None = None) -> Path | None:
        """Write the table as JSON into ``folder`` or ``RNNLIB_RESULTS_DIR``; do nothing if neither is set."""
        folder = folder or os.environ.get("RNNLIB_RESULTS_DIR")
        if not folder:
            return None
        import torch

        from .config import get_device

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in self.notebook.lower()).strip("-")
        payload = {
            "notebook": self.notebook,
            "mode": mode(),
            "device": str(get_device()),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "seconds": round(time.time() - self.started, 1),
            "entries": [asdict(e) | {"ok": e.ok, "status": self._status(e)} for e in self.entries],
        }
        target = path / f"{slug}.json"
        tmp = target.with_suffix(".json.part")
        tmp.write_text(json.dumps(payload, indent=1, default=float))
        os.replace(tmp, target)
        return target
