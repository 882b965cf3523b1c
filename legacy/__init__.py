"""Migration history of the apps the layout split (issue 11). `services` and `hmsmgmt` were apps
until then; their migrations stay here, under the same app labels, so a database migrated before
the split and a new one reach the same tables. Their last migrations hand the models to fleet,
health, slo, autoscaling and accounts without touching a table (SeparateDatabaseAndState). Nothing
imports these packages; never add code here."""
