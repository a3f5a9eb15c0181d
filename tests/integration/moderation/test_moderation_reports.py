"""Users' reports (com.atproto.moderation.createReport): what is taken, the hourly limit per
reporter, and the review queue grouping them by subject."""

from __future__ import annotations

from typing import Any

import asyncpg

from appview.auth import SERVICE_FRAGMENT
from tests.integration.appview.conftest import SERVICE_DID, make_cid
from tests.integration.moderation.conftest import (
    NS,
    REPORT,
    RUDE,
    SPAM,
    ModerationApp,
    account_ref,
    call,
    record_ref,
)

World = Any  # the `world` fixture (tests/integration/appview/conftest.World)


async def test_create_report_takes_what_we_index_and_answers_the_official_shape(
    moderation_app: ModerationApp, world: World, pool: asyncpg.Pool
) -> None:
    ann = await world.account("ann")
    fan = await world.account("fan")
    track = await world.track(ann, "tune")
    client = await moderation_app(max_body_bytes=256 * 1024)
    cid = make_cid("t")
    out = await call(client, fan, REPORT, {"reasonType": SPAM, "reason": "buy followers",
                                           "subject": record_ref(track, cid)})  # fmt: skip
    assert set(out) == {"id", "reasonType", "reason", "subject", "reportedBy", "createdAt"}
    assert out["subject"] == record_ref(track, cid) and out["reportedBy"] == fan.did
    assert out["reasonType"] == SPAM and out["reason"] == "buy followers"
    row = await pool.fetchrow("SELECT * FROM reports WHERE id = $1", out["id"])
    assert (row["subject"], row["subject_cid"], row["reported_by"], row["resolved_at"]) == (track, cid, fan.did, None)
    # no reason: none stored, none answered; a newer reason type from Ozone's list is known
    bare = await call(client, fan, REPORT, {"reasonType": "tools.ozone.report.defs#reasonMisleadingBot",
                                            "subject": account_ref(ann.did)})  # fmt: skip
    assert "reason" not in bare and bare["subject"] == account_ref(ann.did)
    # a record already deleted can still be reported (its author is known)
    gone = f"at://{ann.did}/fm.plyr.track/3kgone22222222"
    await call(client, fan, REPORT, {"reasonType": SPAM, "subject": record_ref(gone, cid)})

    stranger = world.plc.register("stranger")  # has a DID document, but nothing indexed
    refused = [
        {"reasonType": "com.atproto.moderation.defs#reasonNope", "subject": account_ref(ann.did)},
        {"reasonType": SPAM, "subject": account_ref(stranger.did)},
        {"reasonType": SPAM, "subject": record_ref(f"at://{stranger.did}/fm.plyr.track/abc", cid)},
        {"reasonType": SPAM, "subject": record_ref(f"at://{ann.did}/app.bsky.feed.post/abc", cid)},
        {"reasonType": SPAM, "subject": record_ref(f"at://{ann.handle}/fm.plyr.track/abc", cid)},
        {"reasonType": SPAM, "subject": record_ref(ann.did, cid)},
        {"reasonType": SPAM, "subject": {"did": ann.did}},  # a union member names its $type
        {"reasonType": SPAM, "subject": {"$type": "com.atproto.admin.defs#repoBlobRef", "did": ann.did, "cid": cid}},
        {"reasonType": SPAM, "subject": account_ref(ann.did), "reason": "x" * 2001},  # graphemes
        {"reasonType": SPAM, "subject": account_ref(ann.did), "reason": "👨‍👩‍👧" * 1200},  # bytes
        {"reasonType": SPAM},
    ]
    for body in refused:
        await call(client, fan, REPORT, body, status=400, error="InvalidRequest")
    assert await pool.fetchval("SELECT count(*) FROM reports") == 3
    # reports sent to us as a labeler (a PDS proxying for a client that subscribed to us)
    as_labeler = await call(client, fan, REPORT, {"reasonType": RUDE, "subject": account_ref(ann.did)},
                            aud=SERVICE_DID + "#atproto_labeler")  # fmt: skip
    assert as_labeler["reportedBy"] == fan.did
    # ... but that audience only for reports
    await call(client, fan, NS + "listReports", status=401, aud=SERVICE_DID + "#atproto_labeler")
    await call(client, fan, REPORT, {"reasonType": RUDE, "subject": account_ref(ann.did)}, status=401,
               aud=SERVICE_DID + "#elsewhere")  # fmt: skip
    assert SERVICE_FRAGMENT != "#atproto_labeler"


async def test_reports_per_hour_per_reporter(moderation_app: ModerationApp, world: World, pool: asyncpg.Pool) -> None:
    ann = await world.account("ann")
    fan = await world.account("fan")
    other = await world.account("other")
    client = await moderation_app(reports_per_hour=3)
    body = {"reasonType": SPAM, "subject": account_ref(ann.did)}
    for _ in range(3):
        await call(client, fan, REPORT, body)
    await call(client, fan, REPORT, body, status=429, error="RateLimitExceeded")
    await call(client, other, REPORT, body)  # each reporter has their own budget
    # an hour later the budget is back (the limit counts the reporter's rows of the last hour)
    await pool.execute("UPDATE reports SET created_at = created_at - interval '61 minutes' WHERE reported_by = $1",
                       fan.did)  # fmt: skip
    await call(client, fan, REPORT, body)
    assert await pool.fetchval("SELECT count(*) FROM reports WHERE reported_by = $1", fan.did) == 4


async def test_review_queue_groups_by_subject_oldest_first(
    moderation_app: ModerationApp, world: World, pool: asyncpg.Pool
) -> None:
    mod = await world.account("mod")
    ann = await world.account("ann")
    fans = [await world.account(f"fan{i}") for i in range(3)]
    tracks = [await world.track(ann, f"t{i}") for i in range(4)]
    client = await moderation_app(moderators=(mod.did,))
    subjects = [record_ref(t, make_cid(t)) for t in tracks] + [account_ref(ann.did)]
    # subject k gets k+1 reports; the reports of each subject are filed in order
    for k, subject in enumerate(subjects):
        for n in range(k + 1):
            await call(client, fans[n % 3], REPORT, {"reasonType": RUDE if n % 2 else SPAM, "reason": f"{k}.{n}",
                                                     "subject": subject})  # fmt: skip
    groups: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await call(client, mod, NS + "listReports", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert len(page["groups"]) <= 2
        groups += page["groups"]
        cursor = page.get("cursor")
        if cursor is None:
            break
    assert [g["subject"] for g in groups] == [*tracks, ann.did]
    last = groups[-1]
    assert last["subjectType"] == "account" and groups[0]["subjectType"] == "record"
    assert last["count"] == 5 and last["reporterCount"] == 3
    assert last["reasonTypes"] == sorted([SPAM, RUDE])
    assert [r["reason"] for r in last["latest"]] == ["4.4", "4.3", "4.2"]  # the newest three
    assert last["firstReportedAt"] < last["lastReportedAt"]
    assert groups[1]["latest"][0]["subjectCid"] == make_cid(tracks[1])
    assert [g["count"] for g in groups] == [1, 2, 3, 4, 5]

    # resolving a group takes it out; a new report of it starts a new group at the back
    await call(client, mod, NS + "resolveReports", {"subject": tracks[0], "note": "fine"})
    await call(client, fans[0], REPORT, {"reasonType": SPAM, "subject": subjects[0]})
    page = await call(client, mod, NS + "listReports")
    assert [g["subject"] for g in page["groups"]] == [*tracks[1:], ann.did, tracks[0]]
    assert page["groups"][-1]["count"] == 1 and "cursor" not in page
    await call(client, mod, NS + "listReports", params={"cursor": "bm9wZQ"}, status=400)
