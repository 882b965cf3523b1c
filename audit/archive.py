"""Archiving: copy sealed entries created before a date to files, with a signed manifest.

Entries are never deleted by the application (the triggers would refuse anyway): the archive is a
self-verifying copy for cold storage and for retention rules that want the old log on other
media. Each archive continues the chain of the previous one in the same directory: its manifest
records the hash it starts from and the last hash it ends with, and the database entry after the
boundary links to that last hash, so the chain verifies across the boundary in both directions.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from django.utils import timezone

from audit.chain import GENESIS
from audit.checkpoints import CheckpointError, sign, verify_signature
from audit.export import jsonl_lines, read_jsonl, rows, verify_rows
from audit.models import AuditEntry
from audit.sealer import seal_pending

FORMAT = "hmsmgmt-audit-archive/1"


class ArchiveError(Exception):
    pass


def manifests(directory: Path) -> list[dict[str, Any]]:
    """Signature-checked manifests in a directory, oldest first."""
    out = []
    for path in sorted(directory.glob("archive-*.manifest.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"cannot read {path}: {exc}") from None
        try:
            verify_signature(doc, FORMAT)
        except CheckpointError as exc:
            raise ArchiveError(f"{path.name}: {exc}") from None
        doc["_path"] = str(path)
        out.append(doc)
    return sorted(out, key=lambda d: d["first_seq"])


def archive(before: datetime, out: Path) -> dict[str, Any] | None:
    """Write the next archive in `out`: from where the last one ended up to the last sealed entry
    created before `before`. Returns its manifest, or None when there is nothing new to archive."""
    seal_pending()
    out.mkdir(parents=True, exist_ok=True)
    previous = manifests(out)
    start_seq, start_hash = (previous[-1]["last_seq"] + 1, previous[-1]["last_hash"]) if previous else (1, GENESIS)
    end = (AuditEntry.objects.filter(seq__isnull=False, seq__gte=start_seq, created_at__lt=before)
           .order_by("-seq").values_list("seq", flat=True).first())
    if end is None:
        return None
    qs = AuditEntry.objects.filter(seq__gte=start_seq, seq__lte=end).order_by("seq")
    name = f"archive-{start_seq:012d}-{end:012d}"
    data_path = out / f"{name}.jsonl"
    digest = hashlib.sha256()
    count = 0
    last_hash = start_hash
    tmp = data_path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for line in jsonl_lines(rows(qs)):
            fh.write(line)
            digest.update(line.encode())
            count += 1
            last_hash = json.loads(line)["hash"]
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, data_path)
    if count != end - start_seq + 1:
        raise ArchiveError(f"expected {end - start_seq + 1} entries in seq {start_seq}..{end}, found {count} "
                           "(run audit_verify)")
    manifest = sign({
        "format": FORMAT, "created_at": timezone.now().isoformat(timespec="seconds"), "before": before.isoformat(),
        "file": data_path.name, "sha256": digest.hexdigest(), "first_seq": start_seq, "first_prev_hash": start_hash,
        "last_seq": end, "last_hash": last_hash, "count": count,
    })
    (out / f"{name}.manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def verify_archives(directory: Path) -> list[str]:
    """Check every archive in `directory`: signature, file digest, the chain inside the file, the
    link between consecutive archives, and the link to the entries the database still holds."""
    problems: list[str] = []
    docs = manifests(directory)
    if not docs:
        return [f"no archive manifests in {directory}"]
    expect_seq, expect_hash = 1, GENESIS
    for doc in docs:
        label = Path(doc["_path"]).name
        if (doc["first_seq"], doc["first_prev_hash"]) != (expect_seq, expect_hash):
            problems.append(f"{label}: starts at seq {doc['first_seq']}, expected {expect_seq} continuing the "
                            "previous archive")
        data = directory / doc["file"]
        try:
            raw = data.read_bytes()
        except OSError as exc:
            problems.append(f"{label}: cannot read {doc['file']}: {exc}")
            continue
        if hashlib.sha256(raw).hexdigest() != doc["sha256"]:
            problems.append(f"{label}: {doc['file']} does not match the digest in its manifest (file altered)")
        result = verify_rows(read_jsonl(raw.decode().splitlines()), start_seq=doc["first_seq"],
                             start_hash=doc["first_prev_hash"])
        if not result.ok:
            problems.append(f"{label}: chain {result.summary()}")
        elif (result.last_seq, result.last_hash) != (doc["last_seq"], doc["last_hash"]):
            problems.append(f"{label}: file ends at seq {result.last_seq}, the manifest says {doc['last_seq']}")
        db_last = AuditEntry.objects.filter(seq=doc["last_seq"]).values_list("hash", flat=True).first()
        if db_last is not None and db_last != doc["last_hash"]:
            problems.append(f"{label}: the database entry seq {doc['last_seq']} differs from the archive")
        nxt = AuditEntry.objects.filter(seq=doc["last_seq"] + 1).values_list("prev_hash", flat=True).first()
        if nxt is not None and nxt != doc["last_hash"]:
            problems.append(f"{label}: the database entry seq {doc['last_seq'] + 1} does not link to the archive's "
                            "last hash")
        expect_seq, expect_hash = doc["last_seq"] + 1, doc["last_hash"]
    return problems
