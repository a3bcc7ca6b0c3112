"""The README's CI recipe with a shared bucket (SPEC §11), run as GitHub would run it.

Its `run:` steps are executed for each event against the test's fake provider and a real S3
server that checks credentials and IAM policies, with a read-only user for pull requests
and a writing user for main: main heals the bucket; a pull request on a fresh machine
replays from it, writes nothing, and fails its gate when a prompt changed; the scheduled
gc step runs.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.conftest import PROVIDER_HOSTS
from tests.e2e.test_readme import PROMPTS, Step, actions_job, run_job, write_app
from tests.support import secrets
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import RESOLVE_ADDON
from tests.support.s3server import Bucket

READ_ACTIONS = ["s3:GetObject", "s3:ListBucket"]
WRITE_ACTIONS = [*READ_ACTIONS, "s3:PutObject", "s3:DeleteObject"]


def objects(bucket: Bucket) -> list[str]:
    listed = bucket.server.client().list_objects_v2(Bucket=bucket.name)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def step(steps: list[Step], name_part: str) -> Step:
    return next(s for s in steps if name_part in s.name)


def test_main_heals_the_bucket_and_pull_requests_replay_from_it_read_only(
    tmp_path: Path, fake: FakeProvider, s3_auth: Bucket
) -> None:
    server, tag = s3_auth.server, uuid.uuid4().hex[:8]
    read_id, read_secret = server.create_user(f"pull-requests-{tag}", READ_ACTIONS)
    write_id, write_secret = server.create_user(f"main-{tag}", WRITE_ACTIONS)
    context = {
        "vars.R2_ACCOUNT_ID": "not-used-here",
        "secrets.CACHE_READ_KEY_ID": read_id,
        "secrets.CACHE_READ_SECRET": read_secret,
        "secrets.CACHE_WRITE_KEY_ID": write_id,
        "secrets.CACHE_WRITE_SECRET": write_secret,
        "secrets.OPENAI_API_KEY": secrets.OPENAI_KEY,
    }
    overrides = {"REMOTE": s3_auth.url, "AWS_ENDPOINT_URL": server.endpoint}
    upstream = ["--script", str(RESOLVE_ADDON), "--set"]
    upstream += [f"ssl_verify_upstream_trusted_ca={fake.ca_path}"]
    for host in PROVIDER_HOSTS:
        upstream += ["--set", f"test_resolve={host}=127.0.0.1:{fake.port}"]

    def to_the_fake(script: str) -> str:
        return script.replace(
            "provider-cache rebuild", "provider-cache rebuild " + " ".join(upstream)
        )

    def job(checkout: Path, event: str, prompts: list[str]) -> list[Step]:
        write_app(checkout, prompts)
        summary = checkout.parent / f"{checkout.name}-summary.md"
        return run_job(actions_job(1), checkout, summary, event, context, to_the_fake, overrides)

    # main, with nothing recorded anywhere: the rebuild records, verifies, pushes, publishes.
    main = job(tmp_path / "main", "push", PROMPTS)
    assert step(main, "Pull requests").status == "skipped"
    assert step(main, "Main").status == "passed", step(main, "Main").output
    assert fake.served == len(PROMPTS)
    healed = objects(s3_auth)
    assert len([o for o in healed if "/manifests/" not in o]) == len(PROMPTS), healed
    assert any("/manifests/" in o for o in healed), healed

    # A pull request on a new machine (no local store): all from the bucket, nothing written.
    pull = job(tmp_path / "pull-request", "pull_request", PROMPTS)
    assert step(pull, "Main").status == "skipped"
    assert step(pull, "Pull requests").status == "passed", step(pull, "Pull requests").output
    assert fake.served == len(PROMPTS)
    assert objects(s3_auth) == healed

    # One that changes a prompt: its gate fails, naming the miss; still nothing written.
    changed = ["Translate goodbye" if p == "Translate hello" else p for p in PROMPTS]
    failing = job(tmp_path / "changed", "pull_request", changed)
    gate = step(failing, "Pull requests")
    assert gate.status == "failed"
    assert "below the threshold" in gate.output and '"Translate goodbye"' in gate.output
    assert fake.served == len(PROMPTS)
    assert objects(s3_auth) == healed

    # The schedule: the heal step finds nothing to do, and gc keeps what the manifest names.
    nightly = job(tmp_path / "nightly", "schedule", PROMPTS)
    assert step(nightly, "Main").status == "passed", step(nightly, "Main").output
    assert step(nightly, "weekly").status == "passed", step(nightly, "weekly").output
    assert "nothing removed" in step(nightly, "weekly").output
    assert fake.served == len(PROMPTS)
    assert [o for o in objects(s3_auth) if "/manifests/" not in o] == [
        o for o in healed if "/manifests/" not in o
    ]
