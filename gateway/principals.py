"""Who a caller is: the tenant its key belongs to, or an admin key acting for any tenant.

Keys come from two places: ``GENQUEUE_API_KEYS`` (each a key of the ``default`` tenant,
compared in constant time in this process) and the keys stored in Redis
(``producer/api_keys.py``: looked up by digest at every request, so a created or revoked key
takes effect at once on every gateway).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header
from starlette.requests import Request

from genqueue.gateway.errors import TENANT_HEADER
from genqueue.producer.api_keys import KeyOwner
from genqueue.producer.keys import DEFAULT_TENANT
from genqueue.producer.tenants import check_tenant_name

#: The ASGI scope entry where the auth middleware leaves the caller's :class:`Principal`.
PRINCIPAL_SCOPE_KEY = "genqueue.principal"

#: Finds the owner of a presented key among the keys stored in Redis (None: no such key).
Lookup = Callable[[bytes], Awaitable[KeyOwner | None]]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a tenant's key (``tenant``), or an admin key (``admin``;
    ``tenant`` None). ``key_id`` names the key in logs (never the key itself)."""

    tenant: str | None
    admin: bool
    key_id: str

    @classmethod
    def of(cls, owner: KeyOwner) -> Principal:
        return cls(tenant=None if owner.admin else owner.tenant, admin=owner.admin, key_id=owner.id)

    def acting_for(self, asked: str | None) -> str | None:
        """The tenant this request acts for. A tenant's key: always its own (a header naming
        another is ignored, never honoured). An admin key: the tenant it names, else None
        (every tenant's requests; a create then goes to ``default``)."""
        if not self.admin:
            return self.tenant or DEFAULT_TENANT
        return None if asked is None else check_tenant_name(asked)


#: A key from ``GENQUEUE_API_KEYS``: the ``default`` tenant's.
ENV_KEY = Principal(tenant=DEFAULT_TENANT, admin=False, key_id="env")
#: Every caller of a gateway that allows anonymous access and got no key (development only).
ANONYMOUS_CALLER = Principal(tenant=DEFAULT_TENANT, admin=False, key_id="anonymous")


def principal_of(request: Request) -> Principal:
    """The request's caller (the auth middleware put it there; a route cannot run without)."""
    found: Principal = request.scope[PRINCIPAL_SCOPE_KEY]
    return found


def acting_tenant(
    request: Request,
    tenant_header: Annotated[
        str | None,
        Header(
            alias=TENANT_HEADER,
            description="Admin keys only: act for this tenant (create as it, see only its "
            "generations and stats). Ignored for a tenant's key, which always acts for its "
            "own tenant.",
        ),
    ] = None,
) -> str | None:
    """The tenant the request acts for (see :meth:`Principal.acting_for`)."""
    return principal_of(request).acting_for(tenant_header)
