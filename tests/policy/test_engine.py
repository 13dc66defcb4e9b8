"""The engine: compilation, rule order, strictest-wins, prepared statements."""

from __future__ import annotations

import datetime as dt

import pytest

from sluice.errors import ConfigError
from sluice.events import CommandRequested, Identity, QueryOrigin
from sluice.policy import (
    Allow,
    Block,
    MaskPlan,
    PolicyEngine,
    PolicyError,
    PolicySpec,
    PreparedStatements,
    RecordedQuery,
    RequireApproval,
)
from sluice.policy import engine as engine_module
from sluice.policy.sql import SqlAnalysis

from .conftest import compile_policies, make_context, query

AGENTS = {
    "name": "agents",
    "extends": "ai-agent",
    "approvers": ["data-leads"],
    "rules": [
        {
            "name": "mask-customers",
            "when": {"tables": ["public.customers"]},
            "action": "mask",
            "mask_profiles": ["pii"],
        },
        {
            "name": "no-billing",
            "when": {"schemas": ["billing"]},
            "action": "block",
            "reason": "billing is off limits",
        },
        {
            "name": "oncall-may-cancel",
            "subjects": {"groups": ["oncall"]},
            "when": {"functions": ["pg_cancel_backend"], "category": "admin"},
            "action": "allow",
        },
    ],
}


@pytest.fixture(scope="module")
def agents() -> PolicyEngine:
    return compile_policies(AGENTS)


def decide(engine: PolicyEngine, sql: str, policy: str = "agents", **kw: object) -> object:
    groups = kw.get("groups", ())
    assert isinstance(groups, tuple)
    return engine.decide(query(sql, groups=groups), policy_name=policy, prepared={})


def test_user_rules_run_before_preset_rules(agents: PolicyEngine) -> None:
    result = decide(agents, "SELECT * FROM billing.invoices")
    assert isinstance(result, Block)
    assert result.rule == "no-billing"
    assert "billing is off limits" in result.reason


def test_approvers_override_applies_to_inherited_rules(agents: PolicyEngine) -> None:
    result = decide(agents, "INSERT INTO t VALUES (1)")
    assert isinstance(result, RequireApproval)
    assert result.approver_groups == ("data-leads",)
    assert result.timeout == dt.timedelta(minutes=10)


def test_mask_rules_attach_profiles_without_deciding(agents: PolicyEngine) -> None:
    read = decide(agents, "SELECT email FROM customers")
    assert read == Allow(
        rule="reads-allowed",
        reason='rule "reads-allowed" allowed SELECT on public.customers [read]',
        mask=MaskPlan(rule="mask-customers", profiles=("pii",)),
    )
    write = decide(agents, "UPDATE customers SET name = 'x' WHERE id = 1 RETURNING email")
    assert isinstance(write, RequireApproval)
    assert write.mask == MaskPlan(rule="mask-customers", profiles=("pii",))
    destructive = decide(agents, "DELETE FROM customers")
    assert isinstance(destructive, Block)


def test_subjects_filter_by_group(agents: PolicyEngine) -> None:
    sql = "SELECT pg_cancel_backend(42)"
    assert isinstance(decide(agents, sql), Block)
    assert isinstance(decide(agents, sql, groups=("oncall",)), Allow)


def test_allow_rules_must_cover_the_whole_statement(agents: PolicyEngine) -> None:
    # The oncall rule names pg_cancel_backend only; a statement also calling
    # pg_terminate_backend falls through to the preset's block.
    sql = "SELECT pg_cancel_backend(1), pg_terminate_backend(2)"
    assert isinstance(decide(agents, sql, groups=("oncall",)), Block)


def test_allow_rule_does_not_cover_hidden_writes() -> None:
    engine = compile_policies(
        {
            "name": "p",
            "extends": "read-only",
            "rules": [{"name": "selects", "when": {"kind": "select"}, "action": "allow"}],
        }
    )
    sql = "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d"
    assert isinstance(decide(engine, sql, "p"), Block)
    assert isinstance(decide(engine, "SELECT 1", "p"), Allow)


def test_block_rules_match_anything_they_touch() -> None:
    engine = compile_policies(
        {
            "name": "p",
            "default": "allow",
            "rules": [{"name": "no-secrets", "when": {"tables": ["secrets"]}, "action": "block"}],
        }
    )
    assert isinstance(decide(engine, "SELECT * FROM a JOIN vault.secrets s ON true", "p"), Block)
    assert isinstance(decide(engine, "SELECT * FROM a", "p"), Allow)


def test_strictest_verdict_wins_across_statements(engine: PolicyEngine) -> None:
    approval = engine.decide(
        query("SELECT 1; INSERT INTO t VALUES (1); SELECT 2"), policy_name="ai-agent"
    )
    assert isinstance(approval, RequireApproval)
    blocked = engine.decide(
        query("SELECT 1; INSERT INTO t VALUES (1); TRUNCATE t"), policy_name="ai-agent"
    )
    assert isinstance(blocked, Block)
    assert blocked.reason.startswith("statement 3 of 3: ")


def test_approvals_need_a_common_group() -> None:
    engine = compile_policies(
        {
            "name": "p",
            "rules": [
                {
                    "name": "ddl",
                    "when": {"category": "ddl"},
                    "action": "require_approval",
                    "approvers": ["dba", "leads"],
                    "timeout": "5m",
                },
                {
                    "name": "writes",
                    "when": {"category": "write"},
                    "action": "require_approval",
                    "approvers": ["leads"],
                },
                {
                    "name": "procs",
                    "when": {"category": "procedural"},
                    "action": "require_approval",
                    "approvers": ["security"],
                },
            ],
        }
    )
    both = decide(engine, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)", "p")
    assert isinstance(both, RequireApproval)
    assert both.approver_groups == ("leads",)
    assert both.timeout == dt.timedelta(minutes=5)
    conflict = decide(engine, "INSERT INTO t VALUES (1); DO $$ BEGIN END $$", "p")
    assert isinstance(conflict, Block)
    assert conflict.rule == "approval-conflict"


def test_default_allow_and_block() -> None:
    engine = compile_policies({"name": "open", "default": "allow"}, {"name": "closed"})
    assert isinstance(decide(engine, "DROP TABLE t", "open"), Allow)
    closed = decide(engine, "SELECT 1", "closed")
    assert isinstance(closed, Block)
    assert closed.rule == "default"


def test_engine_error_blocks(monkeypatch: pytest.MonkeyPatch, engine: PolicyEngine) -> None:
    def explode(sql: str) -> SqlAnalysis:
        raise RuntimeError("boom")

    monkeypatch.setattr(engine_module, "classify", explode)
    result = engine.decide(query("SELECT 1"), policy_name="ai-agent")
    assert isinstance(result, Block)
    assert result.rule == "engine-error"
    assert "boom" in result.reason


def test_unknown_policy_blocks(engine: PolicyEngine) -> None:
    result = engine.decide(query("SELECT 1"), policy_name="nope")
    assert isinstance(result, Block)
    assert result.rule == "engine-error"


def test_non_sql_events_are_blocked(engine: PolicyEngine) -> None:
    event = CommandRequested(context=make_context(), argv=("ls",), raw="ls")
    assert isinstance(engine.decide(event, policy_name="ai-agent"), Block)


def test_empty_query() -> None:
    engine = PolicyEngine.compile([])
    assert isinstance(engine.decide(query(""), policy_name="ai-agent"), Allow)
    function_call = query("", origin=QueryOrigin.FUNCTION_CALL)
    assert isinstance(engine.decide(function_call, policy_name="ai-agent"), Block)


class TestPreparedStatements:
    def test_protocol_execute_is_judged_as_parsed_text(self, engine: PolicyEngine) -> None:
        prepared = PreparedStatements()
        parse = query("DELETE FROM customers", origin=QueryOrigin.PARSE, statement_name="s1")
        assert isinstance(engine.decide(parse, policy_name="ai-agent", prepared=prepared), Block)
        prepared.parse("s1", "DELETE FROM customers")
        execute = query("", origin=QueryOrigin.EXECUTE, statement_name="s1")
        result = engine.decide(execute, policy_name="ai-agent", prepared=prepared)
        assert isinstance(result, Block)
        assert result.rule == "no-unbounded-writes"
        prepared.close("s1")
        result = engine.decide(execute, policy_name="ai-agent", prepared=prepared)
        assert isinstance(result, Block)
        assert result.rule == "unknown-prepared-statement"

    def test_a_bind_reuses_a_verdict_only_for_the_text_its_name_still_holds(
        self, engine: PolicyEngine
    ) -> None:
        prepared = PreparedStatements()
        prepared.parse("s1", "SELECT * FROM customers WHERE id = $1")
        bind = query(
            "SELECT * FROM customers WHERE id = $1",
            origin=QueryOrigin.EXECUTE,
            statement_name="s1",
        )
        for _ in range(2):  # judged, then from the cache
            assert isinstance(engine.decide(bind, policy_name="ai-agent", prepared=prepared), Allow)
        # The name now holds another text: the same Bind text must not pass on the
        # cached verdict, the statement under the name is judged.
        prepared.parse("s1", "DELETE FROM customers")
        result = engine.decide(bind, policy_name="ai-agent", prepared=prepared)
        assert isinstance(result, Block)
        assert result.rule == "no-unbounded-writes"

    def test_unnamed_statement(self, engine: PolicyEngine) -> None:
        prepared = PreparedStatements()
        prepared.parse("", "SELECT 1")
        execute = query("", origin=QueryOrigin.EXECUTE, statement_name=None)
        assert isinstance(engine.decide(execute, policy_name="ai-agent", prepared=prepared), Allow)

    def test_sql_execute_uses_session_state(self, engine: PolicyEngine) -> None:
        prepared = PreparedStatements()
        prepared.observe("PREPARE wipe AS DELETE FROM t")
        assert "wipe" in prepared
        for sql in (
            "EXECUTE wipe",
            "EXPLAIN ANALYZE EXECUTE wipe",
            "CREATE TABLE x AS EXECUTE wipe",
        ):
            result = engine.decide(query(sql), policy_name="ai-agent", prepared=prepared)
            assert isinstance(result, Block), sql
        plain_explain = engine.decide(
            query("EXPLAIN EXECUTE wipe"), policy_name="ai-agent", prepared=prepared
        )
        assert isinstance(plain_explain, Allow)

    def test_prepare_and_execute_in_one_string(self, engine: PolicyEngine) -> None:
        ok = engine.decide(
            query("PREPARE r AS SELECT * FROM t WHERE id = $1; EXECUTE r(1)"),
            policy_name="ai-agent",
        )
        assert isinstance(ok, Allow)
        gone = engine.decide(
            query("PREPARE r AS SELECT 1; DEALLOCATE r; EXECUTE r"), policy_name="ai-agent"
        )
        assert isinstance(gone, Block)
        assert gone.rule == "unknown-prepared-statement"

    def test_discard_all_forgets_in_string(self, engine: PolicyEngine) -> None:
        prepared = PreparedStatements()
        prepared.parse("s", "SELECT 1")
        result = engine.decide(
            query("DISCARD ALL; EXECUTE s"), policy_name="ai-agent", prepared=prepared
        )
        assert isinstance(result, Block)

    def test_tracker_forgets(self) -> None:
        prepared = PreparedStatements()
        prepared.observe("PREPARE a AS SELECT 1; PREPARE b AS SELECT 2")
        prepared.parse("c", "SELECT 3")
        assert set(prepared) == {"a", "b", "c"}
        prepared.observe("DEALLOCATE a")
        assert set(prepared) == {"b", "c"}
        prepared.observe("DEALLOCATE ALL")
        assert len(prepared) == 0
        prepared.parse("d", "SELECT 4")
        prepared.observe("DISCARD ALL")
        assert len(prepared) == 0

    def test_execute_chains_are_followed(self, engine: PolicyEngine) -> None:
        prepared = PreparedStatements()
        prepared.observe("PREPARE wipe AS DELETE FROM t")
        prepared.parse("outer", "EXECUTE wipe")
        execute = query("", origin=QueryOrigin.EXECUTE, statement_name="outer")
        assert isinstance(engine.decide(execute, policy_name="ai-agent", prepared=prepared), Block)


def test_explain_reports_each_statement(engine: PolicyEngine) -> None:
    explanation = engine.explain_sql(
        "SELECT 1; UPDATE t SET a = 1 WHERE id = 2",
        policy_name="ai-agent",
        identity=Identity(user="alice"),
    )
    assert isinstance(explanation.verdict, RequireApproval)
    assert [d.rule for d in explanation.statements] == ["reads-allowed", "writes-need-approval"]
    assert [d.policy for d in explanation.statements] == ["ai-agent", "ai-agent"]
    assert [d.statement.kind for d in explanation.statements] == ["select", "update"]


def test_replay_tracks_prepared_statements(engine: PolicyEngine) -> None:
    results = engine.replay(
        [
            RecordedQuery(sql="SELECT 1", origin=QueryOrigin.SIMPLE),
            RecordedQuery(sql="DELETE FROM t", origin=QueryOrigin.PARSE, statement_name="x"),
            RecordedQuery(sql="", origin=QueryOrigin.EXECUTE, statement_name="x"),
            RecordedQuery(sql="PREPARE y AS SELECT 2", origin=QueryOrigin.SIMPLE),
            RecordedQuery(sql="EXECUTE y", origin=QueryOrigin.SIMPLE),
        ],
        policy_name="ai-agent",
        context=make_context(),
    )
    kinds = [type(r.verdict) for r in results]
    assert kinds == [Allow, Block, Block, Allow, Allow]
    assert results[2].verdict.rule == "no-unbounded-writes"


class TestCompile:
    def test_extends_cycle(self) -> None:
        with pytest.raises(PolicyError, match="extends itself: a -> b -> a"):
            compile_policies({"name": "a", "extends": "b"}, {"name": "b", "extends": "a"})

    def test_self_cycle(self) -> None:
        with pytest.raises(PolicyError, match="extends itself"):
            compile_policies({"name": "a", "extends": "a"})

    def test_unknown_parent(self) -> None:
        with pytest.raises(PolicyError, match="extends unknown policy 'ghost'"):
            compile_policies({"name": "a", "extends": "ghost"})

    def test_policy_errors_are_config_errors(self) -> None:
        assert issubclass(PolicyError, ConfigError)

    def test_duplicate_and_preset_names(self) -> None:
        with pytest.raises(PolicyError, match="defined twice"):
            compile_policies({"name": "a"}, {"name": "a"})
        with pytest.raises(PolicyError, match="built-in preset"):
            compile_policies({"name": "ai-agent"})

    def test_approval_without_approvers(self) -> None:
        with pytest.raises(PolicyError, match="names no approvers"):
            compile_policies(
                {
                    "name": "a",
                    "rules": [
                        {"name": "w", "when": {"category": "write"}, "action": "require_approval"}
                    ],
                }
            )

    def test_child_rule_replaces_inherited_rule_of_same_name(self) -> None:
        engine = compile_policies(
            {
                "name": "strict",
                "extends": "ai-agent",
                "rules": [
                    {
                        "name": "procedural-needs-approval",
                        "when": {"category": "procedural"},
                        "action": "block",
                    }
                ],
            }
        )
        policy = engine.policy("strict")
        assert [r.name for r in policy.rules].count("procedural-needs-approval") == 1
        assert policy.chain == ("strict", "ai-agent")
        assert isinstance(decide(engine, "DO $$ BEGIN END $$", "strict"), Block)

    def test_default_is_inherited(self) -> None:
        engine = compile_policies(
            {"name": "base", "default": "allow"}, {"name": "child", "extends": "base"}
        )
        assert isinstance(decide(engine, "DROP TABLE t", "child"), Allow)

    def test_custom_presets(self) -> None:
        base = PolicySpec.model_validate({"name": "base", "default": "allow"})
        engine = PolicyEngine.compile([], presets={"base": base})
        assert engine.policy_names == ("base",)
        with pytest.raises(PolicyError, match="unknown policy"):
            engine.policy("ai-agent")


def test_verdicts_are_reused_across_numbers_but_not_identities() -> None:
    engine = compile_policies(
        {
            "name": "p",
            "extends": "ai-agent",
            "rules": [
                {
                    "name": "ops-write",
                    "subjects": {"groups": ["ops"]},
                    "when": {"kind": "update"},
                    "action": "allow",
                }
            ],
        }
    )
    sql = "UPDATE t SET a = 1 WHERE id = {}"
    agent = engine.decide(query(sql.format(1)), policy_name="p")
    assert isinstance(agent, RequireApproval)
    assert engine.decide(query(sql.format(2)), policy_name="p") == agent
    ops = engine.decide(query(sql.format(3), user="olga", groups=("ops",)), policy_name="p")
    assert isinstance(ops, Allow)
    assert ops.rule == "ops-write"


def test_text_regex_policies_judge_every_text() -> None:
    engine = compile_policies(
        {
            "name": "p",
            "extends": "read-only",
            "rules": [{"name": "no-42", "when": {"text_regex": "= 42"}, "action": "block"}],
        }
    )
    assert isinstance(engine.decide(query("SELECT 1 FROM t WHERE a = 41"), policy_name="p"), Allow)
    assert isinstance(engine.decide(query("SELECT 1 FROM t WHERE a = 42"), policy_name="p"), Block)
