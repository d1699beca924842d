"""What stays on the card, and for how long: the quarantine caps and the free-space floor.

Its own part, whatever the source: the folder loop and the camera loop both call `DiskGuard.check`
before each pass (or burst), so "the card never fills" holds for every `source.kind`. Order of
sacrifice when space runs short: quarantined blanks (oldest first), then keeping blanks at all
(they are deleted, or never written, instead of quarantined, kept or audited). Animals last: a full
card would stop them too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from firmware_app.config import StoreSection
from firmware_app.ledger import Ledger
from firmware_app.store import Store

log = logging.getLogger(__name__)


def prune_quarantine(store: Store, ledger: Ledger, max_mb: float, max_days: float, min_free_mb: float) -> int:
    """Drop quarantined blanks: older than max_days, over max_mb in total (oldest first), and
    while free space is under min_free_mb. Returns how many were removed."""
    rows = ledger.quarantined()
    total_mb = sum(size for *_, size in rows) / 1e6
    oldest_allowed = datetime.now(UTC) - timedelta(days=max_days)
    removed = 0
    for frame_id, dest, done_at, size in rows:
        too_old = datetime.fromisoformat(done_at) < oldest_allowed
        too_big = total_mb > max_mb
        too_full = store.free_mb() < min_free_mb
        if not (too_old or too_big or too_full):
            break  # rows are oldest first: the rest are younger and within the caps
        why = (
            "older than store.quarantine_max_days"
            if too_old
            else ("over store.quarantine_max_mb" if too_big else "disk under store.min_free_mb")
        )
        (store.root / dest).unlink(missing_ok=True)
        ledger.expire(frame_id, f"quarantine pruned: {why}")
        total_mb -= size / 1e6
        removed += 1
    if removed:
        log.info("quarantine: removed %d oldest blank frame(s)", removed)
    return removed


class DiskGuard:
    """Keeps store.min_free_mb free and says when it cannot (`low`), logging each change once."""

    def __init__(self, store: Store, ledger: Ledger, settings: StoreSection, enabled: bool = True) -> None:
        self.store, self.ledger, self.settings, self.enabled = store, ledger, settings, enabled
        self.low = False

    def check(self) -> bool:
        """Prune quarantine, then measure: True while blanks must not be kept (the disk is low)."""
        if not self.enabled:  # a dry run touches nothing
            return False
        st = self.settings
        prune_quarantine(self.store, self.ledger, st.quarantine_max_mb, st.quarantine_max_days, st.min_free_mb)
        free = self.store.free_mb()
        low = free < st.min_free_mb
        if low and not self.low:
            log.warning(
                "disk nearly full: %.0f MB free under store.min_free_mb = %.0f: blanks are deleted, "
                "not quarantined, kept or audited, until space returns",
                free,
                st.min_free_mb,
            )
        elif self.low and not low:
            log.info("disk space back to %.0f MB free: store.discard = %s again", free, st.discard)
        self.low = low
        return low
