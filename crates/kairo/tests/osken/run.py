"""Runs one os-ken application listening for a switch: run.py APP PORT."""
import sys

from os_ken.lib import hub

hub.patch(thread=False)

from os_ken import cfg  # noqa: E402
from os_ken.base import app_manager  # noqa: E402

app, port = sys.argv[1], sys.argv[2]
cfg.CONF(args=["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", port], project="os_ken")
app_manager.AppManager.run_apps([app, "os_ken.controller.ofp_handler"])
