"""`plyr labeler keygen`: a new signing key for our labeler, in a private file."""

from __future__ import annotations

from pathlib import Path

import click

from core.errors import PlyrError


@click.group()
def labeler() -> None:
    """Our own labeler (labels signed with the AppView's DID)."""


@labeler.command()
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to create (mode 600; an existing file is never overwritten).")
def keygen(out: Path) -> None:
    """Write a new secp256k1 labeler key (hex) to --out and print its did:key.

    Point PLYR_LABELER_KEY_FILE at the file; the AppView's DID document then names the key as
    #atproto_label (a did:plc operator adds that key to the PLC document instead)."""
    from appview.labeler.settings import write_new_key

    try:
        key = write_new_key(out)
    except FileExistsError:
        raise PlyrError(f"{out} already exists: not overwriting a key (remove it first if you mean to)") from None
    except OSError as exc:
        raise PlyrError(f"cannot create {out}: {exc.strerror}") from None
    click.echo(key.public_key().did_key())
    click.echo(f"wrote {out}; set PLYR_LABELER_KEY_FILE={out}", err=True)


commands: list[click.Command] = [labeler]
