"""Client-side clipping for client-level DP: Flower's clipping mods, chosen per run.

With ``privacy.client-dp = client-fixed`` or ``client-adaptive`` the coordinator's Flower
wrapper sends the clipping norm with every training message and expects the hospital to
clip its model update before it leaves (so the coordinator never sees an unclipped
update). Flower's ``fixedclipping_mod`` / ``adaptiveclipping_mod`` do the clipping; a
ClientApp's mods are fixed when it is built, so :func:`client_clipping_mod` reads the
run's config and delegates to the right one, or to nothing.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from fedward.client.hospital.run_cache import run_spec
from fedward.common.choices import ClientDp
from fedward.common.errors import FedwardError


def client_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Clip this hospital's update when the run asks for client-side clipping (train messages).

    An invalid run config is left to the train handler, which replies with its error.
    """
    try:
        mode = run_spec(context).config.privacy.client_dp
    except FedwardError:
        return call_next(msg, context)
    if mode is ClientDp.CLIENT_FIXED:
        return fixedclipping_mod(msg, context, call_next)
    if mode is ClientDp.CLIENT_ADAPTIVE:
        return adaptiveclipping_mod(msg, context, call_next)
    return call_next(msg, context)
