#!/usr/bin/env python3
"""A TCP relay on 127.0.0.1 that adds latency, not a bandwidth cap.

Every chunk read from one side is held for DELAY milliseconds and then written to the
other side; reading goes on meanwhile, so many chunks are in flight at once, as on a long
link. Used by scripts/bench-sftp.sh (this kernel has no netem qdisc).

usage: delay_relay.py LISTEN_PORT TARGET_PORT DELAY_MS
"""

import asyncio
import collections
import sys
import time


async def pump(reader, writer, delay):
    queue = collections.deque()
    more = asyncio.Event()
    done = False

    async def read_side():
        nonlocal done
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                queue.append((time.monotonic() + delay, data))
                more.set()
        except (ConnectionError, OSError):
            pass
        finally:
            done = True
            more.set()

    async def write_side():
        try:
            while True:
                while not queue:
                    if done:
                        return
                    more.clear()
                    await more.wait()
                due, data = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    await asyncio.gather(read_side(), write_side())


async def main():
    listen, target, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    delay = delay_ms / 1000.0

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, delay),
            pump(server_reader, client_writer, delay),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen, limit=1 << 20)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
