"""References to messages we do not have yet, kept until those messages are stored.

Not a plugin (the loader skips modules whose name starts with ``_``): the store
:class:`PendingReferences`, one per host (:func:`pending_references`), shared by the
editing plugins (see ``pending_kinds`` in :class:`sat.plugins._editing.EditingPlugin`).
It lives apart from the plugins' base because it is a state machine of its own (bounds,
expiry, saving in ``kv``, the storage's stored-message listener), and apart from any one
XEP because corrections, retractions, moderation, reactions and replies all use it.

The entries are saved under the ``kv`` namespace "XEP-0308", key "pending_references"
(the names they had when the store was part of the XEP-0308 plugin: kept, so that the
references saved before an upgrade are still read).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable

from twisted.internet import defer

from sat.plugins._editing import (
    Author,
    EditingPlugin,
    author_from_dict,
    author_to_dict,
    ids_of,
    valid_id,
)

log = logging.getLogger(__name__)

#: kv namespace / key where the pending references of a profile are kept across restarts
PENDING_KV_NAMESPACE = "XEP-0308"
PENDING_KV_KEY = "pending_references"
PENDING_KINDS = ("correction", "retraction", "moderation", "reaction", "reply")


def _valid_entry(entry) -> bool:
    """True for a well-formed pending reference (what we saved, read back from storage)."""
    if not isinstance(entry, dict):
        return False
    return (
        entry.get("kind") in PENDING_KINDS
        and valid_id(entry.get("ref"))
        and isinstance(entry.get("peer"), str)
        and bool(entry.get("peer"))
        and isinstance(entry.get("groupchat"), bool)
        and isinstance(entry.get("timestamp"), int | float)
        and isinstance(entry.get("added"), int | float)
        and isinstance(entry.get("key"), str)
        and isinstance(entry.get("sender"), str)
        and isinstance(entry.get("data"), dict)
        and author_from_dict(entry.get("author")) is not None
    )


class _ProfilePending:
    def __init__(self):
        #: entry key -> entry, oldest first
        self.entries: OrderedDict[str, dict] = OrderedDict()
        #: referenced id -> keys of the entries naming it
        self.by_ref: dict[str, set[str]] = {}
        self.loaded = False
        #: changed since last saved
        self.dirty = False

    def put(self, entry: dict) -> None:
        key = entry["key"]
        self.discard(key)
        self.entries[key] = entry
        self.by_ref.setdefault(entry["ref"], set()).add(key)

    def discard(self, key: str) -> dict | None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            keys = self.by_ref.get(entry["ref"])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_ref[entry["ref"]]
        return entry


class PendingReferences:
    """References to messages we do not have yet, applied when the message is stored.

    A reaction, retraction, moderation notice, correction or reply may arrive before the
    message it names (archive pages fetched newest first, carbons, room joins...). The
    plugins keep it here instead of dropping it; when a message carrying the referenced id
    is stored (live or from an archive: the storage tells :meth:`on_stored`, a set lookup
    per stored message, and only while something is pending), the entries naming it go
    through the same checks as when the message is known (author of a retraction or
    correction, room of a moderation notice, the room's stanza-id for a reply in a room),
    then are applied to the stored row (``MessageUpdate`` as usual). An entry refused for
    one message stays (another message of the right author may carry the same id: ids are
    chosen by senders).

    Bounds, per profile: :attr:`MAX_ENTRIES` entries, :attr:`MAX_PER_SENDER` per sender,
    :attr:`MAX_AGE` seconds (the oldest go first, with a log line), so a hostile contact
    cannot grow memory or storage without bound. Entries are small (no message body: the
    text of a correction or reply is the message stored for it) and are saved in ``kv``
    (:data:`PENDING_KV_NAMESPACE`), at most every :attr:`FLUSH_DELAY` seconds and when
    the daemon stops, so they survive a restart.
    """

    MAX_ENTRIES = 500
    MAX_PER_SENDER = 100
    MAX_AGE = 24 * 3600.0
    FLUSH_DELAY = 2.0

    def __init__(self, host, clock=None, wall: Callable[[], float] = time.time):
        if clock is None:
            from twisted.internet import reactor as clock
        self.host = host
        self.clock = clock
        self.wall = wall
        self._profiles: dict[str, _ProfilePending] = {}
        #: kind -> plugin with pending_accepts / pending_apply
        self._handlers: dict[str, EditingPlugin] = {}
        self._loading: dict[str, defer.Deferred] = {}
        self._flush_calls: dict = {}
        self._listening = False
        #: applications running (see idle)
        self._running: set[defer.Deferred] = set()

    def register(self, kind: str, plugin: EditingPlugin) -> None:
        self._handlers[kind] = plugin

    # --- adding --------------------------------------------------------------------------

    def _store(self, profile: str) -> _ProfilePending:
        store = self._profiles.get(profile)
        if store is None:
            store = self._profiles[profile] = _ProfilePending()
        return store

    def supported(self) -> bool:
        return hasattr(getattr(self.host, "storage", None), "add_stored_listener")

    def add(
        self,
        client,
        kind: str,
        ref: str,
        peer: str,
        groupchat: bool,
        author: Author,
        timestamp: float,
        data: dict,
        discriminator: str = "",
    ) -> bool:
        """Keep a reference to ``ref`` (conversation ``peer``) until that message is stored.

        One entry per (kind, conversation, ref, sender, ``discriminator``): a newer one
        replaces an older one (reactions: the whole set), an older one is ignored. Returns
        False when references cannot be kept (storage without notifications)."""
        if not self.supported():
            return False
        profile = client.profile
        store = self._store(profile)
        self._expire(profile, store)
        key = "\x1f".join((kind, peer, "g" if groupchat else "c", ref, author.key, discriminator))
        previous = store.entries.get(key)
        if previous is not None and previous["timestamp"] > timestamp:
            return True
        entry = {
            "key": key,
            "kind": kind,
            "ref": ref,
            "peer": peer,
            "groupchat": groupchat,
            "author": author_to_dict(author),
            "sender": author.key,
            "timestamp": float(timestamp),
            "added": self.wall(),
            "data": data,
        }
        store.put(entry)
        self._bound(profile, store, author.key)
        self._changed(profile)
        return True

    def _bound(self, profile: str, store: _ProfilePending, sender_key: str) -> None:
        mine = [k for k, e in store.entries.items() if e["sender"] == sender_key]
        dropped = 0
        for key in mine[: max(0, len(mine) - self.MAX_PER_SENDER)]:
            store.discard(key)
            dropped += 1
        while len(store.entries) > self.MAX_ENTRIES:
            store.discard(next(iter(store.entries)))
            dropped += 1
        if dropped:
            log.warning(
                "[%s] too many references to unknown messages: %d oldest dropped "
                "(at most %d, %d per sender)",
                profile,
                dropped,
                self.MAX_ENTRIES,
                self.MAX_PER_SENDER,
            )

    def _expire(self, profile: str, store: _ProfilePending) -> None:
        limit = self.wall() - self.MAX_AGE
        expired = 0
        while store.entries:
            key, entry = next(iter(store.entries.items()))  # the oldest
            if entry["added"] >= limit:
                break
            store.discard(key)
            expired += 1
        if expired:
            log.info("[%s] %d reference(s) to messages never received expired", profile, expired)
            self._changed(profile)

    def matching(self, profile: str, kind: str, peer: str, groupchat: bool, ref: str) -> list[dict]:
        """The pending entries of ``kind`` naming ``ref`` in that conversation."""
        store = self._profiles.get(profile)
        if store is None:
            return []
        found = []
        for key in store.by_ref.get(ref, ()):
            entry = store.entries[key]
            if entry["kind"] == kind and entry["peer"] == peer and entry["groupchat"] == groupchat:
                found.append(entry)
        return found

    def count(self, profile: str) -> int:
        store = self._profiles.get(profile)
        return 0 if store is None else len(store.entries)

    # --- applying ---------------------------------------------------------------------------

    def _update_listening(self) -> None:
        wanted = any(store.entries for store in self._profiles.values())
        if wanted == self._listening or not self.supported():
            return
        if wanted:
            self.host.storage.add_stored_listener(self.on_stored)
        else:
            self.host.storage.remove_stored_listener(self.on_stored)
        self._listening = wanted

    def on_stored(self, profile: str, message: dict) -> None:
        """A message was stored: apply the pending references that name it (storage hook)."""
        store = self._profiles.get(profile)
        if store is None or not store.by_ref:
            return
        uid = message.get("uid")
        if not uid:
            return
        groupchat = message.get("type") == "groupchat"
        keys = [key for ref in ids_of(message, groupchat) for key in store.by_ref.get(ref, ())]
        if not keys:
            return
        client = getattr(self.host, "clients", {}).get(profile)
        if client is None:
            return
        peer, _ = EditingPlugin.conversation(client, message)
        limit = self.wall() - self.MAX_AGE
        accepted = []
        changed = False
        for key in keys:
            entry = store.entries.get(key)
            if entry is None or entry["peer"] != peer or entry["groupchat"] != groupchat:
                continue
            if entry["added"] < limit:
                store.discard(key)
                changed = True
                continue
            if entry["data"].get("uid") == uid:
                continue  # a correction stored as a message of its own is not its target
            plugin = self._handlers.get(entry["kind"])
            if plugin is None:
                continue
            try:
                ok = plugin.pending_accepts(client, message, entry)
            except Exception:
                log.exception("[%s] checking a pending %s failed", profile, entry["kind"])
                ok = False
            if ok:
                store.discard(key)
                accepted.append(entry)
        if changed or accepted:
            self._changed(profile)
        if accepted:
            log.info(
                "[%s] message %s arrived: applying %d reference(s) received before it",
                profile,
                uid,
                len(accepted),
            )
            d = defer.ensureDeferred(self._apply(client, uid, accepted))
            d.addErrback(
                lambda f: log.error("[%s] pending references failed: %s", profile, f.value)
            )
            if not d.called:
                self._running.add(d)
                d.addBoth(self._done, d)

    def _done(self, result, d: defer.Deferred):
        self._running.discard(d)
        return result

    async def idle(self) -> None:
        """Wait until the references being applied are (tests, shutdown)."""
        while self._running:
            await defer.DeferredList(list(self._running))

    async def _apply(self, client, uid: str, entries: list[dict]) -> None:
        entries.sort(key=lambda e: e["timestamp"])
        for entry in entries:
            # read again each time: the previous entry changed the row
            row = await self.host.storage.history_find(client.profile, uid=uid)
            if row is None:
                return
            try:
                await self._handlers[entry["kind"]].pending_apply(client, row, entry)
            except Exception as e:
                log.error(
                    "[%s] pending %s of message %s not applied: %s",
                    client.profile,
                    entry["kind"],
                    uid,
                    e,
                )

    # --- persistence ------------------------------------------------------------------------

    def _changed(self, profile: str) -> None:
        self._store(profile).dirty = True
        self._update_listening()
        call = self._flush_calls.get(profile)
        if call is None or not call.active():
            self._flush_calls[profile] = self.clock.callLater(
                self.FLUSH_DELAY, self._flush_later, profile
            )

    def _flush_later(self, profile: str) -> None:
        self._flush_calls.pop(profile, None)
        defer.ensureDeferred(self.flush(profile)).addErrback(
            lambda f: log.warning("[%s] pending references not saved: %s", profile, f.value)
        )

    async def load(self, profile: str) -> None:
        """Read the profile's saved entries (once; merged with those received meanwhile)."""
        store = self._store(profile)
        if store.loaded:
            return
        running = self._loading.get(profile)
        if running is None:
            running = self._loading[profile] = defer.ensureDeferred(self._read(profile, store))
        try:
            await running
        finally:
            self._loading.pop(profile, None)

    async def _read(self, profile: str, store: _ProfilePending) -> None:
        try:
            saved = await self.host.storage.kv_get(
                PENDING_KV_NAMESPACE, PENDING_KV_KEY, None, profile
            )
        except Exception as e:
            log.warning("[%s] pending references not read: %s", profile, e)
            return
        store.loaded = True
        entries = saved.get("entries") if isinstance(saved, dict) else None
        kept = 0
        for entry in entries if isinstance(entries, list) else ():
            if not _valid_entry(entry):
                continue
            if entry["key"] not in store.entries:
                store.put(entry)
                kept += 1
        # the saved ones are older than those received since: keep the order by age
        store.entries = OrderedDict(sorted(store.entries.items(), key=lambda i: i[1]["added"]))
        if kept:
            log.info("[%s] %d reference(s) to unknown messages still waiting", profile, kept)
        self._expire(profile, store)
        self._bound(profile, store, "")
        self._update_listening()

    async def flush(self, profile: str) -> None:
        """Save the profile's entries now."""
        store = self._profiles.get(profile)
        if store is None:
            return
        call = self._flush_calls.pop(profile, None)
        if call is not None and call.active():
            call.cancel()
        await self.load(profile)  # never overwrite saved entries not read yet
        if not store.loaded or not store.dirty:
            return
        store.dirty = False
        try:
            await self.host.storage.kv_set(
                PENDING_KV_NAMESPACE,
                PENDING_KV_KEY,
                {"version": 1, "entries": list(store.entries.values())},
                profile,
            )
        except Exception:
            store.dirty = True
            raise

    async def flush_all(self) -> None:
        await self.idle()
        for profile in list(self._profiles):
            try:
                await self.flush(profile)
            except Exception as e:
                log.warning("[%s] pending references not saved: %s", profile, e)


_pending_managers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pending_references(host) -> PendingReferences:
    """The :class:`PendingReferences` of ``host`` (one shared by the editing plugins)."""
    manager = _pending_managers.get(host)
    if manager is None:
        manager = _pending_managers[host] = PendingReferences(host)
    return manager
