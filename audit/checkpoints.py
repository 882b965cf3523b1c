"""Signed checkpoints: "the log had COUNT sealed entries, ending at LAST_SEQ with LAST_HASH".

A hash chain shows that nothing inside it changed, but not that its tail was not cut off. A
checkpoint kept off the box (an export directory on other storage, a webhook) does: verification
against it fails if the entry it names is gone or differs. Signed with Ed25519 when a private key
is configured (HMS_AUDIT_SIGNING_KEY_FILE; verifiers need only the public key,
HMS_AUDIT_VERIFY_KEY_FILE), else with an HMAC key derived from SECRET_KEY (then whoever can verify
can also sign; fine for one box, weaker off it; see docs/audit.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditCheckpoint, AuditEntry
from audit.sealer import chain_head, seal_pending

log = logging.getLogger("audit.checkpoints")

FORMAT = "hmsmgmt-audit-checkpoint/1"
SIGNED_FIELDS = ("format", "created_at", "last_seq", "last_hash", "count")  # at least these
SIGNATURE_FIELDS = ("alg", "key_id", "signature")


class CheckpointError(Exception):
    """A checkpoint file is unreadable, unsigned, signed with the wrong key, or forged."""


# --- keys -------------------------------------------------------------------------------------
def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read key file {path}: {exc}") from None


def _private_key() -> Any:
    path = settings.HMS_AUDIT_SIGNING_KEY_FILE
    if not path:
        return None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(_read(path), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 private key")
    return key


def _public_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    path = settings.HMS_AUDIT_VERIFY_KEY_FILE
    if path:
        key = load_pem_public_key(_read(path))
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError(f"{path} is not an Ed25519 public key")
        return key
    private = _private_key()
    return private.public_key() if private is not None else None


def _hmac_key() -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), b"hmsmgmt.audit.checkpoint.v1", hashlib.sha256).digest()


def _key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_raw(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _message(body: dict[str, Any]) -> bytes:
    # Every field but the signature's own (and "_path", added on load): archive manifests sign
    # their extra fields (file digest, first seq) the same way.
    signed = {k: v for k, v in body.items() if k not in SIGNATURE_FIELDS and not k.startswith("_")}
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: dict[str, Any]) -> dict[str, Any]:
    """Return body plus alg, key_id and signature."""
    private = _private_key()
    msg = _message(body)
    if private is not None:
        return {**body, "alg": "ed25519", "key_id": _key_id(_public_raw(private.public_key())),
                "signature": base64.b64encode(private.sign(msg)).decode()}
    key = _hmac_key()
    return {**body, "alg": "hmac-sha256", "key_id": _key_id(hashlib.sha256(key).digest()),
            "signature": base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()}


def verify_signature(doc: dict[str, Any], fmt: str = FORMAT) -> None:
    """Raise CheckpointError unless doc is a well-formed checkpoint signed with our key. When an
    Ed25519 key is configured an HMAC checkpoint is refused (no downgrade to a shared secret)."""
    missing = [k for k in (*SIGNED_FIELDS, "alg", "signature") if k not in doc]
    if missing:
        raise CheckpointError(f"not a checkpoint: missing {', '.join(missing)}")
    if doc["format"] != fmt:
        raise CheckpointError(f"unknown checkpoint format {doc['format']!r}")
    try:
        signature = base64.b64decode(str(doc["signature"]), validate=True)
        msg = _message(doc)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"malformed checkpoint: {exc}") from None
    public = _public_key()
    if doc["alg"] == "ed25519":
        if public is None:
            raise CheckpointError("checkpoint is Ed25519-signed but no key is configured "
                                  "(set HMS_AUDIT_VERIFY_KEY_FILE)")
        from cryptography.exceptions import InvalidSignature

        try:
            public.verify(signature, msg)
        except InvalidSignature:
            raise CheckpointError("checkpoint signature is INVALID (forged or altered)") from None
    elif doc["alg"] == "hmac-sha256":
        if public is not None:
            raise CheckpointError("checkpoint is HMAC-signed but an Ed25519 key is configured: refused")
        expected = hmac.new(_hmac_key(), msg, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise CheckpointError("checkpoint signature is INVALID (forged or altered)")
    else:
        raise CheckpointError(f"unknown signature algorithm {doc['alg']!r}")
    if not isinstance(doc["last_seq"], int) or not isinstance(doc["count"], int):
        raise CheckpointError("malformed checkpoint: last_seq and count must be integers")


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file (or the newest one in a directory) and check its signature."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("checkpoint-*.json"))
        if not files:
            raise CheckpointError(f"no checkpoint-*.json in {p}")
        p = files[-1]
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{p} is not a checkpoint")
    verify_signature(doc)
    doc["_path"] = str(p)
    return doc


# --- writing ----------------------------------------------------------------------------------
def export_dir() -> Path:
    return Path(settings.HMS_AUDIT_EXPORT_DIR)


def _write_file(doc: dict[str, Any]) -> str:
    directory = export_dir()
    directory.mkdir(parents=True, exist_ok=True)
    stamp = doc["created_at"].replace(":", "").replace("-", "").replace("+0000", "Z")[:15]
    path = directory / f"checkpoint-{doc['last_seq']:012d}-{stamp}.json"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # a reader never sees half a file
    return str(path)


def _post_webhook(doc: dict[str, Any]) -> str:
    url = settings.HMS_AUDIT_CHECKPOINT_WEBHOOK
    if not url:
        return ""
    import requests

    try:
        resp = requests.post(url, json=doc, timeout=5)
        return f"{resp.status_code}"
    except requests.RequestException as exc:
        log.warning("checkpoint webhook %s failed: %s", url, exc)
        return f"failed: {exc.__class__.__name__}"[:200]


def write_checkpoint(*, export: bool = True) -> AuditCheckpoint:
    """Seal what is pending, sign the head, store it, export it (directory, then webhook)."""
    seal_pending()
    last_seq, last_hash = chain_head()
    count = AuditEntry.objects.filter(seq__isnull=False).count()
    body = {
        "format": FORMAT,
        "created_at": timezone.now().isoformat(timespec="seconds"),
        "last_seq": last_seq,
        "last_hash": last_hash,
        "count": count,
    }
    doc = sign(body)
    exported = _write_file(doc) if export else ""
    webhook = _post_webhook(doc) if export else ""
    with transaction.atomic():
        return AuditCheckpoint.objects.create(
            created_at=timezone.now(), last_seq=last_seq, last_hash=last_hash, count=count, alg=doc["alg"],
            key_id=doc["key_id"], signature=doc["signature"], exported_to=exported, webhook_status=webhook,
        )


def maybe_checkpoint() -> AuditCheckpoint | None:
    """Write a checkpoint if the last one is older than HMS_AUDIT_CHECKPOINT_MINUTES and the chain
    has grown since (0 minutes turns scheduled checkpoints off)."""
    minutes = settings.HMS_AUDIT_CHECKPOINT_MINUTES
    if minutes <= 0:
        return None
    last = AuditCheckpoint.objects.order_by("-id").first()
    if last is not None and timezone.now() - last.created_at < timedelta(minutes=minutes):
        return None
    head_seq, _ = chain_head()
    if head_seq == 0 or (last is not None and last.last_seq == head_seq):
        return None
    return write_checkpoint()


# --- checking the log against a checkpoint ----------------------------------------------------
def check_log(doc: dict[str, Any]) -> list[str]:
    """Problems with the database log relative to a (signature-checked) checkpoint."""
    problems: list[str] = []
    seq, expected_hash = doc["last_seq"], doc["last_hash"]
    if seq == 0:
        return problems
    entry = AuditEntry.objects.filter(seq=seq).values_list("hash", flat=True).first()
    head_seq, _ = chain_head()
    if entry is None:
        problems.append(f"log TRUNCATED: the checkpoint covers seq {seq} but the log ends at seq {head_seq}")
    elif entry != expected_hash:
        problems.append(f"entry seq {seq} has hash {entry[:16]}…, the checkpoint says {expected_hash[:16]}… "
                        "(log rewritten since the checkpoint)")
    count = AuditEntry.objects.filter(seq__isnull=False, seq__lte=seq).count()
    if count < doc["count"]:
        problems.append(f"the checkpoint counted {doc['count']} entries up to seq {seq}; the log has {count}")
    return problems
