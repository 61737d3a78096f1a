"""Following changes other replicas announce on a Redis channel.

Subscribed, the follower takes each announced change (``take``, with the
message's text) and, before the first and whenever nothing was announced
for ``resync_seconds``, everything (``take_all``): an announcement sent
while the subscription was reconnecting is not lost for long. Redis gone,
or a change that cannot be taken up, is logged and followed again a second
later; only cancellation ends it.

Event-loop only; the Redis client is redis-py's asyncio one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aredis

log = logging.getLogger("turnout.routing")


async def follow(
    client: aredis.Redis,
    channel: str,
    take: Callable[[str], Awaitable[None]],
    take_all: Callable[[], Awaitable[None]],
    resync_seconds: float,
    what: str,
) -> None:
    """Follow ``channel`` until cancelled; ``what`` names the state in the log."""
    while True:
        try:
            async with client.pubsub() as subscription:
                await subscription.subscribe(channel)
                await take_all()  # what changed before the subscription
                while True:
                    message = await subscription.get_message(ignore_subscribe_messages=True, timeout=resync_seconds)
                    if message is None:
                        await take_all()
                    else:
                        await take(str(message["data"]))
        except asyncio.CancelledError:
            raise
        except (redis.RedisError, OSError) as exc:
            log.warning("%s: Redis unreachable (%s); following again in 1 s", what, exc)
            await asyncio.sleep(1.0)
        except Exception:  # a state that cannot be read must not end the following
            log.exception("%s: following failed; again in 1 s", what)
            await asyncio.sleep(1.0)
