"""Tampering suite: each case is caught by audit_verify. The triggers are dropped for the tamper
(as an attacker with database access would) and reinstalled afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from audit import triggers
from audit.actions import record
from audit.models import AuditEntry
from audit.sealer import seal_pending
from tests.conftest import as_owner

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(settings, tmp_path: Path) -> Iterator[Path]:
    settings.HMS_AUDIT_EXPORT_DIR = str(tmp_path / "checkpoints")
    for i in range(6):
        with transaction.atomic():
            record("policy.update", actor="alice", target_type="policies.policy", target_id=str(i),
                   payload={"changes": {"limit": [i, i + 1]}})
    seal_pending()
    yield tmp_path / "checkpoints"


@pytest.fixture
def untriggered() -> Iterator[None]:
    """An attacker with the tables' owner's rights (in the two-role run the test acts as the
    owner for this: the runtime role could do none of it, see tests/console/test_runtime_role.py)."""
    with as_owner():
        triggers.uninstall(connection)
        yield
        triggers.install(connection)


def verify(*args: str) -> str:
    out = StringIO()
    call_command("audit_verify", *args, stdout=out)
    return out.getvalue()


def test_an_untouched_chain_verifies(chain: Path) -> None:
    call_command("audit_checkpoint", stdout=StringIO())
    assert "intact up to seq 6" in verify("--checkpoint", str(chain))


def test_edit_is_caught(chain: Path, untriggered: None) -> None:
    AuditEntry.objects.filter(seq=3).update(payload={"changes": {"limit": [2, 999]}})
    with pytest.raises(CommandError, match=r"seq 3: content does not match its hash"):
        verify()


def test_edit_with_a_recomputed_hash_is_caught_at_the_next_link(chain: Path, untriggered: None) -> None:
    from audit.chain import content_digest, entry_hash, hashed_values

    e = AuditEntry.objects.get(seq=3)
    e.actor = "mallory"
    e.content_hash = content_digest(e)  # an attacker who knows the format recomputes both hashes
    AuditEntry.objects.filter(pk=e.pk).update(actor="mallory", content_hash=e.content_hash,
                                              hash=entry_hash(e.prev_hash, hashed_values(e)))
    with pytest.raises(CommandError, match=r"seq 4: prev_hash does not match"):
        verify()


def test_edit_with_only_the_chain_hash_recomputed_is_caught_by_the_content_hash(
        chain: Path, untriggered: None) -> None:
    from audit.chain import entry_hash, hashed_values

    e = AuditEntry.objects.get(seq=3)
    e.actor = "mallory"
    AuditEntry.objects.filter(pk=e.pk).update(actor="mallory", hash=entry_hash(e.prev_hash, hashed_values(e)))
    with pytest.raises(CommandError, match=r"seq 3: content does not match the hash computed when it was written"):
        verify()


def test_an_edit_made_before_sealing_is_caught() -> None:
    """The chain links what the sealer reads: without a content hash taken at write time, a row
    edited while pending would be sealed as edited and verify as intact."""
    with transaction.atomic():
        first = record("policy.update", actor="alice", target_type="policies.policy", target_id="1",
                       payload={"changes": {"limit": [1, 2]}})
    assert len(first.content_hash) == 64
    with as_owner():  # the tables' owner, triggers bypassed
        triggers.uninstall(connection)
        try:
            AuditEntry.objects.filter(pk=first.pk).update(payload={"changes": {"limit": [1, 999]}})
        finally:
            triggers.install(connection)
    assert seal_pending() == 1
    with pytest.raises(CommandError, match=r"seq 1: content does not match the hash computed when it was written"):
        verify()


def test_the_content_hash_survives_the_database_round_trip() -> None:
    """Values the database normalises (jsonb numbers, key order, time zones) still verify."""
    with transaction.atomic():
        record("x.y", actor="system:test", target_type="t", target_id="-1", target_repr="=A1",
               payload={"b": 1.0, "a": 1e20, "z": -0.0, "f": 0.1, "s": "ü\u2028", "n": None, "l": [2.5, {"k": 3}]})
    seal_pending()
    assert "intact up to seq 1" in verify()


def test_delete_is_caught(chain: Path, untriggered: None) -> None:
    AuditEntry.objects.filter(seq=2).delete()
    with pytest.raises(CommandError, match=r"BROKEN at seq 2: sequence gap"):
        verify()


def test_reorder_is_caught(chain: Path, untriggered: None) -> None:
    a, b = AuditEntry.objects.get(seq=2), AuditEntry.objects.get(seq=4)
    AuditEntry.objects.filter(pk=a.pk).update(seq=-1)
    AuditEntry.objects.filter(pk=b.pk).update(seq=2)
    AuditEntry.objects.filter(pk=a.pk).update(seq=4)
    with pytest.raises(CommandError, match=r"BROKEN at seq 2"):
        verify()


def test_truncated_tail_passes_the_chain_but_not_the_checkpoint(chain: Path, untriggered: None) -> None:
    call_command("audit_checkpoint", stdout=StringIO())
    AuditEntry.objects.filter(seq__gte=5).delete()
    assert "intact up to seq 4" in verify()  # the chain alone cannot see a cut tail
    with pytest.raises(CommandError, match=r"TRUNCATED: the checkpoint covers seq 6 but the log ends at seq 4"):
        verify("--checkpoint", str(chain))


def test_rewritten_tail_is_caught_by_the_checkpoint(chain: Path, untriggered: None) -> None:
    from audit.chain import content_digest, entry_hash, hashed_values

    call_command("audit_checkpoint", stdout=StringIO())
    e = AuditEntry.objects.get(seq=6)
    e.payload = {"changes": {"limit": [5, 0]}}
    e.content_hash = content_digest(e)  # a careful rewrite: both hashes recomputed
    AuditEntry.objects.filter(pk=e.pk).update(payload=e.payload, content_hash=e.content_hash,
                                              hash=entry_hash(e.prev_hash, hashed_values(e)))
    assert "intact up to seq 6" in verify()
    with pytest.raises(CommandError, match=r"seq 6 has hash .* the checkpoint says"):
        verify("--checkpoint", str(chain))


def _only_checkpoint(directory: Path) -> Path:
    (path,) = directory.glob("checkpoint-*.json")
    return path


def test_forged_checkpoint_is_caught(chain: Path) -> None:
    call_command("audit_checkpoint", stdout=StringIO())
    path = _only_checkpoint(chain)
    doc = json.loads(path.read_text())
    doc["last_seq"], doc["count"] = 3, 3  # "the log only ever had 3 entries"
    path.write_text(json.dumps(doc))
    with pytest.raises(CommandError, match="signature is INVALID"):
        verify("--checkpoint", str(path))


def test_checkpoint_signed_with_another_key_is_caught(chain: Path, settings) -> None:
    call_command("audit_checkpoint", stdout=StringIO())
    settings.SECRET_KEY = "a-different-secret-key-for-this-test-only-000000000000"
    with pytest.raises(CommandError, match="signature is INVALID"):
        verify("--checkpoint", str(_only_checkpoint(chain)))


def _ed25519_keys(tmp_path: Path) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "audit-ed25519.pem", tmp_path / "audit-ed25519.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(priv), str(pub)


def test_ed25519_checkpoint_verifies_with_the_public_key_only(chain: Path, settings, tmp_path: Path) -> None:
    priv, pub = _ed25519_keys(tmp_path)
    settings.HMS_AUDIT_SIGNING_KEY_FILE = priv
    call_command("audit_checkpoint", stdout=StringIO())
    doc = json.loads(_only_checkpoint(chain).read_text())
    assert doc["alg"] == "ed25519"
    settings.HMS_AUDIT_SIGNING_KEY_FILE = ""
    settings.HMS_AUDIT_VERIFY_KEY_FILE = pub
    assert "signature valid" in verify("--checkpoint", str(chain))


def test_hmac_checkpoint_is_refused_once_ed25519_is_configured(chain: Path, settings, tmp_path: Path) -> None:
    """A forger who knows SECRET_KEY cannot downgrade to HMAC when a key pair is in use."""
    call_command("audit_checkpoint", stdout=StringIO())  # HMAC (no key configured)
    _, pub = _ed25519_keys(tmp_path)
    settings.HMS_AUDIT_VERIFY_KEY_FILE = pub
    with pytest.raises(CommandError, match="HMAC-signed but an Ed25519 key is configured"):
        verify("--checkpoint", str(chain))


def test_checkpoint_is_posted_to_the_webhook(chain: Path, settings) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    settings.HMS_AUDIT_CHECKPOINT_WEBHOOK = f"http://127.0.0.1:{server.server_port}/checkpoints"
    try:
        from audit.checkpoints import write_checkpoint

        cp = write_checkpoint()
    finally:
        thread.join(10)
        server.server_close()
    assert cp.webhook_status == "204"
    assert received and received[0]["last_seq"] == 6 and received[0]["signature"] == cp.signature


def test_scheduled_checkpoint_only_when_due_and_grown(chain: Path, settings) -> None:
    from audit.checkpoints import maybe_checkpoint

    settings.HMS_AUDIT_CHECKPOINT_MINUTES = 5
    assert maybe_checkpoint() is not None
    assert maybe_checkpoint() is None  # not due yet
    settings.HMS_AUDIT_CHECKPOINT_MINUTES = 0
    assert maybe_checkpoint() is None  # turned off
