"""The plan catalog (R1): the six default plans, plans files in JSON and TOML, bad files."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from replay.plans import (
    DEFAULT_CATALOG,
    DEFAULT_PLANS,
    Family,
    Plan,
    PlanCatalog,
    PlansFileError,
    UnknownPlan,
    load_plans,
)


def plan(plan_id: str, family: Family, days: int, fee: str) -> Plan:
    return Plan(id=plan_id, family=family, retention_days=days, monthly_fee=Decimal(fee))


# --- defaults (R1) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan_id", "family", "days", "fee"),
    [
        pytest.param("continuous-1d", Family.CONTINUOUS, 1, "5.00", id="R1-continuous-1d"),
        pytest.param("continuous-7d", Family.CONTINUOUS, 7, "10.00", id="R1-continuous-7d"),
        pytest.param("continuous-30d", Family.CONTINUOUS, 30, "30.00", id="R1-continuous-30d"),
        pytest.param("event-1d", Family.EVENT, 1, "3.00", id="R1-event-1d"),
        pytest.param("event-7d", Family.EVENT, 7, "6.00", id="R1-event-7d"),
        pytest.param("event-30d", Family.EVENT, 30, "15.00", id="R1-event-30d"),
    ],
)
def test_default_plans(plan_id: str, family: Family, days: int, fee: str) -> None:
    assert plan_id in DEFAULT_CATALOG
    got = DEFAULT_CATALOG.get(plan_id)
    assert got == plan(plan_id, family, days, fee)
    assert str(got.monthly_fee) == fee


def test_default_catalog_is_the_six_plans_in_order() -> None:
    assert len(DEFAULT_CATALOG) == 6
    assert [p.id for p in DEFAULT_CATALOG] == [
        "continuous-1d",
        "continuous-7d",
        "continuous-30d",
        "event-1d",
        "event-7d",
        "event-30d",
    ]
    assert tuple(DEFAULT_CATALOG) == DEFAULT_PLANS
    assert DEFAULT_CATALOG.ids == tuple(p.id for p in DEFAULT_PLANS)


def test_unknown_plan() -> None:
    assert "event-2d" not in DEFAULT_CATALOG
    assert 7 not in DEFAULT_CATALOG
    with pytest.raises(UnknownPlan) as caught:
        DEFAULT_CATALOG.get("event-2d")
    assert caught.value.plan_id == "event-2d"
    assert str(caught.value) == (
        "unknown plan 'event-2d'; the catalog has continuous-1d, continuous-7d, "
        "continuous-30d, event-1d, event-7d, event-30d"
    )


def test_family_values() -> None:
    assert [str(f) for f in Family] == ["continuous", "event"]


# --- Plan and PlanCatalog values -----------------------------------------------------------


def test_plan_fee_is_kept_to_the_cent() -> None:
    assert str(plan("p", Family.EVENT, 3, "10").monthly_fee) == "10.00"
    assert str(plan("p", Family.EVENT, 3, "1E+1").monthly_fee) == "10.00"
    assert str(plan("p", Family.EVENT, 3, "0.5").monthly_fee) == "0.50"


_GOOD: dict[str, object] = {
    "id": "event-7d",
    "family": Family.EVENT,
    "retention_days": 7,
    "monthly_fee": Decimal("6.00"),
}


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        pytest.param("id", 7, TypeError, "id must be a string, not 7", id="id-type"),
        pytest.param(
            "id",
            "",
            ValueError,
            "id must be a non-empty word without spaces, not ''",
            id="id-empty",
        ),
        pytest.param(
            "id",
            "event 7d",
            ValueError,
            "id must be a non-empty word without spaces, not 'event 7d'",
            id="id-space",
        ),
        pytest.param(
            "family", "event", TypeError, "family must be a Family, not 'event'", id="family-str"
        ),
        pytest.param(
            "retention_days",
            0,
            ValueError,
            "retention_days must be a positive whole number of days, not 0",
            id="retention-zero",
        ),
        pytest.param(
            "retention_days",
            True,
            ValueError,
            "retention_days must be a positive whole number of days, not True",
            id="retention-bool",
        ),
        pytest.param(
            "monthly_fee",
            6.0,
            TypeError,
            "monthly_fee must be a Decimal, not float (floats are not money)",
            id="fee-float",
        ),
        pytest.param(
            "monthly_fee",
            Decimal("-0.01"),
            ValueError,
            "monthly_fee must not be negative, not -0.01",
            id="fee-negative",
        ),
        pytest.param(
            "monthly_fee",
            Decimal("6.001"),
            ValueError,
            "monthly_fee 6.001 has more than 2 decimal places (whole cents)",
            id="fee-sub-cent",
        ),
        pytest.param(
            "monthly_fee",
            Decimal("Infinity"),
            ValueError,
            "monthly_fee must be a finite amount, not Infinity",
            id="fee-infinite",
        ),
    ],
)
def test_plan_validation(field: str, value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        Plan(**{**_GOOD, field: value})  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_catalog_refuses_duplicates_and_emptiness() -> None:
    one = plan("event-7d", Family.EVENT, 7, "6.00")
    with pytest.raises(ValueError, match="plan id 'event-7d' appears twice in the catalog"):
        PlanCatalog(plans=[one, one])
    with pytest.raises(ValueError, match="a plan catalog needs at least one plan"):
        PlanCatalog(plans=[])


# --- plans files ---------------------------------------------------------------------------


def test_json_plans_file(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.write_text(
        json.dumps(
            {
                "plans": [
                    {
                        "id": "continuous-7d",
                        "family": "continuous",
                        "retention_days": 7,
                        "monthly_fee": "12.50",
                    },
                    {"id": "event-3d", "family": "event", "retention_days": 3, "monthly_fee": "2"},
                ]
            }
        )
    )
    catalog = load_plans(path)
    assert list(catalog) == [
        plan("continuous-7d", Family.CONTINUOUS, 7, "12.50"),
        plan("event-3d", Family.EVENT, 3, "2.00"),
    ]
    assert "continuous-30d" not in catalog  # the file replaces the defaults


def test_toml_plans_file(tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(
        "# the operator's trial offer\n"
        "[[plans]]\n"
        'id = "event-1d"\n'
        'family = "event"\n'
        "retention_days = 1\n"
        'monthly_fee = "0.99"\n'
        "\n"
        "[[plans]]\n"
        'id = "continuous-90d"\n'
        'family = "continuous"\n'
        "retention_days = 90\n"
        'monthly_fee = "88.00"\n'
    )
    catalog = load_plans(path)
    assert list(catalog) == [
        plan("event-1d", Family.EVENT, 1, "0.99"),
        plan("continuous-90d", Family.CONTINUOUS, 90, "88.00"),
    ]


def _entry(**changes: object) -> dict[str, object]:
    """A good JSON plan entry with ``changes`` applied (a value of ``...`` drops the key)."""
    entry: dict[str, object] = {
        "id": "event-7d",
        "family": "event",
        "retention_days": 7,
        "monthly_fee": "6.00",
    }
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not ...}


def _doc(*entries: dict[str, object]) -> str:
    return json.dumps({"plans": list(entries)})


_TOML_GOOD = 'id = "event-7d"\nfamily = "event"\nretention_days = 7\n'

# file name, content, expected message after "plans file <path>: ", index, id
MALFORMED = [
    pytest.param(
        "plans.json", "[]", "must hold a 'plans' list at the top level", None, None, id="top-list"
    ),
    pytest.param(
        "plans.json",
        '{"plan": []}',
        "must hold a 'plans' list at the top level",
        None,
        None,
        id="no-plans-key",
    ),
    pytest.param(
        "plans.json",
        '{"plans": {"id": "event-7d"}}',
        "'plans' must be a list of plan entries",
        None,
        None,
        id="plans-not-list",
    ),
    pytest.param(
        "plans.json",
        '{"plans": [], "currency": "CNY"}',
        "unknown top-level key 'currency' (allowed: 'plans', 'memberships')",
        None,
        None,
        id="unknown-top-key",
    ),
    pytest.param(
        "plans.json",
        '{"plans": [], "plans": []}',
        "top-level key 'plans' is given twice",
        None,
        None,
        id="top-key-twice",
    ),
    pytest.param("plans.json", '{"plans": []}', "defines no plans", None, None, id="empty"),
    pytest.param(
        "plans.json",
        '{"plans": ["event-7d"]}',
        "plans[0]: must be a table with the keys id, family, retention_days, monthly_fee",
        0,
        None,
        id="entry-not-object",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(), _entry(id="daily-7d", family="daily")),
        "plans[1] (id 'daily-7d'): unknown family 'daily' (expected 'continuous' or 'event')",
        1,
        "daily-7d",
        id="unknown-family",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee=6.0)),
        "plans[0] (id 'event-7d'): monthly_fee must be a decimal string such as \"10.00\", "
        "not the number 6.0: floats are not money",
        0,
        "event-7d",
        id="fee-json-float",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee=6)),
        "plans[0] (id 'event-7d'): monthly_fee must be a decimal string such as \"10.00\", "
        "not the number 6: floats are not money",
        0,
        "event-7d",
        id="fee-json-integer",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee=None)),
        "plans[0] (id 'event-7d'): monthly_fee must be a decimal string such as \"10.00\", "
        "not None",
        0,
        "event-7d",
        id="fee-null",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee="six")),
        "plans[0] (id 'event-7d'): monthly_fee 'six' is not a decimal string such as \"10.00\"",
        0,
        "event-7d",
        id="fee-not-decimal",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee="6e0")),
        "plans[0] (id 'event-7d'): monthly_fee '6e0' is not a decimal string such as \"10.00\"",
        0,
        "event-7d",
        id="fee-exponent",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee="NaN")),
        "plans[0] (id 'event-7d'): monthly_fee 'NaN' is not a decimal string such as \"10.00\"",
        0,
        "event-7d",
        id="fee-nan",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee="-1.00")),
        "plans[0] (id 'event-7d'): monthly_fee must not be negative, not -1.00",
        0,
        "event-7d",
        id="fee-negative",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee="1.005")),
        "plans[0] (id 'event-7d'): monthly_fee 1.005 has more than 2 decimal places (whole cents)",
        0,
        "event-7d",
        id="fee-sub-cent",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(), _entry(id="event-30d"), _entry()),
        "plans[2] (id 'event-7d'): duplicate id, already used by plans[0]",
        2,
        "event-7d",
        id="duplicate-id",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(price="6.00")),
        "plans[0] (id 'event-7d'): unknown key 'price' "
        "(expected id, family, retention_days, monthly_fee)",
        0,
        "event-7d",
        id="unknown-key",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(monthly_fee=...)),
        "plans[0] (id 'event-7d'): missing key 'monthly_fee'",
        0,
        "event-7d",
        id="missing-fee",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(id=..., family=...)),
        "plans[0]: missing key 'id', 'family'",
        0,
        None,
        id="missing-id-and-family",
    ),
    pytest.param(
        "plans.json",
        '{"plans": [{"id": "event-7d", "family": "event", "retention_days": 7,'
        ' "monthly_fee": "6.00", "monthly_fee": "0.60"}]}',
        "plans[0] (id 'event-7d'): key 'monthly_fee' is given twice",
        0,
        "event-7d",
        id="key-twice",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(id=7)),
        "plans[0]: id must be a string, not 7",
        0,
        None,
        id="id-not-string",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(id="")),
        "plans[0] (id ''): id must be a non-empty word without spaces, not ''",
        0,
        "",
        id="id-empty",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(retention_days="7")),
        "plans[0] (id 'event-7d'): retention_days must be a positive whole number of days, not '7'",
        0,
        "event-7d",
        id="retention-string",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(retention_days=0)),
        "plans[0] (id 'event-7d'): retention_days must be a positive whole number of days, not 0",
        0,
        "event-7d",
        id="retention-zero",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(retention_days=True)),
        "plans[0] (id 'event-7d'): retention_days must be a positive whole number of days, "
        "not True",
        0,
        "event-7d",
        id="retention-bool",
    ),
    pytest.param(
        "plans.json",
        _doc(_entry(retention_days=7.5)),
        "plans[0] (id 'event-7d'): retention_days must be a positive whole number of days, not 7.5",
        0,
        "event-7d",
        id="retention-fraction",
    ),
    pytest.param(
        "plans.toml",
        f"[[plans]]\n{_TOML_GOOD}monthly_fee = 6.0\n",
        "plans[0] (id 'event-7d'): monthly_fee must be a decimal string such as \"10.00\", "
        "not the number 6.0: floats are not money",
        0,
        "event-7d",
        id="toml-fee-float",
    ),
    pytest.param(
        "plans.toml",
        f"[[plans]]\n{_TOML_GOOD}monthly_fee = 6\n",
        "plans[0] (id 'event-7d'): monthly_fee must be a decimal string such as \"10.00\", "
        "not the number 6: floats are not money",
        0,
        "event-7d",
        id="toml-fee-integer",
    ),
    pytest.param(
        "plans.toml",
        f'[[plans]]\n{_TOML_GOOD}monthly_fee = "6.00"\n'
        '[[plans]]\nid = "clip-7d"\nfamily = "clip"\nretention_days = 7\nmonthly_fee = "1.00"\n',
        "plans[1] (id 'clip-7d'): unknown family 'clip' (expected 'continuous' or 'event')",
        1,
        "clip-7d",
        id="toml-unknown-family",
    ),
    pytest.param(
        "plans.toml",
        'plans = "event-7d"\n',
        "'plans' must be a list of plan entries",
        None,
        None,
        id="toml-plans-not-list",
    ),
    pytest.param(
        "plans.yaml",
        "plans: []\n",
        "the name must end in .json or .toml",
        None,
        None,
        id="other-suffix",
    ),
]


@pytest.mark.parametrize(("name", "content", "message", "index", "plan_id"), MALFORMED)
def test_malformed_plans_file(
    tmp_path: Path, name: str, content: str, message: str, index: int | None, plan_id: str | None
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PlansFileError) as caught:
        load_plans(path)
    assert str(caught.value) == f"plans file {path}: {message}"
    assert caught.value.path == path
    assert caught.value.index == index
    assert caught.value.plan_id == plan_id


# file name, bytes, start of the message after "plans file <path>: " (the rest is the parser's)
UNREADABLE = [
    pytest.param("plans.json", b'{"plans": [', "is not valid JSON: ", id="json-syntax"),
    pytest.param("plans.toml", b"[[plans]\n", "is not valid TOML: ", id="toml-syntax"),
    pytest.param("plans.json", b'{"plans": "\xff"}', "is not UTF-8 text", id="not-utf8"),
    pytest.param("plans.json", None, "cannot be read: ", id="missing-file"),
]


@pytest.mark.parametrize(("name", "content", "start"), UNREADABLE)
def test_unreadable_plans_file(
    tmp_path: Path, name: str, content: bytes | None, start: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PlansFileError) as caught:
        load_plans(path)
    assert str(caught.value).startswith(f"plans file {path}: {start}")
    assert caught.value.index is None
