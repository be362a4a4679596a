"""Avatars: XEP-0084 (User Avatar, PEP), XEP-0153 (vCard-based) and XEP-0398 (conversion).

Cache
    Every avatar is stored once, by the SHA-1 of its bytes, as
    ``<data_dir>/avatars/<sha1>``. Only a 40 hex digit id ever becomes a file name, and
    only after the downloaded bytes were checked: their SHA-1 must equal the announced
    id and their size stay under ``[xep_0084] max_size``; anything else is refused with
    a log line. Which avatar each contact uses is kept in storage (``kv`` namespace
    ``avatars``), so ``AvatarGet`` answers offline too.

Contacts' avatars
    - XEP-0084: we ask for ``urn:xmpp:avatar:metadata`` notifications (``+notify`` in our
      disco#info, so in our entity capabilities); a notification names the image id; when
      it is not cached, the data item is requested from the publisher's
      ``urn:xmpp:avatar:data`` node.
    - XEP-0153: a ``<x xmlns='vcard-temp:x:update'><photo>sha1</photo></x>`` in presence
      names the image; when it is not cached, the vCard (XEP-0054) is requested and its
      PHOTO checked against the hash. An empty ``<photo/>`` means no avatar. Room
      occupants' avatars are known by their full (occupant) JID.
    Each change is signalled with ``AvatarUpdated(profile, jid, path)`` ('' for none).

Our avatar (``AvatarSet(profile, file_path)``)
    The file must be an image no bigger than ``max_size``: a PNG when our account has PEP
    (``pubsub/pep`` identity; XEP-0084 requires the image/png version), else a PNG, JPEG,
    GIF or WebP (vCard only). With PEP it is published to the data node then the metadata
    node (XEP-0084). When our server does the conversion between both forms
    (it advertises ``urn:xmpp:pep-vcard-conversion:0``, XEP-0398), nothing else is done:
    the server updates the vCard and puts the hash in our presence. Otherwise the vCard
    PHOTO is also set and our presence carries the hash (XEP-0153).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
import struct
import tempfile
from pathlib import Path

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.plugin import Plugin
from sat.memory.config import register_option, register_section
from sat.plugins.xep_0030_disco import SharedCall
from sat.plugins.xep_0054_vcard import NS_VCARD, photo_of

log = logging.getLogger(__name__)

NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_AVATAR_METADATA = "urn:xmpp:avatar:metadata"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_VCARD_UPDATE = "vcard-temp:x:update"
NS_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
KV_NAMESPACE = "avatars"
DEFAULT_MAX_SIZE = 1_048_576
#: an avatar id (and cache file name): a SHA-1 in lowercase hex, nothing else
ID_RE = re.compile(r"\A[0-9a-f]{40}\Z")
#: bad ids remembered per contact, so repeated presences do not trigger new downloads
MAX_FAILED = 16

register_section("xep_0084", "Avatars (XEP-0084, XEP-0153, XEP-0398).")
register_option(
    "xep_0084",
    "max_size",
    "int",
    DEFAULT_MAX_SIZE,
    "Largest avatar accepted, in bytes: bigger images are neither published nor downloaded.",
    min=1024,
)

EVENT_XPATH = f"/message/event[@xmlns='{NS_PUBSUB_EVENT}']/items[@node='{NS_AVATAR_METADATA}']"


# --- images ------------------------------------------------------------------------------


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def image_info(data: bytes) -> tuple[str, int | None, int | None]:
    """(MIME type, width, height) of a PNG/JPEG/GIF/WebP image; InvalidArgument otherwise."""
    size = None
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        mime = "image/png"
        size = struct.unpack(">II", data[16:24])
    elif data.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
        size = _jpeg_size(data)
    elif data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        mime = "image/gif"
        size = struct.unpack("<HH", data[6:10])
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
        size = _webp_size(data)
    else:
        raise errors.InvalidArgument("not a PNG, JPEG, GIF or WebP image")
    width, height = size if size else (None, None)
    return mime, width, height


def normalise_id(value: str | None) -> str | None:
    """A valid avatar id (lowercase SHA-1 hex) or None."""
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if ID_RE.match(value) else None


# --- the disk cache ------------------------------------------------------------------------


class AvatarCache:
    """Files named by the SHA-1 of their content, in one directory."""

    def __init__(self, directory: Path, max_size: int):
        self.directory = Path(directory)
        self.max_size = max_size

    def path_for(self, avatar_id: str) -> Path:
        """The file of a (valid) id; InvalidArgument for anything else."""
        if not isinstance(avatar_id, str) or not ID_RE.match(avatar_id):
            raise errors.InvalidArgument(f"invalid avatar id {avatar_id!r}")
        path = self.directory / avatar_id
        # belt and braces: the name cannot leave the directory
        if path.parent != self.directory:
            raise errors.InvalidArgument(f"invalid avatar id {avatar_id!r}")
        return path

    def has(self, avatar_id: str) -> bool:
        try:
            return self.path_for(avatar_id).is_file()
        except errors.InvalidArgument:
            return False

    def store(self, avatar_id: str, data: bytes) -> Path:
        """Check ``data`` against ``avatar_id`` and size, then write it atomically."""
        path = self.path_for(avatar_id)
        if len(data) > self.max_size:
            raise errors.InvalidArgument(
                f"avatar of {len(data)} bytes is bigger than the {self.max_size} bytes allowed"
            )
        digest = hashlib.sha1(data).hexdigest()
        if digest != avatar_id:
            raise errors.InvalidArgument(
                f"avatar data does not match its id (SHA-1 {digest}, announced {avatar_id})"
            )
        if path.is_file():
            return path
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path


# --- handler ---------------------------------------------------------------------------


@implementer(iwokkel.IDisco)
class AvatarHandler(XMPPHandler):
    def __init__(self, plugin: AvatarPlugin, client):
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self):
        # before the message pipeline's observer, which skips what is marked handled
        self.xmlstream.addObserver(
            EVENT_XPATH, self.plugin.on_metadata_event, priority=10, client=self.client
        )

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier:
            return []
        return [disco.DiscoFeature(NS_AVATAR_METADATA + "+notify")]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


class _OwnState:
    def __init__(self):
        #: our account has PEP / converts PEP avatars <-> vCard (None: not known yet)
        self.pep: bool | None = None
        self.conversion: bool | None = None
        #: our avatar id: None unknown, '' none
        self.hash: str | None = None
        self.discovery: defer.Deferred | None = None


class AvatarPlugin(Plugin):
    name = "XEP-0084"
    label = "Avatars"
    xeps = ("XEP-0084", "XEP-0153", "XEP-0398")
    dependencies = ("XEP-0030", "XEP-0054")
    recommendations = ("XEP-0115",)
    description = "Publishes our avatar and fetches, checks and caches contacts' avatars."

    def __init__(self, host):
        super().__init__(host)
        try:
            max_size = int(self.config("xep_0084", "max_size", DEFAULT_MAX_SIZE))
        except (TypeError, ValueError):
            max_size = DEFAULT_MAX_SIZE
        data_dir = self.config("core", "data_dir", None)
        if data_dir is None:
            data_dir = Path(tempfile.gettempdir()) / "sat"
        self.cache = AvatarCache(Path(data_dir).absolute() / "avatars", max_size)
        #: profile -> {jid: avatar id or ''}
        self._known: dict[str, dict[str, str]] = {}
        self._own: dict[str, _OwnState] = {}
        #: (profile, key) -> (id, running download); one per contact at a time
        self._running: dict[tuple[str, str], tuple[str, SharedCall]] = {}
        #: (profile, key) -> (id, fetch, persist) announced while a download was running
        self._pending: dict[tuple[str, str], tuple] = {}
        #: (profile, key) -> ids that failed
        self._failed: dict[tuple[str, str], list[str]] = {}
        host.hooks.add("presence_send", self._on_presence_send, 0)
        host.hooks.add("presence_received", self._on_presence_received, 0)
        self._register_bridge()

    @property
    def max_size(self) -> int:
        return self.cache.max_size

    @property
    def _disco(self):
        return self.host.plugins["XEP-0030"]

    @property
    def _vcard(self):
        return self.host.plugins["XEP-0054"]

    # --- life cycle ------------------------------------------------------------------------

    def get_handler(self, client):
        self._own.setdefault(client.profile, _OwnState())
        return AvatarHandler(self, client)

    async def profile_connected(self, client) -> None:
        state = self._own.setdefault(client.profile, _OwnState())
        state.pep = state.conversion = None
        # in the background: the initial presence must not wait for it
        state.discovery = defer.ensureDeferred(self._discover(client, state))
        state.discovery.addErrback(
            lambda f: log.warning("[%s] avatar discovery failed: %s", client.profile, f.value)
        )

    def profile_disconnected(self, client) -> None:
        self._own.pop(client.profile, None)
        self._known.pop(client.profile, None)
        for table in (self._failed, self._pending):
            for key in [k for k in table if k[0] == client.profile]:
                del table[key]

    async def _discover(self, client, state: _OwnState) -> None:
        info = await self._disco.info(client, client.jid.userhost())
        state.pep = ("pubsub", "pep") in info.identities
        state.conversion = NS_CONVERSION in info.features
        log.debug(
            "[%s] avatars: PEP %s, server conversion %s",
            client.profile,
            state.pep,
            state.conversion,
        )
        if state.conversion or state.hash is not None:
            return
        # XEP-0153: learn our own photo hash from our vCard, then announce it
        vcard = await self._vcard.get_vcard_element(client, None)
        photo = photo_of(vcard)
        new_hash = ""
        if photo is not None and photo[1]:
            data = _decode(photo[1], self.max_size)
            if data is not None:
                new_hash = hashlib.sha1(data).hexdigest()
                try:
                    self.cache.store(new_hash, data)
                except errors.SatError as e:
                    log.warning("[%s] our vCard photo is not cached: %s", client.profile, e)
        if state.hash is None:
            state.hash = new_hash
            await self._set_known(client, client.jid.userhost(), new_hash, persist=True)
            if getattr(client, "presence_sent", False) and client.is_connected():
                # the initial presence went out "not ready": announce the hash now
                await self.host.presence.send_presence(client)

    async def _ensure_discovered(self, client) -> _OwnState:
        state = self._own.setdefault(client.profile, _OwnState())
        if state.pep is None:
            if state.discovery is not None and not state.discovery.called:
                await _wait(state.discovery)
            if state.pep is None:
                info = await self._disco.info(client, client.jid.userhost())
                state.pep = ("pubsub", "pep") in info.identities
                state.conversion = NS_CONVERSION in info.features
        return state

    # --- who has which avatar -------------------------------------------------------------

    async def _set_known(self, client, key: str, avatar_id: str, persist: bool) -> None:
        known = self._known.setdefault(client.profile, {})
        if known.get(key) == avatar_id:
            return
        if key not in known and persist:
            # first news of this contact in this session: no signal if nothing changed
            try:
                stored = await self.host.storage.kv_get(KV_NAMESPACE, key, None, client.profile)
            except Exception:
                stored = None
            if stored == avatar_id and (not avatar_id or self.cache.has(avatar_id)):
                known[key] = avatar_id
                return
        known[key] = avatar_id
        if persist:
            try:
                await self.host.storage.kv_set(KV_NAMESPACE, key, avatar_id, client.profile)
            except Exception as e:
                log.warning("[%s] cannot store the avatar of %s: %s", client.profile, key, e)
        # the cached vCard's PHOTO is stale now
        await self._vcard.invalidate(client, key)
        path = str(self.cache.path_for(avatar_id)) if avatar_id else ""
        self.host.bridge.emit("AvatarUpdated", client.profile, key, path)

    async def avatar_id_of(self, profile: str, jid: str) -> str:
        """The avatar id of ``jid`` ('' if none or unknown); full then bare JID."""
        try:
            entity = jabber_jid.JID(jid)
        except (jabber_jid.InvalidFormat, TypeError):
            raise errors.InvalidArgument(f"invalid JID {jid!r}") from None
        keys = [entity.full()] if entity.resource else []
        keys.append(entity.userhost())
        known = self._known.get(profile, {})
        for key in keys:
            if key in known:
                return known[key]
        try:
            value = await self.host.storage.kv_get(KV_NAMESPACE, entity.userhost(), "", profile)
        except Exception as e:
            log.warning("[%s] cannot read the avatar of %s: %s", profile, jid, e)
            return ""
        return value if isinstance(value, str) else ""

    async def get_path(self, profile: str, jid: str) -> str:
        avatar_id = await self.avatar_id_of(profile, jid)
        if avatar_id and self.cache.has(avatar_id):
            return str(self.cache.path_for(avatar_id))
        return ""

    # --- downloads ----------------------------------------------------------------------------

    def _refuse(self, client, key: str, avatar_id: str, reason) -> None:
        log.warning("[%s] avatar %s of %s refused: %s", client.profile, avatar_id, key, reason)
        failed = self._failed.setdefault((client.profile, key), [])
        if avatar_id not in failed:
            failed.append(avatar_id)
            del failed[:-MAX_FAILED]

    async def _obtain(self, client, key: str, avatar_id: str, fetch, persist: bool) -> None:
        """Make ``avatar_id`` the avatar of ``key``, downloading it with ``fetch`` if needed."""
        if self.cache.has(avatar_id):
            await self._set_known(client, key, avatar_id, persist)
            return
        if avatar_id in self._failed.get((client.profile, key), ()):
            log.debug("[%s] avatar %s of %s already refused", client.profile, avatar_id, key)
            return
        run_key = (client.profile, key)
        running = self._running.get(run_key)
        if running is not None:
            running_id, shared = running
            if running_id == avatar_id:
                await shared.wait()
            else:
                # one download per contact at a time; only the latest announce waits its turn
                self._pending[run_key] = (avatar_id, fetch, persist)
            return

        async def download():
            try:
                data = await fetch()
            except errors.SatError as e:
                log.info("[%s] cannot get the avatar of %s: %s", client.profile, key, e)
                return
            if data is None:
                self._refuse(client, key, avatar_id, "no usable image data")
                return
            try:
                self.cache.store(avatar_id, data)
            except errors.SatError as e:
                self._refuse(client, key, avatar_id, e)
                return
            await self._set_known(client, key, avatar_id, persist)

        def done():
            self._running.pop(run_key, None)
            following = self._pending.pop(run_key, None)
            if following is not None:
                self._start(self._obtain(client, key, following[0], following[1], following[2]))

        shared = SharedCall(defer.ensureDeferred(download()), done)
        if not shared.done:
            self._running[run_key] = (avatar_id, shared)
        await shared.wait()

    async def _fetch_pep_data(self, client, publisher: str, avatar_id: str) -> bytes | None:
        pubsub = domish.Element((NS_PUBSUB, "pubsub"))
        items = pubsub.addElement("items")
        items["node"] = NS_AVATAR_DATA
        items.addElement("item")["id"] = avatar_id
        iq = await self._disco.send_iq(client, publisher, pubsub, what="avatar data request")
        for item in iq.elements(NS_PUBSUB, "pubsub"):
            for items_elt in item.elements(NS_PUBSUB, "items"):
                for item_elt in items_elt.elements(NS_PUBSUB, "item"):
                    if item_elt.getAttribute("id", "").lower() != avatar_id:
                        continue
                    data_elt = next(item_elt.elements(NS_AVATAR_DATA, "data"), None)
                    if data_elt is not None:
                        return _decode("".join(str(data_elt).split()), self.max_size)
        return None

    async def _fetch_vcard_photo(self, client, entity: str) -> bytes | None:
        vcard = await self._vcard.get_vcard_element(client, entity)
        photo = photo_of(vcard)
        if photo is None or not photo[1]:
            return None
        return _decode(photo[1], self.max_size)

    # --- XEP-0084 notifications ------------------------------------------------------------

    def on_metadata_event(self, message: domish.Element, client) -> None:
        try:
            self._handle_metadata_event(client, message)
        except Exception:
            log.exception("[%s] avatar notification handling failed", client.profile)

    def _handle_metadata_event(self, client, message: domish.Element) -> None:
        try:
            publisher = jabber_jid.JID(message.getAttribute("from", client.jid.userhost()))
        except jabber_jid.InvalidFormat:
            return
        if publisher.resource is not None or publisher.user is None:
            log.info(
                "[%s] avatar notification from %s ignored (not a PEP service)",
                client.profile,
                publisher.full(),
            )
            return
        key = publisher.userhost()
        if not any(c.name == "body" for c in message.elements()):
            message.handled = True  # a pure notification: nothing for the message pipeline
        event = next(message.elements(NS_PUBSUB_EVENT, "event"), None)
        items = (
            next(
                (
                    i
                    for i in event.elements(NS_PUBSUB_EVENT, "items")
                    if i.getAttribute("node") == NS_AVATAR_METADATA
                ),
                None,
            )
            if event is not None
            else None
        )
        if items is None:
            return
        children = [c for c in items.elements() if c.uri == NS_PUBSUB_EVENT]
        if not children:
            return
        last = children[-1]
        if last.name == "retract":
            self._start(self._set_known(client, key, "", persist=True))
            return
        if last.name != "item":
            return
        metadata = next(last.elements(NS_AVATAR_METADATA, "metadata"), None)
        if metadata is None:
            return
        infos = list(metadata.elements(NS_AVATAR_METADATA, "info"))
        if not infos:
            # the publisher disabled its avatar
            self._start(self._set_known(client, key, "", persist=True))
            return
        candidates = [i for i in infos if not i.getAttribute("url")]
        if not candidates:
            log.info("[%s] avatar of %s only available by URL: not fetched", client.profile, key)
            return
        info = next((i for i in candidates if i.getAttribute("type") == "image/png"), candidates[0])
        avatar_id = normalise_id(info.getAttribute("id"))
        if avatar_id is None:
            log.warning(
                "[%s] avatar of %s refused: invalid id %r",
                client.profile,
                key,
                (info.getAttribute("id") or "")[:80],
            )
            return
        try:
            size = int(info.getAttribute("bytes", "0"))
        except ValueError:
            size = 0
        if size > self.max_size:
            self._refuse(
                client, key, avatar_id, f"announced size {size} over {self.max_size} bytes"
            )
            return
        if key == client.jid.userhost():
            state = self._own.get(client.profile)
            if state is not None:
                state.hash = avatar_id
        self._start(
            self._obtain(
                client,
                key,
                avatar_id,
                lambda: self._fetch_pep_data(client, key, avatar_id),
                persist=True,
            )
        )

    @staticmethod
    def _start(coro) -> None:
        d = defer.ensureDeferred(coro)
        d.addErrback(lambda f: log.error("avatar task failed: %s", f.getTraceback()))

    # --- XEP-0153 in presence -----------------------------------------------------------------

    def _on_presence_received(self, client, elt: domish.Element) -> None:
        if elt.getAttribute("type") not in (None, "", "available"):
            return None
        update = next(elt.elements(NS_VCARD_UPDATE, "x"), None)
        if update is None:
            return None
        photo = next(update.elements(NS_VCARD_UPDATE, "photo"), None)
        if photo is None:
            return None  # the sender is not ready to tell
        try:
            sender = jabber_jid.JID(elt["from"])
        except (KeyError, jabber_jid.InvalidFormat):
            return None
        occupant = any(True for _ in elt.elements(NS_MUC_USER, "x"))
        if occupant:
            key = sender.full()
        else:
            key = sender.userhost()
        text = str(photo).strip()
        if not text:
            if sender != client.jid:
                self._start(self._set_known(client, key, "", persist=not occupant))
            return None
        avatar_id = normalise_id(text)
        if avatar_id is None:
            log.warning(
                "[%s] invalid avatar hash from %s ignored: %r", client.profile, key, text[:80]
            )
            return None
        if self._known.get(client.profile, {}).get(key) == avatar_id and self.cache.has(avatar_id):
            return None
        target = sender.full() if occupant else sender.userhost()

        async def fetch():
            await self._vcard.invalidate(client, target)
            return await self._fetch_vcard_photo(client, target)

        self._start(self._obtain(client, key, avatar_id, fetch, persist=not occupant))
        return None

    def _on_presence_send(self, client, elt: domish.Element) -> None:
        if elt.getAttribute("type") not in (None, ""):
            return None
        if any(True for _ in elt.elements(NS_VCARD_UPDATE, "x")):
            return None
        state = self._own.get(client.profile)
        if state is None or state.conversion:
            # XEP-0398: the server adds the hash itself
            return None
        update = elt.addElement((NS_VCARD_UPDATE, "x"))
        if state.hash is not None:
            update.addElement("photo", content=state.hash)
        return None

    # --- our avatar --------------------------------------------------------------------------

    def read_image(self, file_path: str) -> tuple[bytes, str, int | None, int | None]:
        """Read and check an image file: (data, MIME type, width, height)."""
        if not isinstance(file_path, str) or not file_path:
            raise errors.InvalidArgument("no file given")
        path = Path(file_path)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise errors.NotFound(f"cannot read {file_path}: {e.strerror}") from None
        if not path.is_file():
            raise errors.InvalidArgument(f"{file_path} is not a file")
        if size > self.max_size:
            raise errors.InvalidArgument(
                f"{file_path} is {size} bytes: avatars are limited to {self.max_size} bytes"
            )
        try:
            data = path.read_bytes()
        except OSError as e:
            raise errors.NotFound(f"cannot read {file_path}: {e.strerror}") from None
        if len(data) > self.max_size or not data:
            raise errors.InvalidArgument(f"{file_path} is empty or too big")
        mime, width, height = image_info(data)
        return data, mime, width, height

    async def set_avatar(self, client, file_path: str) -> str:
        data, mime, width, height = self.read_image(file_path)
        avatar_id = hashlib.sha1(data).hexdigest()
        state = await self._ensure_discovered(client)
        if state.pep and mime != "image/png":
            # XEP-0084: the data node holds the image/png version, which must exist
            raise errors.InvalidArgument(
                f"avatars are published as PNG images (XEP-0084); {file_path} is {mime}"
            )
        self.cache.store(avatar_id, data)
        b64 = base64.b64encode(data).decode()
        if state.pep:
            await self._publish(client, NS_AVATAR_DATA, avatar_id, _data_payload(b64))
            info = {"id": avatar_id, "bytes": str(len(data)), "type": mime}
            if width and height:
                info["width"], info["height"] = str(width), str(height)
            await self._publish(client, NS_AVATAR_METADATA, avatar_id, _metadata_payload(info))
        if not state.pep or not state.conversion:
            # XEP-0153: the vCard holds the photo, presence announces its hash
            current = await self._vcard.get_vcard_element(client, None)
            await self._vcard.set_vcard_element(client, _with_photo(current, mime, b64))
        state.hash = avatar_id
        await self._vcard.invalidate(client, client.jid.userhost())
        await self._set_known(client, client.jid.userhost(), avatar_id, persist=True)
        await self.host.presence.send_presence(client)
        return avatar_id

    async def _publish(self, client, node: str, item_id: str, payload: domish.Element) -> None:
        pubsub = domish.Element((NS_PUBSUB, "pubsub"))
        publish = pubsub.addElement("publish")
        publish["node"] = node
        item = publish.addElement("item")
        item["id"] = item_id
        item.addChild(payload)
        await self._disco.send_iq(
            client, client.jid.userhost(), pubsub, what=f"publication on {node}", iq_type="set"
        )

    # --- bridge ---------------------------------------------------------------------------------

    def _register_bridge(self) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None:
            return
        P = ("profile", "s", "profile name (empty: the default profile)")

        resolve = self.resolve_profile

        async def avatar_get(profile, jid):
            profile = await resolve(profile)
            if not jid:
                jid = await self.host.params.get("connection", "jid", profile)
            return await self.get_path(profile, jid)

        async def avatar_set(profile, file_path):
            return await self.set_avatar(self.host.get_client(await resolve(profile)), file_path)

        bridge.add_method(
            "AvatarGet",
            avatar_get,
            args=[P, ("jid", "s", "contact (bare JID, or a room occupant's full JID); empty: us")],
            out=("s", "path of the cached image, or '' when none is known"),
            doc="A contact's avatar, from the local cache (files named by their SHA-1)",
            interface="plugin",
        )
        bridge.add_method(
            "AvatarSet",
            avatar_set,
            args=[
                P,
                (
                    "file_path",
                    "s",
                    "PNG image (JPEG, GIF or WebP too when the server has no PEP), at most "
                    "[xep_0084] max_size bytes",
                ),
            ],
            out=("s", "the avatar id (SHA-1 of the image, hex)"),
            doc="Publish our avatar (XEP-0084, with vCard/presence compatibility XEP-0153 "
            "unless the server converts by itself, XEP-0398)",
            interface="plugin",
        )
        bridge.add_signal(
            "AvatarUpdated",
            args=[
                P,
                ("jid", "s", "contact (bare JID, or a room occupant's full JID)"),
                ("path", "s", "path of the cached image; '' when the contact has no avatar"),
            ],
            doc="A contact's (or our) avatar changed",
            interface="plugin",
        )


# --- payloads --------------------------------------------------------------------------------


def _decode(b64_text: str, max_size: int) -> bytes | None:
    if not b64_text or len(b64_text) > (max_size * 4) // 3 + 8:
        return None
    try:
        data = base64.b64decode(b64_text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if len(data) <= max_size else None


def _data_payload(b64: str) -> domish.Element:
    elt = domish.Element((NS_AVATAR_DATA, "data"))
    elt.addContent(b64)
    return elt


def _metadata_payload(info: dict) -> domish.Element:
    elt = domish.Element((NS_AVATAR_METADATA, "metadata"))
    info_elt = elt.addElement("info")
    for key, value in info.items():
        info_elt[key] = value
    return elt


def _with_photo(current: domish.Element | None, mime: str, b64: str) -> domish.Element:
    new = domish.Element((NS_VCARD, "vCard"))
    for child in current.elements() if current is not None else ():
        if child.name != "PHOTO":
            new.addChild(child)
    photo = new.addElement("PHOTO")
    photo.addElement("TYPE", content=mime)
    photo.addElement("BINVAL", content=b64)
    return new


async def _wait(d: defer.Deferred):
    waiter = defer.Deferred()

    def fire(result):
        waiter.callback(None)
        return result

    d.addBoth(fire)
    await waiter


PLUGIN = AvatarPlugin
