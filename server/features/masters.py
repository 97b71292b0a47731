"""Masters: what a master does about itself (moving to a new key). Enrolment and removal are the hub
operator's (``server/admin.py``, ``crc-hub``)."""

from __future__ import annotations

import logging

from protocol import Envelope, ErrorCode, ProtocolError, PublicKey
from protocol.messages import MasterRekey, Response, master_rekey_payload
from server.backplane.base import BROADCAST_CHANNEL
from server.core import stores
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.peers import DropMaster
from server.store import StoreConflict

log = logging.getLogger(__name__)
handlers = HandlerTable()


@handlers.on(MasterRekey)
async def master_rekey(hub: Hub, conn: Connection, env: Envelope, body: MasterRekey) -> None:
    """Move this master to a new key (proved by the new key's signature); its other sessions are closed, and
    this one should be too (the SDK reconnects with the new key)."""
    try:
        new_key = PublicKey.from_text(body.public_key)
        new_key.verify(body.proof, master_rekey_payload(conn.id, new_key.to_text()))
    except ProtocolError as exc:
        raise RequestError(exc.code, f"the new key's proof does not hold: {exc.message}") from None
    try:
        record = await stores.masters(hub).rekey_master(conn.id, new_key.to_text())
    except StoreConflict:
        raise RequestError(ErrorCode.ALREADY_EXISTS, "that key is enrolled already") from None
    if record is None:
        raise RequestError(ErrorCode.REVOKED, "this master is no longer enrolled on the hub")
    log.info("master %s (%s) moved to a new key: now %s", record.name, conn.id, record.id)
    conn.send(Response({"master": record.id, "name": record.name}), reply_to=env.id)
    for other in [c for c in hub.sessions.masters.get(conn.id, set()) if c is not conn]:
        await other.close(ErrorCode.REVOKED, "this master moved to a new key")
    hub.backplane.publish(BROADCAST_CHANNEL, DropMaster(conn.id))


FEATURE = Feature("masters", handlers)
