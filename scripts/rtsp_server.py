#!/usr/bin/python3
"""A live RTSP test camera on 127.0.0.1, served by GStreamer's gst-rtsp-server.

Run it with the SYSTEM Python (``/usr/bin/python3``): it needs the ``gi`` bindings from the Debian
packages that ``scripts/install-system-deps`` installs, which a virtual environment cannot import.

    /usr/bin/python3 scripts/rtsp_server.py --port 8554 --path /cam
    /usr/bin/python3 scripts/rtsp_server.py --port 0 --user admin --password secret

It serves one live H.264 stream (``videotestsrc is-live=true ! x264enc tune=zerolatency ! rtph264pay``)
and prints exactly one line, ``READY rtsp://127.0.0.1:PORT/PATH``, on stdout once clients can connect
(``--port 0`` picks a free port; the line says which). It exits on SIGTERM or SIGINT, or with status 2
and a one-line reason on stderr when it cannot listen (port taken) or a GStreamer element is missing.
The test suite and the measurement tools start, kill and restart it (tests/fixtures/rtsp.py).
"""

from __future__ import annotations

import argparse
import signal
import sys

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
except (ImportError, ValueError) as exc:  # ValueError: the typelib for a required version is missing
    sys.stderr.write(f"rtsp_server: gst-rtsp-server is not installed ({exc}); run scripts/install-system-deps\n")
    sys.exit(3)

REQUIRED_ELEMENTS = ("videotestsrc", "videoconvert", "x264enc", "rtph264pay", "timeoverlay")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--path", default="/test", help="mount point of the stream (default /test)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--pattern", default="ball", help="videotestsrc pattern (default: ball, a moving ball)")
    parser.add_argument("--user", help="require RTSP basic authentication with this user name")
    parser.add_argument("--password", default="", help="password for --user")
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    return args


def launch_line(args: argparse.Namespace) -> str:
    # A keyframe every 0.2 s, so a client that (re)connects decodes its first frame at once.
    return (
        f"( videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        "! timeoverlay ! videoconvert "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={max(1, args.fps // 5)} "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def add_basic_auth(server: GstRtspServer.RTSPServer, factory: GstRtspServer.RTSPMediaFactory, args) -> None:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_role_from_structure(
        Gst.Structure.from_string("user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0]
    )
    factory.set_permissions(permissions)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    missing = [name for name in REQUIRED_ELEMENTS if Gst.ElementFactory.find(name) is None]
    if missing:
        sys.stderr.write(f"rtsp_server: GStreamer elements missing: {', '.join(missing)}\n")
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.set_backlog(64)  # many clients connect at once in the many-camera runs (the default is 5)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(True)  # every client watches the same live camera, as with a real one
    if args.user:
        add_basic_auth(server, factory, args)
    server.get_mount_points().add_factory(args.path, factory)

    loop = GLib.MainLoop()
    try:
        if server.attach(None) == 0:
            raise GLib.Error("attach failed")
    except GLib.Error as exc:
        sys.stderr.write(f"rtsp_server: cannot listen on 127.0.0.1:{args.port} ({exc.message})\n")
        return 2

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, loop.quit)
    sys.stdout.write(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.path}\n")
    sys.stdout.flush()
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
