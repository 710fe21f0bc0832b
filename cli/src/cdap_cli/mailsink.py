"""A local SMTP sink: every message received on 127.0.0.1:1025 becomes an `.eml` file in a folder.

It stands in for the CAF's mail relay in the local stack; tests read activation links from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from email import message_from_bytes, policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from cdap_shared.envelope import new_event_id


class EmlWriter:
    """aiosmtpd handler that writes each message to `<dir>/<uuid7>.eml` (names sort by arrival).

    Like a mailbox, it keeps one copy per Message-ID: the services send at least once (a crash between
    the SMTP answer and the commit repeats a mail) with a stable Message-ID, and a reader sees it once.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: set[str] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        message_id = BytesHeaderParser().parsebytes(content).get("Message-ID")
        if message_id:
            if message_id in self.seen:
                return "250 Message accepted for delivery (a repeat: kept once)"
            self.seen.add(message_id)
        tmp = self.folder / f".{new_event_id()}.tmp"
        tmp.write_bytes(content)
        tmp.rename(tmp.with_name(tmp.name[1:].replace(".tmp", ".eml")))
        return "250 Message accepted for delivery"


def advertisement(port: int) -> Path:
    """The machine-wide file naming the folder the sink on `port` writes to."""
    return Path(tempfile.gettempdir()) / f"cdap-mailsink-{port}.json"


def mail_dir(port: int = 1025, default: Path | None = None) -> Path:
    """Where the running sink on `port` stores mail (its advertisement), else `default`."""
    try:
        return Path(json.loads(advertisement(port).read_text())["dir"])
    except (OSError, ValueError, KeyError):
        return default or Path(".stack/mail")


def mails_to(folder: str, address: str) -> list[str]:
    """The raw text of every `.eml` the SMTP sink stored for `address`, oldest first."""
    found = []
    for path in sorted(Path(folder).glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        if address.lower() in str(message.get("To", "")).lower():
            body = message.get_body(preferencelist=("plain",))
            found.append(f"Subject: {message['Subject']}\n\n{body.get_content() if body else ''}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=1025)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(EmlWriter(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    # Say where mail lands, for readers in another checkout of the project (tests, the demo).
    advertisement(args.port).write_text(json.dumps({"dir": str(args.dir.resolve()), "pid": os.getpid()}))
    try:
        asyncio.run(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
