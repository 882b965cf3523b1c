"""audit's controller job (registered in audit/apps.py): the one sealer of the chain."""

from __future__ import annotations

import logging
import time

from audit.checkpoints import maybe_checkpoint
from audit.refusals import close_buckets
from audit.sealer import seal_pending

log = logging.getLogger(__name__)


def seal() -> None:
    """One sealing pass plus a due checkpoint, on the controller's "sealer" loop of its own, so
    sealing lag stays bounded even while a reconcile pass waits on a slow engine. Refusal counts of
    closed minutes become their summary entries first, so this pass seals them too."""
    started = time.monotonic()
    close_buckets()
    n = seal_pending()
    maybe_checkpoint()
    if n:
        log.debug("sealed %d audit entries in %.3fs", n, time.monotonic() - started)
