"""The client's protocol, without I/O: shared by the threaded and the asyncio client.

Three pieces, none of which owns a socket, a thread, a clock or an event loop:

* **Calls** (``append(...)``, ``read_stream(...)``, ...): build a request (validated with the
  same rules as the node, ``core.messages``) together with the decoder of its reply.
* ``ProtocolCore``: one connection's bookkeeping. ``start`` gives a request a correlation id,
  a deadline and its wire frame; ``receive`` turns a frame from the node into one completion
  (a typed result or a typed error for a waiting handle) or one subscription push;
  ``expire`` fails what ran past its deadline (``WriteTimeout`` for writes, else
  ``OperationTimeout``). Handles and inboxes are opaque: each shell uses its own futures.
* ``SubscriptionState``: the consumer side of a subscription: buffer, caught-up marker, end,
  and credit (granted back as the user consumes, so at most ``window`` events are ever in
  flight or buffered).

And the **flows** — generators that yield effects (``Request``, ``Probe``, ``Resolve``,
``Sleep``, ``Connect``, ``Rediscover``) which a shell performs and sends (or throws) back:
discovery of a node (gossip seeds, DNS or one direct node; ``choose_member``), the retry
policy of one operation (``retry_step``, ``perform``), re-discovery after a failure
(``reconnect``) and the resumption of a subscription on another node (``resubscribe``,
``resume_from``). ``ClusterState`` is what both flavours share about the cluster: the current
node and connection generation, the stats and the notices given to callbacks
(docs/client.md, "Clusters, failover and retries").

Modules by concern: ``_calls`` (requests and replies), ``_protocol`` (one connection),
``_subscription`` (subscription state), ``_cluster`` (shared state and notices), ``_flows``
(discovery and retry flows). This module is the one name both shells import.
"""

from __future__ import annotations

# The pieces live in modules by concern; this module is the one name both shells import.
from esnode.client._calls import (  # noqa: F401
    DEFAULT_SUBSCRIPTION_WINDOW,
    Call,
    GroupEvent,
    Subscribed,
    append,
    cluster_info,
    connect_group,
    create_group,
    delete,
    delete_group,
    get_metadata,
    group_ack,
    group_info,
    group_nack,
    leave_group,
    list_groups,
    ping,
    read_all,
    read_stream,
    replay_parked,
    set_metadata,
    subscribe,
    update_group,
)
from esnode.client._cluster import (  # noqa: F401
    ClientStats,
    ClusterState,
    DiscoveryFailed,
    NodeChanged,
    Notice,
    Reconnected,
    Resubscribed,
    Resubscribing,
    Retrying,
)
from esnode.client._flows import (  # noqa: F401
    BACKOFF_CAP,
    REFUSALS,
    RESUBSCRIBE_BACKOFF_CAP,
    RETRYABLE,
    SERVING_STATES,
    Connect,
    Flow,
    Probe,
    ProbeExchange,
    Rediscover,
    Request,
    Resolve,
    RetryStep,
    Sleep,
    backoff,
    choose_member,
    discover,
    next_page,
    open_subscription,
    page_size,
    perform,
    reconnect,
    resubscribe,
    resume_from,
    retry_step,
)
from esnode.client._groups import (  # noqa: F401
    DEFAULT_GROUP_WINDOW,
    GroupState,
    open_group,
    positions_of,
    rejoin,
)
from esnode.client._protocol import (  # noqa: F401
    CAUGHT_UP,
    CHECKPOINT,
    CLOSED,
    DROPPED,
    ERROR,
    EVENTS,
    GROUP_EVENTS,
    LOST,
    OK,
    ProtocolCore,
)
from esnode.client._subscription import (  # noqa: F401
    END,
    RESUMABLE_DROPS,
    RESUME,
    SubscriptionState,
)
