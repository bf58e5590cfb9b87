"""Who may write what in etcd: one role per kind of writer (etcd's users and roles).

    operators  (user ``calico-operator``)    read and write everything under /calico/
    each host  (user ``calico-host.<node>``) read everything under /calico/v1/; write only
               its own node record, endpoints, block affinities and Docker network records,
               and the shared IPAM blocks and handles

IPAM blocks and handles are shared: a host borrows addresses from other hosts' blocks, so
every host may write every block (a compromised host could disturb IPAM, never policy).
Profiles, pools, BGP settings and peers are the operators' alone.

etcd maps a client certificate's common name to a user only for gRPC clients; its JSON
gateway (which this project speaks) refuses such a certificate once authentication is on.
So clients show a certificate without a common name (``--client-cert-auth``: no certificate,
no access) and authenticate as their user with a password (a token per session).

``plan`` compares what etcd has with ``wanted``; ``apply`` makes it so, idempotently, and
turns authentication on last (the users exist before they are needed).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from .. import keys
from ..errors import DatastoreError, ValidationError
from ..model import validate_hostname

ROOT_USER = "root"
OPERATOR_USER = "calico-operator"
HOST_USER_PREFIX = "calico-host."
READ, READWRITE = "READ", "READWRITE"


def host_user(node: str) -> str:
    return HOST_USER_PREFIX + validate_hostname("hosts", node)


@dataclass(frozen=True, order=True)
class Permission:
    """``kind`` (READ or READWRITE) on ``key``, or on every key under it (``prefix``)."""

    key: str
    prefix: bool
    kind: str

    def range_end(self) -> str:
        if not self.prefix:
            return ""
        return self.key[:-1] + chr(ord(self.key[-1]) + 1)

    def __str__(self) -> str:
        return f"{self.kind.lower()} {self.key}{'*' if self.prefix else ''}"


def operator_permissions() -> list[Permission]:
    return [Permission("/calico/", True, READWRITE)]


def host_permissions(node: str) -> list[Permission]:
    validate_hostname("hosts", node)
    return sorted([
        Permission(keys.ROOT, True, READ),
        Permission(keys.node(node), False, READWRITE),
        Permission(keys.NODES_GUARD, False, READWRITE),
        Permission(keys.endpoints(node), True, READWRITE),
        Permission(keys.interface_index(node), False, READWRITE),
        Permission(keys.affinities(node), True, READWRITE),
        Permission(keys.docker_networks(node), True, READWRITE),
        Permission(keys.BLOCKS, True, READWRITE),
        Permission(keys.HANDLES, True, READWRITE),
    ])


def wanted_roles(hosts: list[str]) -> dict[str, list[Permission]]:
    """Each user's role (a role of the same name) and its permissions."""
    roles = {OPERATOR_USER: operator_permissions()}
    roles.update({host_user(h): host_permissions(h) for h in hosts})
    return roles


@dataclass
class AccessPlan:
    users_added: list[str] = field(default_factory=list)
    passwords_set: list[str] = field(default_factory=list)
    users_removed: list[str] = field(default_factory=list)
    granted: dict[str, list[str]] = field(default_factory=dict)
    revoked: dict[str, list[str]] = field(default_factory=dict)
    enable: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.users_added or self.passwords_set or self.users_removed
                    or self.granted or self.revoked or self.enable)

    def to_dict(self) -> dict[str, Any]:
        return {"users_added": self.users_added, "passwords_set": self.passwords_set,
                "users_removed": self.users_removed, "granted": self.granted,
                "revoked": self.revoked, "auth_enabled_now": self.enable}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode() if text else ""


class Access:
    """etcd's users and roles through its JSON gateway, as the ``root`` user."""

    def __init__(self, store: Any, root_password: str) -> None:
        if not root_password:
            raise ValidationError("root_password", "missing; etcd's root user needs one")
        self.store = store  # an EtcdDatastore
        self.root_password = root_password
        # It acts as root only: a user the store was opened with (calico.conf's etcd_user on
        # a Calico host, where the module runs) is dropped, or enabled() would take that
        # user's successful read for authentication being off (and plan() would ask for it
        # to be turned on, then fail to list the users as that user).
        self._anonymous()

    # -- reading

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.store._post(path, body)

    def enabled(self) -> bool:
        """Whether authentication is on (an anonymous read is then refused)."""
        if self.store.user == ROOT_USER:
            return True  # logged in: it was on
        try:
            self.store.revision()
        except DatastoreError as exc:
            if "authentication is on" in str(exc) or "user name is empty" in str(exc):
                return True
            raise
        return False

    def _anonymous(self) -> None:
        self.store.user, self.store._password = None, None
        self.store._auth_off = False
        for client in self.store._clients:
            client.session.headers.pop("Authorization", None)

    def _login(self) -> None:
        """Act as root from now on (once authentication is on, nothing else may)."""
        self.store.user, self.store._password = ROOT_USER, self.root_password
        for client in self.store._clients:
            client.session.headers.pop("Authorization", None)

    def users(self) -> list[str]:
        return list(self._post("/auth/user/list", {}).get("users", []))

    def user_roles(self, user: str) -> list[str]:
        return list(self._post("/auth/user/get", {"name": user}).get("roles", []))

    def role_permissions(self, role: str) -> list[Permission]:
        perms = self._post("/auth/role/get", {"role": role}).get("perm", [])
        out = []
        for perm in perms:
            key, end = _unb64(perm.get("key", "")), _unb64(perm.get("range_end", ""))
            prefix = bool(end)
            out.append(Permission(key, prefix, perm.get("permType", READ)))
        return sorted(out)

    def password_works(self, user: str, password: str) -> bool:
        try:
            self._post("/auth/authenticate", {"name": user, "password": password})
        except DatastoreError as exc:
            if "authentication failed" in str(exc) or "user name not found" in str(exc) \
                    or "invalid user" in str(exc):
                return False
            if "authentication is not enabled" in str(exc):
                return True  # cannot be checked yet: set when authentication goes on
            raise
        return True

    # -- planning and applying

    def plan(self, roles: dict[str, list[Permission]], passwords: dict[str, str]
             ) -> AccessPlan:
        """What must change so that etcd has exactly ``roles`` (plus root), each user with
        its password from ``passwords``."""
        on = self.enabled()
        if on:
            self._login()
        plan = AccessPlan(enable=not on)
        present = set(self.users())
        for user in [ROOT_USER, *sorted(roles)]:
            password = self.root_password if user == ROOT_USER else passwords.get(user)
            if not password:
                raise ValidationError("passwords", f"no password for etcd user {user}")
            if user not in present:
                plan.users_added.append(user)
            elif on and not self.password_works(user, password):
                plan.passwords_set.append(user)
        for user, wanted in sorted(roles.items()):
            have = [] if user not in present else self.role_permissions(user)
            grant = [p for p in wanted if p not in have]
            revoke = [p for p in have if p not in wanted]
            if grant:
                plan.granted[user] = [str(p) for p in grant]
            if revoke:
                plan.revoked[user] = [str(p) for p in revoke]
        plan.users_removed = sorted(u for u in present if u not in roles and u != ROOT_USER
                                    and (u.startswith(HOST_USER_PREFIX)
                                         or u == OPERATOR_USER))
        return plan

    def apply(self, roles: dict[str, list[Permission]], passwords: dict[str, str]
              ) -> AccessPlan:
        plan = self.plan(roles, passwords)
        for user in plan.users_added:
            password = self.root_password if user == ROOT_USER else passwords[user]
            self._post("/auth/user/add", {"name": user, "password": password})
            if user == ROOT_USER:
                self._post("/auth/user/grant", {"user": ROOT_USER, "role": "root"})
        for user in plan.passwords_set:
            password = self.root_password if user == ROOT_USER else passwords[user]
            self._post("/auth/user/changepw", {"name": user, "password": password})
        for user, wanted in sorted(roles.items()):
            if user in plan.users_added:
                self._post("/auth/role/add", {"name": user})
            if user in plan.granted or user in plan.revoked:
                have = [] if user in plan.users_added else self.role_permissions(user)
                for perm in wanted:
                    if perm not in have:
                        self._post("/auth/role/grant", {"name": user, "perm": {
                            "permType": perm.kind, "key": _b64(perm.key),
                            "range_end": _b64(perm.range_end())}})
                for perm in have:
                    if perm not in wanted:
                        self._post("/auth/role/revoke", {
                            "role": user, "key": _b64(perm.key),
                            "range_end": _b64(perm.range_end())})
            if user not in self.user_roles(user):
                self._post("/auth/user/grant", {"user": user, "role": user})
        for user in plan.users_removed:
            self._post("/auth/user/delete", {"name": user})
            try:
                self._post("/auth/role/delete", {"role": user})
            except DatastoreError:
                pass  # a user without its own role
        if plan.enable:
            self._post("/auth/enable", {})
        return plan


def dumps_plan(plan: AccessPlan) -> str:
    return json.dumps(plan.to_dict(), sort_keys=True)
