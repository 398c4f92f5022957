"""`make demo` with EAP_SMTP_URL delivers the story's notices to that mail
server, with their invitations, and says so at the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from aiosmtpd.controller import Controller

from tests.notifier.test_channels import Inbox
from tests.replicas import free_port

EAPCTL = str(Path(sys.executable).with_name("eapctl"))


def test_the_demo_delivers_its_confirmations_to_a_local_mail_server(tmp_path: Path) -> None:
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EAP_")}
        demo = subprocess.run(
            [EAPCTL, "demo"],
            env={**env, "EAP_SMTP_URL": f"smtp://127.0.0.1:{port}?from=eap%40county.example"},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
    finally:
        controller.stop()
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    told = re.search(
        r"The notifier delivered (\d+) messages to smtp://127\.0\.0\.1:\d+", demo.stdout
    )
    assert told, demo.stdout[-1500:]
    assert int(told.group(1)) == len(box.messages) > 0
    invitations = [
        m for m in box.messages if any(p.get_content_type() == "text/calendar" for p in m.walk())
    ]
    assert invitations and all(m["From"] == "eap@county.example" for m in box.messages)
