"""Roll-up tiers: `minute` becomes `start` with a `span` (minute, hour, day), and the hour and day
rows are built from the minute rows already stored, so an upgraded console shows its history at
once. (Minute rows older than 48 h are then pruned by health.rollups.prune.)"""

from django.db import migrations, models

MINUTE, HOUR, DAY = 60, 3600, 86400


def _merge(rows):
    """Sum roll-up rows (dicts) into one: counts and histograms add up; p50/p95 come from the
    merged histogram (bucket upper bounds, as the SLA reads them); max is the largest max."""
    bounds = (5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)
    out = {"total": 0, "up": 0, "down": 0, "slow": 0, "excluded": 0, "hist": [0] * (len(bounds) + 1), "max_ms": None}
    for r in rows:
        for key in ("total", "up", "down", "slow", "excluded"):
            out[key] += r[key]
        for i, count in enumerate(r["hist"] or []):
            out["hist"][i] += count
        if r["max_ms"] is not None and (out["max_ms"] is None or r["max_ms"] > out["max_ms"]):
            out["max_ms"] = r["max_ms"]

    def pct(q):
        n = sum(out["hist"])
        if not n:
            return None
        rank, seen = -(-q * n // 1), 0
        for i, count in enumerate(out["hist"]):
            seen += count
            if seen >= rank:
                return float(bounds[i]) if i < len(bounds) else None
        return None

    out["p50_ms"], out["p95_ms"] = pct(0.5), pct(0.95)
    return out


def build_tiers(apps, schema_editor):
    Rollup = apps.get_model("health", "ProbeRollup")
    fields = ("service_id", "start", "total", "up", "down", "slow", "excluded", "hist", "max_ms")
    for span, source in ((HOUR, MINUTE), (DAY, HOUR)):
        batch, group, key = [], [], None
        rows = Rollup.objects.filter(span=source).order_by("service_id", "start").values(*fields)
        for row in rows.iterator(chunk_size=5000):
            at = row["start"]
            period = at.replace(minute=0, second=0, microsecond=0) if span == HOUR else \
                at.replace(hour=0, minute=0, second=0, microsecond=0)
            if (row["service_id"], period) != key:
                if group:
                    batch.append(Rollup(service_id=key[0], span=span, start=key[1], **_merge(group)))
                group, key = [], (row["service_id"], period)
            group.append(row)
            if len(batch) >= 2000:
                Rollup.objects.bulk_create(batch)
                batch = []
        if group:
            batch.append(Rollup(service_id=key[0], span=span, start=key[1], **_merge(group)))
        Rollup.objects.bulk_create(batch)


class Migration(migrations.Migration):

    dependencies = [
        ("health", "0003_probesettings"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="proberollup", name="unique_rollup_minute"),
        migrations.RenameField(model_name="proberollup", old_name="minute", new_name="start"),
        migrations.AddField(
            model_name="proberollup",
            name="span",
            field=models.PositiveIntegerField(choices=[(60, "minute"), (3600, "hour"), (86400, "day")], default=60),
        ),
        migrations.AlterModelOptions(name="proberollup", options={"ordering": ["service", "span", "start"]}),
        migrations.AddConstraint(
            model_name="proberollup",
            constraint=models.UniqueConstraint(fields=("service", "span", "start"), name="unique_rollup_period"),
        ),
        migrations.AddIndex(model_name="proberollup", index=models.Index(fields=["span", "start"], name="rollup_span_start")),
        migrations.RunPython(build_tiers, migrations.RunPython.noop),
    ]
