"""The policy engine: compiled policies and the pure decision function.

Usage::

    engine = PolicyEngine.compile(specs)            # raises PolicyError
    verdict = engine.decide(event, policy_name="agents", prepared=session_prepared)

- ``PolicyEngine.compile(specs, *, presets=None)`` resolves ``extends`` chains
  (a policy's own rules first, then its parent's, and so on), checks unknown
  names and cycles, and freezes everything. A rule whose name repeats an
  inherited rule's name replaces it.
- ``decide(event, *, policy_name, prepared=None) -> Verdict`` is pure: it
  reads `prepared` (statement name -> SQL, e.g. `PreparedStatements`) and
  never raises: any error becomes ``Block(rule="engine-error")``.
- ``explain(...)`` returns the verdict plus, per statement, its classification
  and the rule that decided it (for ``sluice policy test``).
- ``replay(queries, *, policy_name, context)`` judges a recorded session under
  the current policy, tracking prepared statements as the recording ran them.

Judging: each statement is matched against the rules in order; the first
allow/block/require_approval rule that matches decides it, else the policy
default. Mask rules never decide: every matching mask rule (before the
deciding rule) adds its profiles, attached to the statement's Allow or
RequireApproval. The query's verdict is the strictest over its statements:
block > require_approval > allow; approvals need a group common to all of
them (none in common: block), the shortest timeout wins, mask profiles add up.

Unqualified table names: taken to be in ``public`` until the session changes
its search_path (``QueryRequested.search_path_changed``, or a statement
earlier in the same query string that may change it). After that a rule
whose tables or schemas match an unqualified name under some schema only
(MAYBE) cannot let it through: a block or approval rule that may apply is
judged alongside the rule that certainly decides, and the strictest wins;
an allow rule that may apply is passed over. Mask rules that may apply add
their profiles.

Prepared statements: Parse (origin PARSE) and SQL ``PREPARE`` are judged as
the statement they prepare; ``EXECUTE`` (origin EXECUTE or SQL) is judged as
the prepared text again; a name Sluice never saw is blocked. ``PREPARE``,
``DEALLOCATE`` and ``DISCARD ALL`` earlier in the same query string are taken
into account for later statements.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from sluice.events import (
    Event,
    Identity,
    Protocol,
    QueryOrigin,
    QueryRequested,
    SessionContext,
)
from sluice.policy.config import PolicySpec, RuleSpec, builtin_presets
from sluice.policy.database import NO_DATABASE_CODE, DatabaseCode
from sluice.policy.errors import PolicyError
from sluice.policy.prepared import PreparedStatements, mentions_prepared
from sluice.policy.rules import (
    CompiledRule,
    Condition,
    Globs,
    Match,
    RuleAction,
    Subjects,
    table_names,
)
from sluice.policy.sql import (
    MAX_CACHED_SQL_CHARS,
    Category,
    Deallocate,
    Execute,
    Prepare,
    StatementInfo,
    classify,
    merge_execution,
)
from sluice.policy.textkeys import TextKeys, text_keys
from sluice.policy.verdict import Allow, Block, MaskPlan, RequireApproval, Verdict

# Enum members bound once: compiled, `Enum.MEMBER` is an attribute lookup
# through the enum's metaclass at every use (about 800 instructions on 3.11).
_ACTION_ALLOW: Final = RuleAction.ALLOW
_ACTION_BLOCK: Final = RuleAction.BLOCK
_ACTION_MASK: Final = RuleAction.MASK
_ACTION_REQUIRE_APPROVAL: Final = RuleAction.REQUIRE_APPROVAL
_CATEGORY_PROCEDURAL: Final = Category.PROCEDURAL
_CATEGORY_UNPARSABLE: Final = Category.UNPARSABLE
_MATCH_MAYBE: Final = Match.MAYBE
_MATCH_NO: Final = Match.NO
_ORIGIN_EXECUTE: Final = QueryOrigin.EXECUTE
_ORIGIN_FUNCTION_CALL: Final = QueryOrigin.FUNCTION_CALL
_ORIGIN_ONE_SHOT: Final = QueryOrigin.ONE_SHOT
_ORIGIN_PARSE: Final = QueryOrigin.PARSE
_ORIGIN_SIMPLE: Final = QueryOrigin.SIMPLE
_PROTOCOL_POSTGRES: Final = Protocol.POSTGRES

ENGINE_ERROR_RULE: Final = "engine-error"
DEFAULT_RULE: Final = "default"
UNKNOWN_PREPARED_RULE: Final = "unknown-prepared-statement"
APPROVAL_CONFLICT_RULE: Final = "approval-conflict"
UNSUPPORTED_EVENT_RULE: Final = "unsupported-event"
EMPTY_QUERY_RULE: Final = "empty-query"

MAX_EXECUTE_DEPTH: Final = 4
"""A prepared text may itself be an EXECUTE (protocol Parse of ``EXECUTE p``);
deeper chains than this are blocked rather than followed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledPolicy:
    name: str
    chain: tuple[str, ...]
    """This policy, then every policy it extends."""
    default: RuleAction
    rules: tuple[CompiledRule, ...]
    read_only_functions: Globs | None = None
    """Functions the policy's authors vouch leave the database as it is."""

    def unvouched(self, functions: frozenset[str]) -> frozenset[str]:
        """The functions of `functions` (as written) the policy does not vouch
        for, by the name as written or without its schema."""
        globs = self.read_only_functions
        if globs is None:
            return functions
        return frozenset(
            name
            for name in functions
            if not (globs.regex.match(name) or globs.regex.match(name.rpartition(".")[2]))
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementDecision:
    """How one statement was judged."""

    statement: StatementInfo
    """As judged: an EXECUTE carries the prepared statement's classification."""
    verdict: Verdict
    rule: str
    policy: str | None
    """The policy declaring `rule`; None for the engine's own rules."""
    mask_rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    verdict: Verdict
    statements: tuple[StatementDecision, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedQuery:
    """One query of a recorded session, for `PolicyEngine.replay`."""

    sql: str
    origin: QueryOrigin
    statement_name: str | None = None
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


# Distinct (policy, identity, statement shape) verdicts kept for reuse.
VERDICT_CACHE_SIZE = 8192

_VerdictKeys = tuple[tuple[object, ...], tuple[object, ...] | None]
"""A verdict's cache key for its exact text, and the one shared across literals."""
PREPARED_KEYS_SIZE: Final = 1024
"""Texts of prepared statements whose keys are kept (each up to MAX_CACHED_SQL_CHARS)."""


def _text_keys(sql: str) -> TextKeys | None:
    """The text parts of a verdict key (`text_keys`), or None when the text
    cannot be cached. Verdicts go under the second only when `_literal_blind`."""
    if mentions_prepared(sql):  # depends on session state
        return None
    return text_keys(sql)


def _literal_blind(explanation: Explanation) -> bool:
    """Whether no statement's verdict depended on a string literal's value."""
    return bool(explanation.statements) and all(
        decision.statement.literal_blind for decision in explanation.statements
    )


class PolicyEngine:
    """Immutable compiled policies; see the module docstring."""

    __slots__ = ("_policies", "_prepared_keys", "_textual", "_verdicts", "judged_afresh")

    def __init__(self, policies: Mapping[str, CompiledPolicy]) -> None:
        self._policies: Mapping[str, CompiledPolicy] = MappingProxyType(dict(policies))
        # Policies whose rules read the raw text: their verdicts are never reused.
        self._textual = frozenset(
            name
            for name, policy in self._policies.items()
            if any(rule.condition.text_regex is not None for rule in policy.rules)
        )
        self._verdicts: dict[tuple[object, ...], Verdict] = {}
        # Keys of prepared statements' texts: a Bind judges the same text each
        # time, and clients of the extended protocol parse the same texts again.
        self._prepared_keys: dict[str, TextKeys | None] = {}
        self.judged_afresh = 0
        """Events judged by `explain` (not answered from the verdict cache)."""

    @classmethod
    def compile(
        cls, specs: Iterable[PolicySpec], *, presets: Mapping[str, PolicySpec] | None = None
    ) -> PolicyEngine:
        """Compile `specs` together with the presets (built-in ones by default)."""
        known: dict[str, PolicySpec] = dict(builtin_presets() if presets is None else presets)
        preset_names = set(known)
        for spec in specs:
            if spec.name in preset_names:
                raise PolicyError(
                    f"policy {spec.name!r} has the name of a built-in preset; "
                    f"choose another name and use `extends: {spec.name}`"
                )
            if spec.name in known:
                raise PolicyError(f"policy {spec.name!r} is defined twice")
            known[spec.name] = spec
        return cls({name: _compile_policy(name, known) for name in known})

    @property
    def policy_names(self) -> tuple[str, ...]:
        return tuple(self._policies)

    def may_mask(self, name: str) -> bool:
        """Whether any rule of policy `name` (or what it extends) attaches masking."""
        return any(rule.mask_profiles for rule in self.policy(name).rules)

    def policy(self, name: str) -> CompiledPolicy:
        try:
            return self._policies[name]
        except KeyError:
            raise PolicyError(f"unknown policy {name!r}") from None

    def decide(
        self, event: Event, *, policy_name: str, prepared: Mapping[str, str] | None = None
    ) -> Verdict:
        """The verdict for `event` under `policy_name`; never raises.

        Verdicts of self-contained statements are reused for texts that differ
        only in their numbers (the same key the SQL analysis cache uses), per
        policy and identity; those of plain queries and DML whose analysis
        read no string literal (`StatementInfo.literal_blind`) also for texts
        that differ in their string literals; so are those of a Bind of a
        statement whose text is the one judged at its Parse. Anything else
        that depends on session state (an EXECUTE statement, PREPARE,
        DEALLOCATE, DISCARD) or on the raw text (a policy with `text_regex`
        rules) is judged afresh every time.
        """
        keys = self._verdict_keys(event, policy_name, prepared)
        if keys is None:
            return self.explain(event, policy_name=policy_name, prepared=prepared).verdict
        cached = self._cached(keys)
        if cached is not None:
            return cached
        return self._judge_and_keep(event, policy_name, prepared, keys)

    def decide_query(
        self,
        context: SessionContext,
        sql: str,
        origin: QueryOrigin,
        statement_name: str | None,
        *,
        policy_name: str,
        search_path_changed: bool = False,
        prepared: Mapping[str, str] | None = None,
        database: DatabaseCode | None = None,
    ) -> Verdict:
        """`decide` for the `QueryRequested` of these members, made only when
        the verdict is not cached: a proxy judges every statement this way."""
        keys = (
            None
            if policy_name in self._textual
            else self._query_keys(
                sql,
                origin,
                statement_name,
                context.identity,
                search_path_changed,
                policy_name,
                prepared,
                database,
            )
        )
        if keys is not None:
            cached = self._cached(keys)
            if cached is not None:
                return cached
        event = QueryRequested(
            context=context,
            sql=sql,
            origin=origin,
            statement_name=statement_name,
            search_path_changed=search_path_changed,
            database=database,
        )
        if keys is None:
            return self.explain(event, policy_name=policy_name, prepared=prepared).verdict
        return self._judge_and_keep(event, policy_name, prepared, keys)

    def _cached(self, keys: _VerdictKeys) -> Verdict | None:
        exact, blind = keys
        verdicts = self._verdicts
        cached = verdicts.get(blind) if blind is not None else None
        return cached if cached is not None else verdicts.get(exact)

    def _judge_and_keep(
        self,
        event: Event,
        policy_name: str,
        prepared: Mapping[str, str] | None,
        keys: _VerdictKeys,
    ) -> Verdict:
        """Judge `event` afresh and keep its verdict under the key it may be shared by."""
        exact, blind = keys
        verdicts = self._verdicts
        explanation = self.explain(event, policy_name=policy_name, prepared=prepared)
        verdict = explanation.verdict
        if not (isinstance(verdict, Block) and verdict.rule == ENGINE_ERROR_RULE):
            if len(verdicts) >= VERDICT_CACHE_SIZE:
                verdicts.clear()
            if blind is not None and _literal_blind(explanation):
                verdicts[blind] = verdict
            else:
                verdicts[exact] = verdict
        return verdict

    def _verdict_keys(
        self, event: Event, policy_name: str, prepared: Mapping[str, str] | None
    ) -> _VerdictKeys | None:
        if not isinstance(event, QueryRequested) or policy_name in self._textual:
            return None
        return self._query_keys(
            event.sql,
            event.origin,
            event.statement_name,
            event.context.identity,
            event.search_path_changed,
            policy_name,
            prepared,
            event.database,
        )

    def _query_keys(
        self,
        sql: str,
        origin: QueryOrigin,
        statement_name: str | None,
        identity: Identity,
        search_path_changed: bool,
        policy_name: str,
        prepared: Mapping[str, str] | None,
        database: DatabaseCode | None,
    ) -> _VerdictKeys | None:
        """The cache keys of the verdict for a query: for its text up to its
        numbers, and (None without string literals) up to numbers and literals."""
        if origin is _ORIGIN_EXECUTE:
            # A Bind of a statement judged at its Parse: the statement's own text
            # is all there is to judge, as for a Parse of that text.
            if prepared is None or prepared.get(statement_name or "") != sql:
                return None
        elif origin not in (_ORIGIN_SIMPLE, _ORIGIN_PARSE, _ORIGIN_ONE_SHOT):
            return None
        if len(sql) > MAX_CACHED_SQL_CHARS:
            return None
        if origin is _ORIGIN_EXECUTE or origin is _ORIGIN_PARSE:
            prepared_keys = self._prepared_keys
            # A membership test, not a sentinel default: compiled code makes a
            # Final tuple anew where it is used, so `is` would never match.
            if sql in prepared_keys:
                keyed = prepared_keys[sql]
            else:
                if len(prepared_keys) >= PREPARED_KEYS_SIZE:
                    prepared_keys.clear()
                keyed = prepared_keys[sql] = _text_keys(sql)
        else:
            keyed = _text_keys(sql)
        if keyed is None:
            return None
        (kind, text), blind = keyed
        scope = (
            policy_name,
            identity.user,
            identity.groups,
            origin,
            search_path_changed,
            database,
        )
        return (kind, *scope, text), None if blind is None else (blind[0], *scope, blind[1])

    def explain(
        self, event: Event, *, policy_name: str, prepared: Mapping[str, str] | None = None
    ) -> Explanation:
        """The verdict and how each statement was judged; never raises."""
        self.judged_afresh += 1
        try:
            return self._explain(event, policy_name, prepared or {})
        except Exception as exc:
            reason = f"policy engine error ({type(exc).__name__}: {exc}); blocked to be safe"
            return Explanation(verdict=Block(rule=ENGINE_ERROR_RULE, reason=reason))

    def explain_sql(
        self,
        sql: str,
        *,
        policy_name: str,
        identity: Identity,
        connection: str = "",
        prepared: Mapping[str, str] | None = None,
    ) -> Explanation:
        """`explain` for one-shot SQL text, as `sluice policy test` runs it."""
        context = SessionContext(
            session_id="policy-test",
            identity=identity,
            connection=connection,
            protocol=_PROTOCOL_POSTGRES,
            client_addr="",
        )
        event = QueryRequested(context=context, sql=sql, origin=_ORIGIN_ONE_SHOT)
        return self.explain(event, policy_name=policy_name, prepared=prepared)

    def replay(
        self, queries: Iterable[RecordedQuery], *, policy_name: str, context: SessionContext
    ) -> tuple[Explanation, ...]:
        """Judge a recorded session's queries in order under the current policy."""
        prepared = PreparedStatements()
        results: list[Explanation] = []
        search_path_changed = False
        for query in queries:
            event = QueryRequested(
                context=context,
                sql=query.sql,
                origin=query.origin,
                statement_name=query.statement_name,
                at=query.at,
                search_path_changed=search_path_changed,
            )
            explanation = self.explain(event, policy_name=policy_name, prepared=prepared)
            results.append(explanation)
            if not isinstance(explanation.verdict, Block) and any(
                d.statement.changes_search_path for d in explanation.statements
            ):
                search_path_changed = True
            if query.origin is _ORIGIN_PARSE:
                prepared.parse(query.statement_name or "", query.sql)
            elif query.origin in {_ORIGIN_SIMPLE, _ORIGIN_ONE_SHOT}:
                prepared.observe(query.sql)
        return tuple(results)

    def _explain(self, event: Event, policy_name: str, prepared: Mapping[str, str]) -> Explanation:
        if not isinstance(event, QueryRequested):
            reason = f"{type(event).__name__} events have no SQL policy; blocked"
            return Explanation(verdict=Block(rule=UNSUPPORTED_EVENT_RULE, reason=reason))
        policy = self._policies.get(policy_name)
        if policy is None:
            reason = f"unknown policy {policy_name!r}; blocked to be safe"
            return Explanation(verdict=Block(rule=ENGINE_ERROR_RULE, reason=reason))
        texts = [event.sql]
        if event.origin is _ORIGIN_EXECUTE:
            name = event.statement_name or ""
            stored = prepared.get(name)
            texts = [t for t in (stored, event.sql) if t is not None and t.strip()]
            if stored is not None and stored == event.sql:
                texts = [stored]
            if not texts:
                return Explanation(verdict=_unknown_prepared(name))
        session = _SessionPrepared(prepared)
        identity = event.context.identity
        decisions: list[StatementDecision] = []
        ambiguous = event.search_path_changed
        for text in texts:
            for statement in classify(text).statements:
                judged = _judge(
                    policy,
                    statement,
                    identity,
                    session,
                    ambiguous=ambiguous,
                    database=event.database or NO_DATABASE_CODE,
                )
                decisions.extend(judged)
                session.apply(statement)
                if any(d.statement.changes_search_path for d in judged):
                    ambiguous = True
        if not decisions:
            if event.origin in {_ORIGIN_EXECUTE, _ORIGIN_FUNCTION_CALL}:
                reason = f"{event.origin.value} event without any SQL to judge; blocked"
                return Explanation(verdict=Block(rule=EMPTY_QUERY_RULE, reason=reason))
            verdict: Verdict = Allow(rule=EMPTY_QUERY_RULE, reason="empty query")
            return Explanation(verdict=verdict)
        return Explanation(verdict=_combine(decisions), statements=tuple(decisions))


def _compile_policy(name: str, known: Mapping[str, PolicySpec]) -> CompiledPolicy:
    chain: list[PolicySpec] = []
    current: str | None = name
    while current is not None:
        if current in (spec.name for spec in chain):
            path = " -> ".join([*(spec.name for spec in chain), current])
            raise PolicyError(f"policy {name!r} extends itself: {path}")
        spec = known.get(current)
        if spec is None:
            child = chain[-1].name
            raise PolicyError(
                f"policy {child!r} extends unknown policy {current!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        chain.append(spec)
        current = spec.extends
    default = next((spec.default for spec in chain if spec.default is not None), "block")
    approvers = next((spec.approvers for spec in chain if spec.approvers is not None), [])
    read_only = [name for spec in chain for name in spec.read_only_functions]
    rules: list[CompiledRule] = []
    seen: set[str] = set()
    for spec in chain:
        for rule in spec.rules:
            if rule.name not in seen:
                seen.add(rule.name)
                rules.append(_compile_rule(rule, spec.name, name, approvers))
    return CompiledPolicy(
        name=name,
        chain=tuple(spec.name for spec in chain),
        default=RuleAction(default),
        rules=tuple(rules),
        read_only_functions=Globs.of(read_only),
    )


def _compile_rule(
    rule: RuleSpec, declared_in: str, compiling: str, approvers: list[str]
) -> CompiledRule:
    action = RuleAction(rule.action)
    groups = tuple(rule.approvers or approvers) if action is _ACTION_REQUIRE_APPROVAL else ()
    if action is _ACTION_REQUIRE_APPROVAL and not groups:
        raise PolicyError(
            f"policy {compiling!r}: rule {rule.name!r} (from {declared_in!r}) requires approval "
            "but names no approvers; set `approvers` on the rule or the policy"
        )
    return CompiledRule(
        name=rule.name,
        policy=declared_in,
        action=action,
        condition=Condition.compile(rule.when),
        subjects=Subjects.compile(rule.subjects),
        approvers=groups,
        timeout=rule.timeout,
        mask_profiles=tuple(rule.mask_profiles),
        reason=rule.reason,
    )


class _SessionPrepared:
    """Prepared statements as seen mid-query: the session's, plus the PREPARE /
    DEALLOCATE / DISCARD ALL statements earlier in the same query string."""

    __slots__ = ("_base", "_changes", "_cleared")

    def __init__(self, base: Mapping[str, str]) -> None:
        self._base = base
        self._changes: dict[str, str | None] = {}
        self._cleared = False

    def get(self, name: str) -> str | None:
        if name in self._changes:
            return self._changes[name]
        return None if self._cleared else self._base.get(name)

    def apply(self, statement: StatementInfo) -> None:
        effect = statement.effect
        if isinstance(effect, Prepare):
            self._changes[effect.name] = statement.text
        elif isinstance(effect, Deallocate):
            if effect.name is None:
                self._changes.clear()
                self._cleared = True
            else:
                self._changes[effect.name] = None


def _resolve(
    statement: StatementInfo, session: _SessionPrepared, depth: int = 0
) -> list[StatementInfo] | None:
    """The statements an EXECUTE runs, merged with it; None if unknown."""
    if not isinstance(statement.effect, Execute) or depth > MAX_EXECUTE_DEPTH:
        return None
    name = statement.effect.name
    text = session.get(name)
    if text is None:
        return None
    resolved: list[StatementInfo] = []
    for inner in classify(text).statements:
        merged = merge_execution(statement, inner, name)
        if isinstance(merged.effect, Execute):
            deeper = _resolve(merged, session, depth + 1)
            if deeper is None:
                return None
            resolved.extend(deeper)
        else:
            resolved.append(merged)
    return resolved


def _unknown_prepared(name: str) -> Block:
    return Block(
        rule=UNKNOWN_PREPARED_RULE,
        reason=f"prepared statement {name!r} is unknown to Sluice (never prepared, "
        "deallocated, or nested too deep); blocked",
    )


def _judge(
    policy: CompiledPolicy,
    statement: StatementInfo,
    identity: Identity,
    session: _SessionPrepared,
    *,
    ambiguous: bool = False,
    database: DatabaseCode = NO_DATABASE_CODE,
) -> list[StatementDecision]:
    if isinstance(statement.effect, Execute):
        resolved = _resolve(statement, session)
        if resolved is None:
            verdict = _unknown_prepared(statement.effect.name)
            return [
                StatementDecision(
                    statement=statement, verdict=verdict, rule=verdict.rule, policy=None
                )
            ]
        decisions: list[StatementDecision] = []
        for inner in resolved:
            decisions.extend(
                _judge_one(policy, inner, identity, ambiguous=ambiguous, database=database)
            )
            ambiguous = ambiguous or inner.changes_search_path
        return decisions
    return _judge_one(policy, statement, identity, ambiguous=ambiguous, database=database)


def _judge_one(
    policy: CompiledPolicy,
    statement: StatementInfo,
    identity: Identity,
    *,
    ambiguous: bool,
    database: DatabaseCode = NO_DATABASE_CODE,
) -> list[StatementDecision]:
    """The deciding rule's decision, and with `ambiguous` one for each stricter
    rule that may apply too (their strictest is the statement's verdict)."""
    unvetted = statement.unvetted_functions
    hidden = database.hidden_calls(statement, ambiguous=ambiguous)
    if hidden:
        unvetted = unvetted | hidden
    if unvetted and database.read_only:
        unvetted = unvetted - database.read_only  # not volatile in the database's catalog
    if unvetted:
        unvetted = policy.unvouched(unvetted)
    if unvetted:
        # A function that may write makes the statement procedural code.
        statement = replace(
            statement,
            categories=statement.categories | _PROCEDURAL,
            unvetted_functions=unvetted,
        )
    masks: list[CompiledRule] = []
    may_apply: list[StatementDecision] = []
    for rule in policy.rules:
        if not rule.subjects.include(identity):
            continue
        match = rule.match(statement, ambiguous=ambiguous)
        if match is _MATCH_NO:
            continue
        if rule.action is _ACTION_MASK:
            masks.append(rule)
            continue
        if match is _MATCH_MAYBE:
            if rule.action is not _ACTION_ALLOW:
                may_apply.append(
                    StatementDecision(
                        statement=statement,
                        verdict=_rule_verdict(rule, statement, masks, unsure=True),
                        rule=rule.name,
                        policy=rule.policy,
                        mask_rules=tuple(m.name for m in masks),
                    )
                )
            continue
        decision = StatementDecision(
            statement=statement,
            verdict=_rule_verdict(rule, statement, masks),
            rule=rule.name,
            policy=rule.policy,
            mask_rules=tuple(m.name for m in masks),
        )
        return [decision, *may_apply]
    what = describe(statement)
    verdict: Verdict
    if policy.default is _ACTION_ALLOW:
        reason = f'no rule of policy "{policy.name}" matched {what}; the default allows it'
        verdict = Allow(rule=DEFAULT_RULE, reason=reason, mask=_mask_plan(masks))
    else:
        reason = f'no rule of policy "{policy.name}" matched {what}; the default blocks it'
        verdict = Block(rule=DEFAULT_RULE, reason=reason)
    decision = StatementDecision(
        statement=statement,
        verdict=verdict,
        rule=DEFAULT_RULE,
        policy=policy.name,
        mask_rules=tuple(m.name for m in masks),
    )
    return [decision, *may_apply]


_UNSURE: Final = (
    " (the session changed its search_path, so an unqualified table may be in a "
    "schema this rule names; qualify table names with their schema)"
)


def _rule_verdict(
    rule: CompiledRule, statement: StatementInfo, masks: list[CompiledRule], *, unsure: bool = False
) -> Verdict:
    what = describe(statement, as_written=unsure)
    why = f": {rule.reason}" if rule.reason else ""
    if unsure:
        why += _UNSURE
    if rule.action is _ACTION_BLOCK:
        return Block(rule=rule.name, reason=f'rule "{rule.name}" blocked {what}{why}')
    if rule.action is _ACTION_REQUIRE_APPROVAL:
        return RequireApproval(
            rule=rule.name,
            reason=f'rule "{rule.name}" requires approval for {what}{why}',
            approver_groups=rule.approvers,
            timeout=rule.timeout,
            mask=_mask_plan(masks),
        )
    return Allow(
        rule=rule.name, reason=f'rule "{rule.name}" allowed {what}{why}', mask=_mask_plan(masks)
    )


def _mask_plan(masks: list[CompiledRule]) -> MaskPlan | None:
    if not masks:
        return None
    profiles = dict.fromkeys(p for rule in masks for p in rule.mask_profiles)
    return MaskPlan(rule=masks[0].name, profiles=tuple(profiles))


_NOTABLE_CALLS: Final = {Category.ADMIN, Category.FILE_PROGRAM, Category.PROCEDURAL}
_PROCEDURAL: Final = frozenset({Category.PROCEDURAL})
_MAX_NAMES_IN_REASON: Final = 5


def describe(statement: StatementInfo, *, as_written: bool = False) -> str:
    """``DELETE on public.customers without a restricting WHERE``, for reasons.

    With `as_written`, unqualified table names are shown as they are (their
    schema is not known) instead of in `public`.
    """
    if statement.category is _CATEGORY_UNPARSABLE:
        return f"unparsable SQL ({statement.error})"
    parts = [statement.kind.replace("_", " ").upper()]
    tables = sorted(
        {ref.qualified() if ref.schema else ref.name for ref in statement.tables}
        if as_written
        else table_names(statement)
    )
    if tables:
        shown = ", ".join(tables[:_MAX_NAMES_IN_REASON])
        more = len(tables) - _MAX_NAMES_IN_REASON
        parts.append(f"on {shown}" + (f" and {more} more" if more > 0 else ""))
    if statement.unvetted_functions and statement.category is _CATEGORY_PROCEDURAL:
        calls = sorted(statement.unvetted_functions)[:_MAX_NAMES_IN_REASON]
        listed = ", ".join(name if name.startswith("operator(") else f"{name}()" for name in calls)
        parts.append(f"calling {listed}, not known to be read-only")
    elif statement.functions and statement.category in _NOTABLE_CALLS:
        calls = sorted(statement.functions)[:_MAX_NAMES_IN_REASON]
        parts.append("calling " + ", ".join(f"{name}()" for name in calls))
    if statement.has_restricting_where is False:
        parts.append("without a restricting WHERE")
    if statement.via:
        parts.append(f"(via {', '.join(_via_label(v) for v in statement.via)})")
    parts.append(f"[{statement.category.value}]")
    return " ".join(parts)


def _via_label(via: str) -> str:
    keyword, _, name = via.partition(" ")
    label = keyword.replace("_", " ").upper()
    return f"{label} {name}" if name else label


def _combine(decisions: list[StatementDecision]) -> Verdict:
    """The strictest verdict over all statements of one query."""
    # One statement may have several decisions (rules that may apply to it).
    order = list(dict.fromkeys(id(d.statement) for d in decisions))
    count = len(order)
    for decision in decisions:
        if isinstance(decision.verdict, Block):
            index = order.index(id(decision.statement))
            prefix = f"statement {index + 1} of {count}: " if count > 1 else ""
            return Block(rule=decision.verdict.rule, reason=prefix + decision.verdict.reason)
    verdicts = [d.verdict for d in decisions]
    plans = [v.mask for v in verdicts if not isinstance(v, Block) and v.mask is not None]
    mask = None
    if plans:
        profiles = dict.fromkeys(p for plan in plans for p in plan.profiles)
        mask = MaskPlan(rule=plans[0].rule, profiles=tuple(profiles))
    approvals = [v for v in verdicts if isinstance(v, RequireApproval)]
    deciding: list[Allow | RequireApproval] = list(approvals) or [
        v for v in verdicts if isinstance(v, Allow)
    ]
    reasons = "; ".join(dict.fromkeys(v.reason for v in deciding if v.reason))
    if approvals:
        groups = tuple(
            g
            for g in approvals[0].approver_groups
            if all(g in a.approver_groups for a in approvals)
        )
        if not groups:
            everyone = sorted({g for a in approvals for g in a.approver_groups})
            return Block(
                rule=APPROVAL_CONFLICT_RULE,
                reason="the statements need approval from different groups "
                f"({', '.join(everyone)}); send them separately",
            )
        return RequireApproval(
            rule=approvals[0].rule,
            reason=reasons,
            approver_groups=groups,
            timeout=min(a.timeout for a in approvals),
            mask=mask,
        )
    return Allow(rule=verdicts[0].rule, reason=reasons, mask=mask)
