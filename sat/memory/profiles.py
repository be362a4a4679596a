"""Profiles: one per XMPP account, with their secrets kept encrypted at rest.

Each profile has a random *personal key*, stored wrapped with a key derived
from the profile password (see :mod:`sat.memory.crypto`). Secrets such as the
XMPP password are encrypted with the personal key and bound (AES-GCM
associated data) to their profile and name. A profile is *unlocked* when its
personal key is in memory: at creation, when a frontend connects it with the
profile password, or at start for autoconnecting profiles whose profile
password is empty. Unlocked keys stay in memory so reconnections need no one.
"""

from __future__ import annotations

import logging
import re

from twisted.internet import threads

from sat.core import errors
from sat.memory.crypto import PersonalKey, SecretsFilter, associated_data

log = logging.getLogger(__name__)

PROFILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
PERSONAL_KEY = "personal_key"
DEFAULT_PROFILE_PARAM = ("general", "default_profile")


def check_profile_name(name: str) -> str:
    if not isinstance(name, str) or not PROFILE_NAME_RE.match(name):
        raise errors.InvalidArgument(
            f"invalid profile name {name!r}: use 1-64 letters, digits, '.', '_', '-', '@', "
            "starting with a letter or digit"
        )
    return name


class ProfileManager:
    def __init__(self, storage):
        self.storage = storage
        self._keys: dict[str, PersonalKey] = {}
        # names known to exist: most bridge calls name a profile, checking it in the
        # database each time cost a thread round trip per call (the storage is only
        # changed through this manager, which keeps the set right)
        self._existing: set[str] = set()

    async def create(self, name: str, profile_password: str = "") -> None:
        check_profile_name(name)
        if await self.storage.profile_exists(name):
            raise errors.AlreadyExists(f"profile {name!r} already exists")
        SecretsFilter.register(profile_password)
        # scrypt costs tens of milliseconds: keep it off the reactor thread
        key, wrapped = await threads.deferToThread(PersonalKey.create, profile_password)
        await self.storage.profile_create(name)
        try:
            await self.storage.secret_set(name, PERSONAL_KEY, wrapped)
        except Exception:
            await self.storage.profile_delete(name)
            raise
        self._keys[name] = key
        self._existing.add(name)
        if not await self.get_default():
            await self.set_default(name)
        log.info("profile %s created", name)

    async def delete(self, name: str) -> None:
        await self.ensure_exists(name)
        self._existing.discard(name)
        await self.storage.profile_delete(name)
        self._keys.pop(name, None)
        if await self.get_default() == name:
            remaining = await self.list()
            await self.storage.param_set(*DEFAULT_PROFILE_PARAM, remaining[0] if remaining else "")
        log.info("profile %s deleted", name)

    async def list(self) -> list[str]:
        return await self.storage.profiles_list()

    async def exists(self, name: str) -> bool:
        if name in self._existing:
            return True
        if await self.storage.profile_exists(name):
            self._existing.add(name)
            return True
        return False

    async def ensure_exists(self, name: str) -> None:
        if not isinstance(name, str) or not await self.exists(name):
            raise errors.NotFound(f"no profile named {name!r}")

    async def get_default(self) -> str:
        value = await self.storage.param_get(*DEFAULT_PROFILE_PARAM)
        return value or ""

    async def set_default(self, name: str) -> None:
        await self.ensure_exists(name)
        await self.storage.param_set(*DEFAULT_PROFILE_PARAM, name)

    async def resolve(self, name: str | None) -> str:
        """The profile to act on: ``name``, or the default one when empty."""
        if not name or name == "@DEFAULT@":
            name = await self.get_default()
            if not name:
                raise errors.NotFound("no profile given and no default profile set")
        await self.ensure_exists(name)
        return name

    # --- unlocking and secrets ------------------------------------------------

    def is_unlocked(self, name: str) -> bool:
        return name in self._keys

    async def unlock(self, name: str, profile_password: str = "") -> None:
        """Open the profile's personal key; PermissionDenied on a wrong password."""
        await self.ensure_exists(name)
        SecretsFilter.register(profile_password)
        wrapped = await self.storage.secret_get(name, PERSONAL_KEY)
        if wrapped is None:
            raise errors.StorageError(f"profile {name!r} has no personal key")
        # checked even when already unlocked: a frontend must not connect without it
        key = await threads.deferToThread(PersonalKey.unwrap, wrapped, profile_password)
        self._keys.setdefault(name, key)

    def lock(self, name: str) -> None:
        self._keys.pop(name, None)

    async def change_profile_password(self, name: str, old: str, new: str) -> None:
        await self.ensure_exists(name)
        wrapped = await self.storage.secret_get(name, PERSONAL_KEY)
        SecretsFilter.register(old)
        SecretsFilter.register(new)
        key = await threads.deferToThread(PersonalKey.unwrap, wrapped, old)
        rewrapped = await threads.deferToThread(key.rewrap, new)
        await self.storage.secret_set(name, PERSONAL_KEY, rewrapped)
        self._keys[name] = key

    def _key(self, name: str) -> PersonalKey:
        try:
            return self._keys[name]
        except KeyError:
            raise errors.PermissionDenied(
                f"profile {name!r} is locked: connect it with its profile password first"
            ) from None

    async def set_secret(self, name: str, secret_name: str, value: str) -> None:
        await self.ensure_exists(name)
        SecretsFilter.register(value)
        blob = self._key(name).encrypt(
            value.encode(), associated=associated_data(name, secret_name)
        )
        await self.storage.secret_set(name, secret_name, blob)

    async def get_secret(self, name: str, secret_name: str) -> str:
        key = self._key(name)
        blob = await self.storage.secret_get(name, secret_name)
        if blob is None:
            return ""
        value = key.decrypt(blob, associated=associated_data(name, secret_name)).decode()
        SecretsFilter.register(value)
        return value
