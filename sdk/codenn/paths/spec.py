"""PathSpec: which blocks of which services a path runs, in order, in two text forms.

Compact form (Python slices, block ``k`` is the k-th block)::

    alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]

The paper's form (Section IV: lout, hin, hout, lin), for one host at most::

    alexnet/mobilenet_v2: lout=0 hin=1 hout=3 lin=5
    alexnet: lout=1 lin=4

``alexnet[:1]`` runs block 0, so ``lout = stop - 1``; ``mobilenet_v2[1:4]`` runs host blocks
1..3, so ``hin = start`` and ``hout = stop - 1``; ``alexnet[5:]`` resumes at ``lin = start``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from codenn.errors import PathShapeError, PathSpecError, available

_SEGMENT = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*(?:\[\s*(-?\d*)\s*:\s*(-?\d*)\s*\])?\s*$")
_PAPER = re.compile(r"^\s*([A-Za-z0-9_\-]+)(?:\s*/\s*([A-Za-z0-9_\-]+))?\s*:\s*(.*)$")
_INDEX_NAMES = ("lout", "hin", "hout", "lin")


@dataclass(frozen=True)
class Segment:
    """Blocks ``start .. stop-1`` of one service; ``stop=None`` means to the service's end."""

    service: str
    start: int = 0
    stop: int | None = None

    def __str__(self) -> str:
        a = "" if self.start == 0 else str(self.start)
        b = "" if self.stop is None else str(self.stop)
        return f"{self.service}[{a}:{b}]"

    def end(self, num_blocks: int) -> int:
        return num_blocks if self.stop is None else self.stop

    def blocks(self, num_blocks: int) -> range:
        return range(self.start, self.end(num_blocks))


@dataclass(frozen=True)
class PaperIndices:
    """The paper's four indices; ``hin``/``hout`` are None for skip paths."""

    lout: int
    lin: int
    hin: int | None = None
    hout: int | None = None

    def __str__(self) -> str:
        parts = [f"lout={self.lout}"]
        if self.hin is not None:
            parts += [f"hin={self.hin}", f"hout={self.hout}"]
        parts.append(f"lin={self.lin}")
        return " ".join(parts)


@dataclass(frozen=True)
class HostVisit:
    """A ``local[..lout] > host[hin..hout] > local[lin..]`` path read off once: the shape split
    training, host segments and host routes take (paper, Section IV)."""

    local: str
    host: str
    lout: int
    hin: int
    hout: int
    lin: int


@dataclass(frozen=True)
class PathSpec:
    """An ordered chain of segments; the first and last belong to the local service."""

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not self.segments:
            raise PathSpecError("a path needs at least one segment, got none")
        if self.segments[0].service != self.segments[-1].service:
            raise PathSpecError(
                f"path {self}: it must start and end on the local service, but starts on "
                f"{self.segments[0].service!r} and ends on {self.segments[-1].service!r}"
            )
        if self.segments[0].start != 0:
            raise PathSpecError(f"path {self}: the first segment must start at block 0 (the input)")

    # -- text forms ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> PathSpec:
        """Parse the compact form or the paper's form (see module docstring)."""
        if not isinstance(text, str) or not text.strip():
            raise PathSpecError(f"empty path spec {text!r}; expected e.g. 'alexnet[:2] > alexnet[4:]'")
        if "=" in text:
            return cls.parse_paper(text)
        segments = []
        for i, part in enumerate(text.split(">")):
            m = _SEGMENT.match(part)
            if not m:
                raise PathSpecError(
                    f"segment {i + 1} of {text!r} is {part.strip()!r}; expected SERVICE[start:stop] "
                    "such as 'alexnet[:2]' or 'mobilenet_v2[1:4]'"
                )
            name, a, b = m.groups()
            start = int(a) if a else 0
            stop = int(b) if b else None
            if start < 0 or (stop is not None and stop < 0):
                raise PathSpecError(f"segment {part.strip()!r} of {text!r}: negative block indices are not allowed")
            if stop is not None and stop <= start:
                raise PathSpecError(
                    f"segment {part.strip()!r} of {text!r} is empty: stop ({stop}) must be greater than start ({start})"
                )
            segments.append(Segment(name, start, stop))
        return cls(tuple(segments))

    @classmethod
    def parse_paper(cls, text: str) -> PathSpec:
        """Parse ``LOCAL[/HOST]: lout=.. [hin=.. hout=..] lin=..``."""
        m = _PAPER.match(text)
        if not m:
            raise PathSpecError(
                f"paper-form path {text!r} must look like 'alexnet: lout=1 lin=4' or "
                "'alexnet/mobilenet_v2: lout=0 hin=1 hout=3 lin=5'"
            )
        local, host, rest = m.groups()
        values: dict[str, int] = {}
        for token in rest.replace(",", " ").split():
            key, sep, value = token.partition("=")
            if not sep or key not in _INDEX_NAMES or not value.lstrip("-").isdigit():
                raise PathSpecError(
                    f"in {text!r}: {token!r} is not an index assignment; valid keys: {', '.join(_INDEX_NAMES)}"
                )
            values[key] = int(value)
        return cls.from_indices(local, host=host, **values)

    @classmethod
    def from_indices(
        cls,
        local: str,
        lout: int | None = None,
        lin: int | None = None,
        *,
        host: str | None = None,
        hin: int | None = None,
        hout: int | None = None,
    ) -> PathSpec:
        """Build a skip path (no host) or a one-host cross path from the paper's indices."""
        if lout is None or lin is None:
            raise PathSpecError(f"lout and lin are both required, got lout={lout}, lin={lin}")
        if lout < 0 or lin < 0:
            raise PathSpecError(f"indices must be >= 0, got lout={lout}, lin={lin}")
        if host is None:
            if hin is not None or hout is not None:
                raise PathSpecError(f"hin/hout given (hin={hin}, hout={hout}) but no host service named")
            if lin <= lout + 1:
                raise PathSpecError(
                    f"a skip path needs lin > lout + 1 (it must skip at least one block), got lout={lout}, lin={lin}"
                )
            return cls((Segment(local, 0, lout + 1), Segment(local, lin, None)))
        if hin is None or hout is None:
            raise PathSpecError(f"a cross path through {host!r} needs hin and hout, got hin={hin}, hout={hout}")
        if hin < 0 or hout < hin:
            raise PathSpecError(f"host blocks must satisfy 0 <= hin <= hout, got hin={hin}, hout={hout}")
        if lin <= lout:
            raise PathSpecError(f"a cross path needs lin > lout, got lout={lout}, lin={lin}")
        return cls((Segment(local, 0, lout + 1), Segment(host, hin, hout + 1), Segment(local, lin, None)))

    def __str__(self) -> str:
        return " > ".join(str(s) for s in self.segments)

    def paper_form(self) -> str:
        """``LOCAL[/HOST]: lout=.. hin=.. hout=.. lin=..`` (raises for other shapes)."""
        ix = self.indices
        host = f"/{self.hosts[0]}" if self.hosts else ""
        return f"{self.local}{host}: {ix}"

    # -- structure ----------------------------------------------------------------------------
    @property
    def local(self) -> str:
        return self.segments[0].service

    @property
    def hosts(self) -> tuple[str, ...]:
        """Host services in the order the path visits them (without repeats)."""
        seen: list[str] = []
        for s in self.segments:
            if s.service != self.local and s.service not in seen:
                seen.append(s.service)
        return tuple(seen)

    @property
    def kind(self) -> str:
        """'original', 'skip' or 'cross'."""
        if len(self.segments) == 1:
            return "original"
        return "cross" if self.hosts else "skip"

    @property
    def indices(self) -> PaperIndices:
        """The paper's lout/hin/hout/lin, for skip paths and one-host cross paths."""
        segs = self.segments
        if self.kind == "skip" and len(segs) == 2 and segs[0].stop is not None:
            return PaperIndices(lout=segs[0].stop - 1, lin=segs[1].start)
        if self.kind == "cross" and len(segs) == 3:
            visit = self.one_host_visit()  # an open segment: "resolve the path against its services first"
            return PaperIndices(lout=visit.lout, lin=visit.lin, hin=visit.hin, hout=visit.hout)
        raise PathSpecError(
            f"path {self} has no lout/hin/hout/lin form: the paper's indices describe one skip or "
            "one host; use the compact form"
        )

    def one_host_visit(self, num_blocks: Mapping[str, int] | None = None, *, local: str | None = None,
                       host: str | None = None) -> HostVisit:
        """The indices of a ``local > host > local`` path; :class:`PathShapeError` for any other shape
        (or another ``local``/``host`` than asked). ``num_blocks`` is needed only for a segment whose
        stop is open (an unresolved spec)."""
        segs = self.segments
        if len(segs) != 3 or segs[1].service == self.local or (local is not None and self.local != local):
            wanted = f" for local service {local!r}" if local is not None else ""
            raise PathShapeError(
                f"path {str(self)!r} is not local > host > local{wanted} (a one-visit cross path; it visits "
                f"{', '.join(map(repr, self.hosts)) or 'no host'}); host segments, split training and host routes "
                "take exactly that shape, e.g. 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]'")
        if host is not None and segs[1].service != host:
            raise PathShapeError(f"path {str(self)!r} visits host {segs[1].service!r}, but the service given is {host!r}")

        def stop(seg: Segment) -> int:
            if seg.stop is not None:
                return seg.stop
            if num_blocks is None or seg.service not in num_blocks:
                raise PathSpecError(f"path {self}: segment {seg} is open-ended; pass {seg.service!r}'s block count "
                                    "or resolve the path against its services first")
            return num_blocks[seg.service]

        return HostVisit(self.local, segs[1].service, stop(segs[0]) - 1, segs[1].start, stop(segs[1]) - 1,
                         segs[2].start)

    def resolve(self, num_blocks: Mapping[str, int]) -> PathSpec:
        """Check the spec against each service's block count and normalise open ends.

        Each path gets one canonical text: local segments that run to the end have an open stop
        (``alexnet[5:]``), host segments an explicit one (``mobilenet_v2[1:7]``), so the paper's
        indices can always be read off.
        """
        missing = [s.service for s in self.segments if s.service not in num_blocks]
        if missing:
            raise PathSpecError(
                f"path {self} names unknown service {missing[0]!r}; known services: {available(num_blocks)}"
            )
        out: list[Segment] = []
        for seg in self.segments:
            n = num_blocks[seg.service]
            end = seg.end(n)
            if seg.start >= n or end > n:
                raise PathSpecError(
                    f"path {self}: segment {seg} is out of range; {seg.service!r} has blocks 0..{n - 1}"
                )
            open_end = end == n and seg.service == self.local
            out.append(Segment(seg.service, seg.start, None if open_end else end))
        local_n = num_blocks[self.local]
        if out[-1].stop is not None:
            raise PathSpecError(f"path {self}: the last segment must run to the local service's end (block {local_n - 1})")
        if len(out) == 1 and out[0].start != 0:
            raise PathSpecError(f"path {self}: a single segment must be the whole model, {self.local}[:]")
        prev_local_end: int | None = None
        for a, b in zip(out, out[1:]):
            if a.service == b.service and b.start <= a.end(num_blocks[a.service]):
                if b.start < a.end(num_blocks[a.service]):
                    raise PathSpecError(f"path {self}: {b} runs blocks {a} already ran; a path only moves forward")
                raise PathSpecError(f"path {self}: {a} > {b} skips no block; join them into one segment")
        for seg in out:
            if seg.service != self.local:
                continue
            if prev_local_end is not None and seg.start < prev_local_end:
                raise PathSpecError(
                    f"path {self}: local segment {seg} goes back to block {seg.start}, before block "
                    f"{prev_local_end} which the path already reached"
                )
            prev_local_end = seg.end(local_n)
        return PathSpec(tuple(out))


def slug(spec: str) -> str:
    """A path spec as a file and URL name: readable, unique (hash suffix). A run's link files and a
    host's served model names both use it."""
    text = re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")
    return f"{text[:80]}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"
