"""Unqualified table names after the session changes its search_path.

Rules name tables by schema; an unqualified name is taken to be in `public`
until the session changes search_path. After that it may be in any schema, so
a rule that may apply to it cannot let it through: a block or approval rule
that may apply is judged too (the strictest wins), an allow rule is passed over.
"""

from __future__ import annotations

import dataclasses

import pytest

from sluice.events import QueryOrigin
from sluice.policy import Allow, Block, PolicyEngine, RecordedQuery, RequireApproval
from sluice.policy.prepared import changes_search_path
from sluice.policy.sql import classify

from .conftest import compile_policies, make_context, query

POLICY = {
    "name": "agents",
    "extends": "ai-agent",
    "approvers": ["dba"],
    "rules": [
        {"name": "no-invoices", "when": {"tables": ["billing.invoices"]}, "action": "block"},
        {
            "name": "payroll-needs-approval",
            "when": {"tables": ["hr.payroll"], "category": "read"},
            "action": "require_approval",
            "approvers": ["hr-leads"],
        },
        {
            "name": "mask-people",
            "when": {"tables": ["crm.people"]},
            "action": "mask",
            "mask_profiles": ["pii"],
        },
        {
            "name": "analytics-reads",
            "when": {"tables": ["analytics.*"], "category": "read"},
            "action": "allow",
        },
        {
            "name": "no-audit-table",
            "when": {"tables": ["audit_log"]},  # any schema
            "action": "block",
        },
    ],
}


@pytest.fixture(scope="module")
def agents() -> PolicyEngine:
    return compile_policies(POLICY)


def judge(engine: PolicyEngine, sql: str, *, changed: bool) -> object:
    event = dataclasses.replace(query(sql), search_path_changed=changed)
    return engine.decide(event, policy_name="agents", prepared={})


@pytest.mark.parametrize(
    ("sql", "before", "after"),
    [
        # billing.invoices is blocked: after a search_path change, unqualified may be it.
        ("SELECT * FROM invoices", Allow, Block),
        ("DELETE FROM invoices WHERE id = 1", RequireApproval, Block),
        # Approval for hr.payroll: the stricter of that and the preset's allow.
        ("SELECT * FROM payroll", Allow, RequireApproval),
        # Qualified names mean what they say either way.
        ("SELECT * FROM public.invoices", Allow, Allow),
        ("SELECT * FROM billing.invoices", Block, Block),
        # A pattern for any schema is certain either way.
        ("SELECT * FROM audit_log", Block, Block),
    ],
)
def test_restrictive_rules_that_may_apply_decide(
    agents: PolicyEngine, sql: str, before: type, after: type
) -> None:
    assert isinstance(judge(agents, sql, changed=False), before)
    assert isinstance(judge(agents, sql, changed=True), after)


def test_the_verdict_says_why(agents: PolicyEngine) -> None:
    verdict = judge(agents, "SELECT * FROM invoices", changed=True)
    assert isinstance(verdict, Block)
    assert verdict.rule == "no-invoices"
    assert verdict.reason.startswith('rule "no-invoices" blocked SELECT on invoices [read]')
    assert "search_path" in verdict.reason
    assert "qualify table names" in verdict.reason
    approval = judge(agents, "SELECT * FROM payroll", changed=True)
    assert isinstance(approval, RequireApproval)
    assert approval.approver_groups == ("hr-leads",)


def test_a_schema_wide_block_then_covers_every_unqualified_name() -> None:
    engine = compile_policies(
        {
            "name": "agents",
            "extends": "ai-agent",
            "rules": [{"name": "no-billing", "when": {"schemas": ["billing"]}, "action": "block"}],
        }
    )
    assert isinstance(judge(engine, "SELECT * FROM anything", changed=False), Allow)
    assert isinstance(judge(engine, "SELECT * FROM anything", changed=True), Block)
    assert isinstance(judge(engine, "SELECT * FROM public.anything", changed=True), Allow)


def test_allow_rules_need_the_schema_to_be_certain() -> None:
    engine = compile_policies(
        {
            "name": "agents",
            "default": "block",
            "rules": [
                {
                    "name": "analytics-reads",
                    "when": {"tables": ["analytics.*"], "category": "read"},
                    "action": "allow",
                }
            ],
        }
    )
    assert isinstance(judge(engine, "SELECT * FROM analytics.events", changed=True), Allow)
    # Before a change, `events` is public.events: not analytics, blocked by default.
    assert isinstance(judge(engine, "SELECT * FROM events", changed=False), Block)
    # After one it may be analytics.events or not: the allow rule cannot vouch for it.
    assert isinstance(judge(engine, "SELECT * FROM events", changed=True), Block)


def test_mask_rules_that_may_apply_add_their_profiles(agents: PolicyEngine) -> None:
    before = judge(agents, "SELECT * FROM people", changed=False)
    after = judge(agents, "SELECT * FROM people", changed=True)
    assert isinstance(before, Allow)
    assert before.mask is None
    assert isinstance(after, Allow)
    assert after.mask is not None
    assert after.mask.profiles == ("pii",)


@pytest.mark.parametrize(
    "change",
    [
        "SET search_path = billing",
        "SET LOCAL search_path TO billing, public",
        'SET "search_path" = billing',
        'SET U&"search\\005fpath" = billing',
        "RESET search_path",
        "SELECT set_config('search_path', 'billing', false)",
        "SELECT pg_catalog.set_config(E'search\\x5fpath', 'billing', false)",
        "SELECT set_config(current_setting('my.var'), 'billing', false)",
        "DO $$ BEGIN EXECUTE 'SET search_path = billing'; END $$",
    ],
)
def test_a_change_earlier_in_the_same_query_counts(agents: PolicyEngine, change: str) -> None:
    assert changes_search_path(change)
    assert any(s.changes_search_path for s in classify(change).statements)
    verdict = judge(agents, f"{change}; SELECT * FROM invoices", changed=False)
    assert isinstance(verdict, Block | RequireApproval), change


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM invoices",
        "SET statement_timeout = '5s'",
        "SELECT set_config('application_name', 'agent', false)",
        "SELECT 'search_path is just text here'",
        "RESET ALL",
    ],
)
def test_other_statements_change_nothing(sql: str) -> None:
    assert not any(s.changes_search_path for s in classify(sql).statements)


def test_verdicts_are_not_shared_between_the_two_states(agents: PolicyEngine) -> None:
    for _ in range(2):  # the second round comes from the verdict cache
        assert isinstance(
            judge(agents, "SELECT * FROM invoices WHERE id = 1", changed=False), Allow
        )
        assert isinstance(judge(agents, "SELECT * FROM invoices WHERE id = 2", changed=True), Block)


def test_replay_carries_the_change_to_later_queries(agents: PolicyEngine) -> None:
    queries = [
        RecordedQuery(sql="SELECT * FROM invoices", origin=QueryOrigin.SIMPLE),
        RecordedQuery(sql="SET search_path = billing", origin=QueryOrigin.SIMPLE),
        RecordedQuery(sql="SELECT * FROM invoices", origin=QueryOrigin.SIMPLE),
    ]
    first, change, after = agents.replay(queries, policy_name="agents", context=make_context())
    assert isinstance(first.verdict, Allow)
    assert isinstance(change.verdict, Allow)
    assert isinstance(after.verdict, Block)
