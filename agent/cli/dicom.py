"""``liver-agent echo`` and ``liver-agent send``: a small DICOM SCU for checks and demos."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from agent.cli._common import ConfigOption, console, fail, settings_or_exit

_PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Peer:
    ae_title: str
    host: str
    port: int


def parse_peer(text: str) -> Peer:
    """``AE@HOST:PORT`` -> Peer; raises typer.BadParameter with the expected form."""
    match = _PEER.match(text)
    if not match or not 0 < int(match["port"]) < 65536:
        raise typer.BadParameter(f"{text!r}: expected AE@HOST:PORT, e.g. LIVERAI@127.0.0.1:11112")
    return Peer(match["ae"], match["host"], int(match["port"]))


def _files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            fail(f"{path} does not exist")
    return found


def register(app: typer.Typer) -> None:
    @app.command("echo")
    def echo(
        peer: Annotated[str, typer.Argument(help="AE@HOST:PORT")],
        calling_ae: Annotated[str | None, typer.Option(help="our AE title")] = None,
        config: ConfigOption = None,
    ) -> None:
        """C-ECHO a DICOM node (the agent itself, or a destination)."""
        target = parse_peer(peer)
        ae = AE(ae_title=calling_ae or settings_or_exit(config).dicom.ae_title)
        ae.add_requested_context(Verification)
        assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
        if not assoc.is_established:
            fail(f"association with {peer} refused or failed")
        status = assoc.send_c_echo()
        assoc.release()
        code = getattr(status, "Status", None)
        if code != 0x0000:
            fail(f"C-ECHO answered {code!r}")
        console.print(f"C-ECHO {peer}: success")

    @app.command("send")
    def send(
        paths: Annotated[list[Path], typer.Argument(help="files or folders (recursive)")],
        to: Annotated[str, typer.Option("--to", help="AE@HOST:PORT")],
        calling_ae: Annotated[str | None, typer.Option(help="our AE title")] = None,
        config: ConfigOption = None,
    ) -> None:
        """C-STORE DICOM files to a node, with a progress bar."""
        target = parse_peer(to)
        files = _files(paths)
        headers = []
        skipped = 0
        for path in files:
            try:
                ds = dcmread(path, stop_before_pixels=True)
                headers.append((path, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
            except (InvalidDicomError, AttributeError, OSError):
                skipped += 1
        if not headers:
            fail("no DICOM files to send")
        ae = AE(ae_title=calling_ae or settings_or_exit(config).dicom.ae_title)
        contexts: dict[str, set[str]] = {}
        for _, sop_class, syntax in headers:
            contexts.setdefault(sop_class, set()).add(syntax)
        if len(contexts) > 128:
            fail("more than 128 SOP classes in one send")
        for sop_class, syntaxes in sorted(contexts.items()):
            ae.add_requested_context(sop_class, sorted(syntaxes))
        assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
        if not assoc.is_established:
            fail(f"association with {to} refused or failed")
        failed = 0
        with Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("send", total=len(headers))
            for path, _, _ in headers:
                status = assoc.send_c_store(path)
                code = getattr(status, "Status", None)
                if code not in (0x0000, 0xB000, 0xB006, 0xB007):
                    failed += 1
                    console.print(f"[red]{path.name}: status {code!r}[/red]")
                progress.advance(task)
        assoc.release()
        console.print(
            f"sent {len(headers) - failed} of {len(headers)} files to {to}"
            + (f"; {skipped} non-DICOM files skipped" if skipped else "")
        )
        if failed:
            raise typer.Exit(1)
