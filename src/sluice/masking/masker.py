"""The masker: compiled profiles applied to result rows and message text.

Built once per set of profile names (`MaskingEngine.masker`) and cached.
Everything here is pure: bytes in, bytes out, no I/O.

Failure contract: any exception from a masker (MaskingError or a bug) means
the caller must drop the message and error the client. Never pass the data.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Final

from sluice.masking import pgtypes
from sluice.masking.config import MaskingProfileSpec, MaskingSpec
from sluice.masking.detectors import (
    BUILTIN_DETECTORS,
    Detector,
    regex_detector,
    wordlist_detector,
)
from sluice.masking.errors import MaskingConfigError, MaskingError
from sluice.masking.hits import Finding
from sluice.masking.model import (
    EMPTY_STATS,
    ColumnLineage,
    ColumnOrigin,
    MaskStats,
    ResultColumn,
    TableRef,
)
from sluice.masking.precheck import RegionPrecheck
from sluice.masking.scanner import Backend, Scanner
from sluice.masking.strategies import (
    COLUMN_KIND,
    REDACT,
    Action,
    Replacer,
    Strategy,
    redact,
)

# Enum members bound once: compiled, `Enum.MEMBER` is an attribute lookup
# through the enum's metaclass at every use (about 800 instructions on 3.11).
_STRATEGY_DETECT: Final = Strategy.DETECT
_STRATEGY_FAKE: Final = Strategy.FAKE
_STRATEGY_HASH: Final = Strategy.HASH
_STRATEGY_NULL: Final = Strategy.NULL
_STRATEGY_REDACT: Final = Strategy.REDACT

if TYPE_CHECKING:
    from sluice.masking.copy import CopyFormat, CopyMasker
    from sluice.masking.ner import NerAnalyzer
    from sluice.masking.precheck import RegionPrecheck

Row = list[bytes | None]

# Distinct RowDescriptions whose plan is kept; a session rarely has more shapes.
PREPARE_CACHE_SIZE: Final = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnRule:
    """A compiled `columns:` entry: glob parts (lowercase) and the action."""

    parts: tuple[str, ...]
    action: Action

    @classmethod
    def parse(cls, match: str, action: Action) -> ColumnRule:
        parts = tuple(p.strip().lower() for p in match.split("."))
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise MaskingConfigError(
                f"column rule {match!r}: use schema.table.column, table.column or column"
            )
        return cls(parts=parts, action=action)

    def matches_origin(self, o: ColumnOrigin) -> bool:
        """An empty schema (unknown without a catalog) matches any schema glob."""
        names = (o.schema.lower(), o.table.lower(), o.column.lower())[-len(self.parts) :]
        return all(
            fnmatchcase(n, p) or (i == 0 and len(self.parts) == 3 and not n)
            for i, (n, p) in enumerate(zip(names, self.parts, strict=True))
        )

    def matches_name(self, name: str) -> bool:
        return len(self.parts) == 1 and fnmatchcase(name.lower(), self.parts[0])

    def could_touch(self, t: TableRef) -> bool:
        """Whether some column of table `t` (columns unknown) could match."""
        if len(self.parts) == 1:
            return True
        if not fnmatchcase(t.table.lower(), self.parts[-2]):
            return False
        return (
            len(self.parts) == 2 or t.schema is None or fnmatchcase(t.schema.lower(), self.parts[0])
        )


def _action(strategy: str, keep_last: int) -> Action:
    return Action(strategy=Strategy(strategy), keep_last=keep_last)


def _profile_actions(p: MaskingProfileSpec) -> dict[str, Action]:
    """Built-in detector -> action for one profile; explicit entries override "all"."""
    out: dict[str, Action] = {}
    explicit: dict[str, Action] = {}
    for spec in p.detectors:
        name = spec if isinstance(spec, str) else spec.name
        if name == "all":
            out.update(dict.fromkeys(BUILTIN_DETECTORS, REDACT))
            continue
        if name not in BUILTIN_DETECTORS:
            known = ", ".join(sorted(BUILTIN_DETECTORS))
            raise MaskingConfigError(
                f"masking profile {p.name!r}: unknown detector {name!r} (known: all, {known})"
            )
        action = REDACT if isinstance(spec, str) else _action(spec.strategy, spec.keep_last)
        explicit[name] = action if name not in explicit else explicit[name].stronger(action)
    out.update(explicit)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class _Whole:
    index: int
    column: ResultColumn
    action: Action


@dataclass(frozen=True, slots=True, kw_only=True)
class _Scan:
    index: int
    column: ResultColumn
    is_json: bool
    decode: bool  # detectors read its decoded form (scan_view): binary numbers, text bytea
    text_like: bool  # masked text is valid as is


class Masker:
    """Compiled masking for one set of profiles. Immutable; share freely."""

    def __init__(
        self,
        profiles: Sequence[MaskingProfileSpec],
        *,
        replacer: Replacer,
        backend: Backend | None = None,
        text_like_oids: frozenset[int] = frozenset(),
    ):
        self.profiles = tuple(p.name for p in profiles)
        self._replacer = replacer
        self._extra_text = text_like_oids
        rules: list[ColumnRule] = []
        actions: dict[str, Action] = {}
        custom: dict[str, Detector] = {}
        self.content = any(p.content for p in profiles)
        for p in profiles:
            rules.extend(
                ColumnRule.parse(c.match, _action(c.strategy, c.keep_last)) for c in p.columns
            )
            for name, action in _profile_actions(p).items():
                prev = actions.get(name)
                actions[name] = action if prev is None else prev.stronger(action)
            for c in p.custom_detectors:
                if c.name in BUILTIN_DETECTORS:
                    raise MaskingConfigError(
                        f"custom detector {c.name!r} shadows a built-in detector"
                    )
                if c.regex is not None:
                    custom[c.name] = regex_detector(c.name, c.regex, validator=c.validator)
                else:
                    custom[c.name] = wordlist_detector(
                        c.name, c.words or (), case_sensitive=c.case_sensitive
                    )
                act = _action(c.strategy, c.keep_last)
                actions[c.name] = act if c.name not in actions else actions[c.name].stronger(act)
        self._rules = tuple(rules)
        self._actions = actions
        # Redacted detectors: the placeholder does not depend on the value.
        self._fixed = {
            name: redact(name) for name, a in actions.items() if a.strategy is _STRATEGY_REDACT
        }
        detectors = [BUILTIN_DETECTORS[n] for n in BUILTIN_DETECTORS if n in actions]
        detectors.extend(custom.values())
        self.scanner = Scanner(detectors, backend=backend)
        self._ner: NerAnalyzer | None = None
        ner_specs = [p.ner for p in profiles if p.ner.enabled]
        if ner_specs:
            from sluice.masking.ner import NerAnalyzer

            self._ner = NerAnalyzer.from_specs(ner_specs)
            for label in self._ner.labels:
                actions.setdefault(label, _action(ner_specs[0].strategy, 4))
        needs_key = any(
            a.strategy in (_STRATEGY_HASH, _STRATEGY_FAKE)
            for a in (*actions.values(), *(r.action for r in rules))
        )
        if needs_key:
            replacer.digest(b"")  # raises MaskingConfigError without a key
        self._cache: dict[tuple[ResultColumn, ...], RowMasker | None] = {}
        self._lock = threading.Lock()
        self._precheck: RegionPrecheck | None = None
        self._precheck_made = False

    @property
    def region_precheck(self) -> RegionPrecheck | None:
        """The raw-buffer pre-check for these detectors, when one is sound
        (no NER; built-in detectors only); compiled on first use."""
        if not self._precheck_made:
            if self.has_detectors and self._ner is None:
                candidate = RegionPrecheck(self.scanner.detectors)
                self._precheck = candidate if candidate.usable else None
            self._precheck_made = True
        return self._precheck

    @property
    def has_column_rules(self) -> bool:
        """Whether results need lineage (else only content detectors apply)."""
        return bool(self._rules)

    @property
    def has_detectors(self) -> bool:
        return bool(self.scanner.detectors) or self._ner is not None

    # -- planning ---------------------------------------------------------

    def column_action(self, column: ResultColumn) -> Action | None:
        """The strongest column rule that applies to `column`, if any."""
        if not self._rules:
            return None
        lin: ColumnLineage = column.effective_lineage()
        best: Action | None = None
        for rule in self._rules:
            if (
                lin.opaque
                or rule.matches_name(column.name)
                or any(rule.matches_origin(o) for o in lin.origins)
                or any(rule.could_touch(t) for t in lin.unresolved)
            ):
                best = rule.action if best is None else best.stronger(rule.action)
        return best

    def prepare(self, columns: Sequence[ResultColumn]) -> RowMasker | None:
        """Plan masking for a result shape; None when nothing can apply (fast path)."""
        key = tuple(columns)
        if key in self._cache:
            return self._cache[key]
        whole: list[_Whole] = []
        scan: list[_Scan] = []
        for i, col in enumerate(columns):
            action = self.column_action(col)
            if action is not None and action.strategy is not _STRATEGY_DETECT:
                whole.append(_Whole(index=i, column=col, action=action))
            elif (
                (action is not None or self.content)
                and self.has_detectors
                and pgtypes.scannable(col.type_oid)
            ):
                scan.append(
                    _Scan(
                        index=i,
                        column=col,
                        is_json=col.type_oid in pgtypes.JSON_TYPES,
                        decode=pgtypes.needs_decoding(col.type_oid, col.format),
                        text_like=pgtypes.is_text_like(col.type_oid, col.format, self._extra_text),
                    )
                )
        plan = RowMasker(self, tuple(whole), tuple(scan), len(columns)) if whole or scan else None
        with self._lock:
            if len(self._cache) >= PREPARE_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = plan
        return plan

    # -- content masking ---------------------------------------------------

    def find(self, value: bytes) -> list[Finding]:
        """Detector findings (regex, then NER if enabled) in one value."""
        found = self.scanner.scan(value)
        if self._ner is not None:
            found = _merge_findings(found, self._ner.find(value))
        return found

    def apply(
        self, value: bytes, findings: Sequence[Finding], *, allow_null: bool = True
    ) -> bytes | None:
        """Replace each finding by its detector's action; None if one says NULL."""
        fixed = self._fixed
        if len(findings) == 1:
            s, e, name = findings[0]
            if s == 0 and e == len(value) and name in fixed:  # a whole-value item, redacted
                return fixed[name]
        parts: list[bytes] = []
        pos = 0
        for f in findings:
            s, e, name = f
            if (s < len(value) and value[s] >= 0x80) or (e < len(value) and value[e] >= 0x80):
                s, e = _utf8_snap(value, s, e)
            if s < pos:
                s = pos
            rep = fixed.get(name)
            if rep is None:
                action = self._actions.get(name, REDACT)
                if action.strategy is _STRATEGY_NULL and not allow_null:
                    action = REDACT
                rep = self._replacer.replace(value[s:e], name, action)
                if rep is None:
                    return None
            parts.append(value[pos:s])
            parts.append(rep)
            pos = e
        parts.append(value[pos:])
        return b"".join(parts)

    def mask_bytes(self, value: bytes) -> tuple[bytes, MaskStats]:
        """Mask free text given as UTF-8 bytes (a NULL action redacts instead)."""
        if not self.has_detectors:
            return value, EMPTY_STATS
        found = self.find(value)
        if not found:
            return value, EMPTY_STATS
        masked = self.apply(value, found, allow_null=False)
        assert masked is not None
        return masked, MaskStats.of(1, Counter(f.detector for f in found), Counter())

    def mask_text(self, text: str) -> tuple[str, MaskStats]:
        """Mask ErrorResponse/NoticeResponse fields, NOTIFY payloads, any message text."""
        try:
            raw = text.encode("utf-8", "surrogatepass")
            masked, stats = self.mask_bytes(raw)
            if stats.values <= 0:  # `not stats` is a Python-level __bool__ per message
                return text, stats
            try:
                return masked.decode("utf-8", "surrogatepass"), stats
            except UnicodeDecodeError:
                return masked.decode("utf-8", "replace"), stats
        except MaskingError:
            raise
        except Exception as exc:  # fail closed: never hand back unmasked text
            raise MaskingError(f"masking failed: {type(exc).__name__}") from exc

    def mask_json_leaves(self, text: bytes, counts: Counter[str]) -> bytes:
        """Content-mask every string/number leaf of a JSON document."""

        def leaf(s: str) -> str | None:
            raw = s.encode("utf-8", "surrogatepass")
            found = self.find(raw)
            if not found:
                return None
            counts.update(f.detector for f in found)
            masked = self.apply(raw, found, allow_null=False)
            assert masked is not None
            return masked.decode("utf-8", "replace")

        try:
            return pgtypes.map_json(text, leaf)
        except (ValueError, RecursionError):
            return b"null"

    def copy_masker(
        self,
        columns: Sequence[ResultColumn],
        fmt: CopyFormat,
        precheck: RegionPrecheck | None = None,
    ) -> CopyMasker | None:
        """A streaming masker for COPY data, or None if nothing applies.

        `precheck` is used only without column rules (content detectors alone).
        """
        from sluice.masking.copy import CopyMasker

        text_columns = [
            ResultColumn(
                name=c.name, type_oid=c.type_oid, format=0, origin=c.origin, lineage=c.lineage
            )
            for c in columns
        ]
        plan = self.prepare(text_columns)
        if plan is None:
            return None
        return CopyMasker(plan, fmt, None if self.has_column_rules else precheck)


def _utf8_snap(value: bytes, s: int, e: int) -> tuple[int, int]:
    """Widen [s, e) to whole UTF-8 characters, so replacing it keeps valid UTF-8."""
    n = len(value)
    while 0 < s < n and 0x80 <= value[s] < 0xC0:
        s -= 1
    while 0 < e < n and 0x80 <= value[e] < 0xC0:
        e += 1
    return s, e


def _merge_findings(a: list[Finding], b: list[Finding]) -> list[Finding]:
    """Union of two sorted finding lists, overlaps merged (first list names the span)."""
    if not b:
        return a
    allf = sorted(a + b)
    out: list[Finding] = [allf[0]]
    for f in allf[1:]:
        last = out[-1]
        if f.start < last.end:
            out[-1] = Finding(last.start, max(last.end, f.end), last.detector)
        else:
            out.append(f)
    return out


class RowMasker:
    """Masks batches of rows of one result shape. Made by `Masker.prepare`."""

    __slots__ = ("_decode", "_json", "_masker", "_scan", "_scan_idx", "_whole", "width")

    def __init__(
        self, masker: Masker, whole: tuple[_Whole, ...], scan: tuple[_Scan, ...], width: int
    ):
        self._masker = masker
        self._whole = whole
        self._scan = scan
        self._scan_idx = tuple(s.index for s in scan)
        self._decode = any(s.decode for s in scan)
        self._json = tuple(s for s in scan if s.is_json)
        self.width = width

    def mask_rows(self, rows: list[Row]) -> tuple[list[Row], MaskStats]:
        """Mask many DataRows at once. Rows without changes are returned as given."""
        try:
            return self._mask_rows(rows)
        except MaskingError:
            raise
        except Exception as exc:  # fail closed: the caller must drop the data
            raise MaskingError(f"masking failed: {type(exc).__name__}") from exc

    def mask_row(self, row: Row) -> tuple[Row, MaskStats]:
        out, stats = self.mask_rows([row])
        return out[0], stats

    def _mask_rows(self, rows: list[Row]) -> tuple[list[Row], MaskStats]:
        for row in rows:
            if len(row) != self.width:
                raise MaskingError(f"row has {len(row)} columns, result has {self.width}")
        m = self._masker
        replacer = m._replacer
        extra = m._extra_text
        changed: dict[int, Row] = {}
        by_det: Counter[str] = Counter()
        by_col: Counter[str] = Counter()
        names: list[str] = []  # detector of every finding, counted once at the end
        cols_hit: list[str] = []  # column of every masked value, likewise
        nvals = 0

        def writable(ri: int) -> Row:
            r = changed.get(ri)
            if r is None:
                r = changed[ri] = list(rows[ri])
            return r

        for w in self._whole:
            col = w.column
            fake_kind = w.action.strategy is _STRATEGY_FAKE and pgtypes.is_text_like(
                col.type_oid, col.format, extra
            )
            for ri, row in enumerate(rows):
                v = row[w.index]
                if v is None:
                    continue
                if fake_kind:
                    new: bytes | None = self._fake_whole(v)
                else:
                    new = pgtypes.mask_whole_value(
                        v, col.type_oid, col.format, w.action, replacer, extra
                    )
                writable(ri)[w.index] = new
                by_col[col.name] += 1
                nvals += 1

        if self._scan:
            idx = self._scan_idx
            k = len(idx)
            if self._decode:
                plans = self._scan
                values = [
                    pgtypes.scan_view(v, p.column.type_oid, p.column.format) if v else b""
                    for row in rows
                    for p, v in zip(plans, [row[i] for i in idx], strict=True)
                ]
            elif k == 1:
                i0 = idx[0]
                values = [row[i0] or b"" for row in rows]
            else:
                values = [row[i] or b"" for row in rows for i in idx]
            found = m.scanner.scan_many(values)
            if m._ner is not None:
                for j, v in enumerate(values):
                    if v:
                        extra_found = m._ner.find(v)
                        if extra_found:
                            found[j] = _merge_findings(found.get(j, []), extra_found)
            handled: set[int] = set()
            plans = self._scan
            for j, findings in found.items():
                ri, c = divmod(j, k)
                plan = plans[c]
                if plan.text_like and not plan.decode:  # the common case, inlined
                    names.extend([f.detector for f in findings])
                    new = m.apply(values[j], findings)
                else:
                    raw = rows[ri][plan.index]
                    if raw is None:
                        continue
                    new = self._mask_found(plan, raw, values[j], findings, by_det, names)
                    if plan.is_json:
                        handled.add(j)
                r = changed.get(ri)
                if r is None:
                    r = changed[ri] = list(rows[ri])
                r[plan.index] = new
                cols_hit.append(plan.column.name)
                nvals += 1
            # JSON can hide text behind \u escapes that the raw scan cannot read.
            for c, plan in enumerate(self._scan):
                if not plan.is_json:
                    continue
                for ri, row in enumerate(rows):
                    v = row[plan.index]
                    if v is None or b"\\u" not in v or ri * k + c in handled:
                        continue
                    new = self._mask_json(plan, v, by_det)
                    if new != v:
                        writable(ri)[plan.index] = new
                        by_col[plan.column.name] += 1
                        nvals += 1

        if not changed:
            return rows, EMPTY_STATS
        if names:
            by_det.update(names)
        if cols_hit:
            by_col.update(cols_hit)
        out = [changed.get(i, r) for i, r in enumerate(rows)]
        return out, MaskStats.of(nvals, by_det, by_col)

    def _fake_whole(self, value: bytes) -> bytes:
        """Fake a whole text value: of its detected kind if it is one PII item."""
        m = self._masker
        stripped = value.strip()
        found = m.scanner.scan(stripped) if m.scanner.detectors else []
        if len(found) == 1 and found[0].start == 0 and found[0].end == len(stripped):
            return m._replacer.fake(stripped, found[0].detector)
        return m._replacer.fake(value, COLUMN_KIND)

    def _mask_json(self, plan: _Scan, raw: bytes, counts: Counter[str]) -> bytes:
        col = plan.column
        try:
            payload = pgtypes.json_payload(raw, col.type_oid, col.format)
        except ValueError:
            return pgtypes.json_wrap(b"null", col.type_oid, col.format)
        return pgtypes.json_wrap(
            self._masker.mask_json_leaves(payload, counts), col.type_oid, col.format
        )

    def _mask_found(
        self,
        plan: _Scan,
        raw: bytes,
        view: bytes,
        findings: list[Finding],
        counts: Counter[str],
        names: list[str],
    ) -> bytes | None:
        col = plan.column
        if plan.is_json:
            if any(
                self._masker._actions.get(f.detector, REDACT).strategy is _STRATEGY_NULL
                for f in findings
            ):
                counts.update(f.detector for f in findings)
                return None
            return self._mask_json(plan, raw, counts)
        for f in findings:
            names.append(f.detector)
        if col.type_oid == pgtypes.BYTEA:  # masked in its bytes, encoded again
            masked_bytes = self._masker.apply(view, findings)
            return None if masked_bytes is None else pgtypes.encode_bytea(masked_bytes, col.format)
        if plan.decode:
            return None  # binary number holding PII: no valid masked binary form
        masked = self._masker.apply(view, findings)
        if plan.text_like:
            return masked
        return pgtypes.coerce_masked(col.type_oid, col.format, masked, self._masker._extra_text)


class MaskingEngine:
    """All masking profiles of a configuration; hands out cached `Masker`s.

    `hmac_key` is the resolved secret named by `MaskingSpec.hmac_key`.
    `text_like_oids` adds extension types (citext, domains over text) whose
    values may be edited in place like text.
    """

    def __init__(
        self,
        spec: MaskingSpec,
        *,
        hmac_key: bytes | None = None,
        backend: Backend | None = None,
        text_like_oids: Iterable[int] = (),
    ):
        self.spec = spec
        self._profiles = {p.name: p for p in spec.profiles}
        self._replacer = Replacer(hmac_key)
        self._backend = backend
        self._text_like = frozenset(text_like_oids)
        self._cache: dict[tuple[str, ...], Masker] = {}
        self._lock = threading.Lock()

    def masker(self, profiles: Iterable[str]) -> Masker:
        """The compiled masker for these profile names (order and repeats ignored)."""
        key = tuple(sorted(set(profiles)))
        found = self._cache.get(key)
        if found is not None:
            return found
        missing = [n for n in key if n not in self._profiles]
        if missing:
            raise MaskingConfigError(f"unknown masking profile(s): {', '.join(missing)}")
        built = Masker(
            [self._profiles[n] for n in key],
            replacer=self._replacer,
            backend=self._backend,
            text_like_oids=self._text_like,
        )
        with self._lock:
            return self._cache.setdefault(key, built)

    def validate(self) -> None:
        """Compile every profile once, so configuration errors surface at load time."""
        for name in self._profiles:
            self.masker([name])
