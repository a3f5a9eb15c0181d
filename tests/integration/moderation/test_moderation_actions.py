"""Operators' actions over XRPC: who may act, takedown/restore/label as signed labels of our
labeler with an audit row in one transaction, reports resolved by them, the audit log."""

from __future__ import annotations

from typing import Any

import asyncpg

from appview.labeler.store import LabelSigner
from protocol.labels import parse_label
from tests.integration.appview.conftest import SERVICE_DID, make_cid
from tests.integration.moderation.conftest import (
    NS,
    REPORT,
    RUDE,
    SPAM,
    ModerationApp,
    account_ref,
    call,
    own_labels,
    record_ref,
)

World = Any  # the `world` fixture (tests/integration/appview/conftest.World)


async def test_only_moderators_with_service_auth(moderation_app: ModerationApp, world: World) -> None:
    mod = await world.account("mod")
    fan = await world.account("fan")
    client = await moderation_app(moderators=(mod.did,))
    subject = {"subject": fan.did, "reason": "r"}
    procedures = {"takedown": subject, "restore": subject, "label": {**subject, "add": ["!warn"]},
                  "resolveReports": {"subject": fan.did, "note": "n"}}  # fmt: skip
    for name, body in procedures.items():
        await call(client, None, NS + name, body, status=401, error="AuthRequired")
        await call(client, fan, NS + name, body, status=403, error="Forbidden")
        # a moderator's token for another method is no token for this one
        await call(client, mod, NS + name, body, status=401, headers=mod.auth(NS + "listActions"))
    for name in ("listActions", "listReports"):
        await call(client, None, NS + name, status=401, error="AuthRequired")
        await call(client, fan, NS + name, status=403, error="Forbidden")
        assert await call(client, mod, NS + name) in ({"actions": []}, {"groups": []})
    await call(client, None, REPORT, {"reasonType": SPAM, "subject": account_ref(mod.did)}, status=401)
    # a bad token is a 401 even for a listed moderator's DID
    resp = await client.get("/xrpc/" + NS + "listActions", headers={"Authorization": "Bearer a.b.c"})
    assert resp.status == 401

    # no labeler key: the methods that sign answer so, the others work
    unsigned = await moderation_app(moderators=(mod.did,), with_signer=False)
    await call(unsigned, mod, NS + "takedown", subject, status=503, error="LabelerNotConfigured")
    assert (await call(unsigned, mod, NS + "resolveReports", {"subject": fan.did, "note": "n"})) == {
        "resolvedReports": 0}


async def test_takedown_signs_logs_and_resolves_reports_in_one_go(
    moderation_app: ModerationApp, world: World, pool: asyncpg.Pool, signer: LabelSigner
) -> None:
    mod = await world.account("mod")
    ann = await world.account("ann")
    fans = [await world.account(f"fan{i}") for i in range(3)]
    track = await world.track(ann, "tune")
    other = await world.track(ann, "other tune")
    client = await moderation_app(moderators=(mod.did,))
    for i, fan in enumerate(fans):
        await call(client, fan, REPORT, {"reasonType": SPAM if i else RUDE, "reason": f"bad {i}",
                                         "subject": record_ref(track, make_cid("t"))})  # fmt: skip
    await call(client, fans[0], REPORT, {"reasonType": SPAM, "subject": record_ref(other, make_cid("o"))})

    done = await call(client, mod, NS + "takedown", {"subject": track, "reason": "spam wave"})
    action = done["action"]
    assert action["action"] == "takedown" and action["subject"] == track and action["labels"] == ["!takedown"]
    assert action["moderator"] == mod.did and action["reason"] == "spam wave"
    assert done["resolvedReports"] == 3
    # the label as returned and as stored: signed by our labeler's key, from our DID
    [returned] = done["labels"]
    assert parse_label(returned, encoding="json").verify(signer.key.public_key())
    [stored] = await own_labels(pool, track)
    assert stored.val == "!takedown" and not stored.neg and stored.src == SERVICE_DID
    assert stored.verify(signer.key.public_key())
    assert (await pool.fetchval("SELECT signing_key FROM own_labels WHERE uri = $1", track)) == signer.did_key
    # the reports point at the action; the other track's report stays open
    rows = await pool.fetch("SELECT subject, resolved_by, action_id FROM reports ORDER BY id")
    assert [(r["resolved_by"], r["action_id"]) for r in rows[:3]] == [(mod.did, action["id"])] * 3
    assert rows[3]["action_id"] is None
    queue = await call(client, mod, NS + "listReports")
    assert [g["subject"] for g in queue["groups"]] == [other]

    # again: idempotent (no second label), but the decision is logged
    again = await call(client, mod, NS + "takedown", {"subject": track, "reason": "still spam"})
    assert again["labels"] == [] and again["action"]["labels"] == [] and again["resolvedReports"] == 0
    assert len(await own_labels(pool, track)) == 1

    # restore: the negation, signed; restoring again signs nothing
    restored = await call(client, mod, NS + "restore", {"subject": track, "reason": "appeal upheld"})
    assert restored["action"]["action"] == "restore" and restored["action"]["labels"] == ["!takedown"]
    negation = parse_label(restored["labels"][0], encoding="json")
    assert negation.neg and negation.val == "!takedown" and negation.verify(signer.key.public_key())
    latest = (await own_labels(pool, track))[-1]
    assert latest.neg and latest.verify(signer.key.public_key())
    assert (await call(client, mod, NS + "restore", {"subject": track, "reason": "x"}))["labels"] == []
    # and down again: a new label after the negation
    assert len((await call(client, mod, NS + "takedown", {"subject": track, "reason": "relapse"}))["labels"]) == 1

    # an account's takedown resolves the reports of its records too
    ann_report = await call(client, fans[1], REPORT, {"reasonType": SPAM, "subject": account_ref(ann.did)})
    assert ann_report["subject"] == account_ref(ann.did) and ann_report["reportedBy"] == fans[1].did
    down = await call(client, mod, NS + "takedown", {"subject": ann.did, "reason": "spammer"})
    assert down["resolvedReports"] == 2  # the account's and the other track's
    assert await call(client, mod, NS + "listReports") == {"groups": []}
    [account_label] = await own_labels(pool, ann.did)
    assert account_label.uri == ann.did and account_label.verify(signer.key.public_key())


async def test_takedown_of_one_version_and_bad_subjects(moderation_app: ModerationApp, world: World,
                                                         pool: asyncpg.Pool) -> None:  # fmt: skip
    mod = await world.account("mod")
    ann = await world.account("ann")
    track = await world.track(ann, "tune")
    client = await moderation_app(moderators=(mod.did,))
    cid = make_cid("v1")
    done = await call(client, mod, NS + "takedown", {"subject": track, "cid": cid, "reason": "this version"})
    assert done["action"]["subjectCid"] == cid and done["labels"][0]["cid"] == cid
    # every version now: a new label (a different state), not a repeat
    assert len((await call(client, mod, NS + "takedown", {"subject": track, "reason": "all"}))["labels"]) == 1
    bad = [
        {"subject": "nonsense", "reason": "r"},
        {"subject": "did:plc:", "reason": "r"},
        {"subject": f"at://{ann.handle}/fm.plyr.track/abc", "reason": "r"},  # handles change hands
        {"subject": f"at://{ann.did}/fm.plyr.track", "reason": "r"},  # a collection, not a record
        {"subject": ann.did, "cid": cid, "reason": "r"},  # an account has no versions
        {"subject": track, "reason": "   "},
        {"subject": track, "reason": "x" * 2001},
        {"subject": track},
    ]
    for body in bad:
        await call(client, mod, NS + "takedown", body, status=400, error="InvalidRequest")
    assert await pool.fetchval("SELECT count(*) FROM moderation_actions") == 2


async def test_label_values_added_and_removed(moderation_app: ModerationApp, world: World, pool: asyncpg.Pool,
                                              signer: LabelSigner) -> None:  # fmt: skip
    mod = await world.account("mod")
    ann = await world.account("ann")
    track = await world.track(ann, "tune")
    client = await moderation_app(moderators=(mod.did,))
    done = await call(client, mod, NS + "label", {"subject": track, "add": ["!warn", "porn"], "reason": "nsfw"})
    assert [a["action"] for a in done["actions"]] == ["label"]
    assert sorted(lb["val"] for lb in done["labels"]) == ["!warn", "porn"]
    assert all(parse_label(lb, encoding="json").verify(signer.key.public_key()) for lb in done["labels"])
    # adding what is there and removing what is not sign nothing
    same = await call(client, mod, NS + "label", {"subject": track, "add": ["porn"], "remove": ["sexual"],
                                                  "reason": "again"})  # fmt: skip
    assert [a["action"] for a in same["actions"]] == ["label", "unlabel"] and same["labels"] == []
    off = await call(client, mod, NS + "label", {"subject": track, "remove": ["porn"], "reason": "mislabelled"})
    assert off["actions"][0]["labels"] == ["porn"] and off["labels"][0]["neg"] is True
    active = await pool.fetch(
        "SELECT DISTINCT ON (val) val, neg FROM own_labels WHERE uri = $1 ORDER BY val, seq DESC", track)
    assert {r["val"]: r["neg"] for r in active} == {"!warn": False, "porn": True}
    for body in ({"subject": track, "add": ["!takedown"], "reason": "r"},
                 {"subject": track, "add": ["Porn"], "reason": "r"},
                 {"subject": track, "add": ["a b"], "reason": "r"},
                 {"subject": track, "add": ["x"], "remove": ["x"], "reason": "r"},
                 {"subject": track, "reason": "r"}):  # fmt: skip
        await call(client, mod, NS + "label", body, status=400, error="InvalidRequest")


async def test_list_actions_pages_newest_first(moderation_app: ModerationApp, world: World) -> None:
    mod = await world.account("mod")
    ann = await world.account("ann")
    tracks = [await world.track(ann, f"t{i}") for i in range(3)]
    client = await moderation_app(moderators=(mod.did,))
    ids = []
    for i in range(5):
        body = {"subject": tracks[i % 3], "reason": f"r{i}"}
        ids.append((await call(client, mod, NS + "takedown", body))["action"]["id"])
    seen, cursor = [], None
    while True:
        page = await call(client, mod, NS + "listActions", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += [a["id"] for a in page["actions"]]
        assert len(page["actions"]) <= 2
        cursor = page.get("cursor")
        if cursor is None:
            break
    assert seen == ids[::-1]
    only = await call(client, mod, NS + "listActions", params={"subject": tracks[0]})
    assert [a["id"] for a in only["actions"]] == [ids[3], ids[0]]
    assert [a["reason"] for a in only["actions"]] == ["r3", "r0"]
    await call(client, mod, NS + "listActions", params={"cursor": "garbage"}, status=400)
    await call(client, mod, NS + "listActions", params={"subject": "nope"}, status=400)


async def test_resolve_reports_without_a_label(moderation_app: ModerationApp, world: World,
                                               pool: asyncpg.Pool) -> None:  # fmt: skip
    mod = await world.account("mod")
    ann = await world.account("ann")
    fan = await world.account("fan")
    track = await world.track(ann, "tune")
    client = await moderation_app(moderators=(mod.did,))
    for reason in ("a", "b"):
        await call(client, fan, REPORT, {"reasonType": SPAM, "reason": reason, "subject": record_ref(track, make_cid("t"))})
    done = await call(client, mod, NS + "resolveReports", {"subject": track, "note": "not spam"})
    assert done["resolvedReports"] == 2 and done["action"]["action"] == "resolve-reports"
    assert done["action"]["labels"] == [] and done["action"]["reason"] == "not spam"
    assert await pool.fetchval("SELECT count(*) FROM own_labels") == 0
    assert await pool.fetchval("SELECT count(*) FROM reports WHERE action_id = $1", done["action"]["id"]) == 2
    # nothing open: nothing logged
    assert await call(client, mod, NS + "resolveReports", {"subject": track, "note": "again"}) == {"resolvedReports": 0}
    assert await pool.fetchval("SELECT count(*) FROM moderation_actions") == 1


async def test_concurrent_takedowns_sign_one_label(world: World, pool: asyncpg.Pool, signer: LabelSigner) -> None:
    import asyncio

    from appview.moderation import actions
    from appview.moderation.subjects import parse_subject

    ann = await world.account("ann")
    subject = parse_subject(await world.track(ann, "tune"))

    async def act(i: int) -> actions.Outcome:
        async with pool.acquire() as conn:
            return await actions.takedown(conn, signer, subject, reason=f"r{i}", moderator=f"did:plc:mod{i}")

    outcomes = await asyncio.gather(*(act(i) for i in range(6)))
    assert sum(len(o.labels) for o in outcomes) == 1  # the subject lock: one saw it up, the others down
    assert len(await own_labels(pool, subject.uri)) == 1
    assert await pool.fetchval("SELECT count(*) FROM moderation_actions") == 6
