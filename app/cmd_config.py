"""``dcrn config check FILE``: read and check a site config (docs/DEPLOY.md) and print what it runs.

A problem is one line naming the file, the line and the key, and exit code 2; nothing starts.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="check a site config and print its summary")
    check.add_argument("file", metavar="FILE", help="the site config (YAML)")


def main(args: argparse.Namespace) -> int:
    from dcrn.app.site_config import load_site_config

    site = load_site_config(args.file)  # SiteConfigError: one line, exit 2 (app/cli.py)
    print("\n".join(site.summary()))
    print("ok")
    return 0
