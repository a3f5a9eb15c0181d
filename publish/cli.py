"""`plyr publish`: publishing music from the musician's own machine to their own PDS.

    plyr publish login HANDLE            app password: asked, --password or PLYR_PUBLISH_PASSWORD
    plyr publish whoami | logout
    plyr publish track FILE [--title ... --artist ... --album ... --cover IMG --tags a,b --description ...]
    plyr publish folder DIR [--album NAME ...]    an album: every track, then the album list
    plyr publish edit URI [--title ...]  |  plyr publish delete URI

Results go to stdout, progress bars and notes to stderr; every failure is one line and exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from core.settings_spec import option
from publish.settings import PublishSettings

F = TypeVar("F", bound=Callable[..., Any])
INDEX_WAIT_S = 30.0


def _note(text: str) -> None:
    click.echo(text, err=True)


def _config_option(func: F) -> F:
    return option(PublishSettings, "config_dir", "--config-dir")(func)


def _service_options(func: F) -> F:
    """--media, --media-did, --appview, --config-dir, --no-progress."""
    for decorate in (
        option(PublishSettings, "media_url", "--media"),
        option(PublishSettings, "media_did", "--media-did"),
        option(PublishSettings, "appview_url", "--appview"),
        click.option("--no-progress", is_flag=True, help="No progress bars (they go to stderr)."),
        _config_option,
    )[::-1]:  # applied last first: --help lists them in this order
        func = decorate(func)
    return func


def _track_options(func: F) -> F:
    """What the tags of a file can be overridden with."""
    for decorate in (
        click.option("--title", help="Track title (default: the file's title tag, else its name)."),
        click.option("--artist", help="Artist (default: the file's artist tag, else your handle)."),
        click.option("--album", help="Album (default: the file's album tag)."),
        click.option("--cover", type=click.Path(dir_okay=False, path_type=Path),
                     help="Cover image (default: the art embedded in the file)."),  # fmt: skip
        click.option("--tags", help="Comma-separated tags, e.g. 'ambient,live'."),
        click.option("--description", help="Free text shown with the track (credits, notes, lyrics)."),
    )[::-1]:
        func = decorate(func)
    return func


def _settings(**overrides: Any) -> PublishSettings:
    return PublishSettings.from_env(overrides=overrides)


class _Run:
    """What a publishing command works with: the session, the media service, a Publisher."""

    def __init__(self, media_url: str | None, media_did: str | None, appview_url: str | None,
                 no_progress: bool, config_dir: str | None) -> None:  # fmt: skip
        from publish.errors import PublishError
        from publish.media_client import MediaService
        from publish.publisher import Publisher
        from publish.session import load_session

        self.settings = _settings(media_url=media_url, media_did=media_did, appview_url=appview_url,
                                  config_dir=config_dir)  # fmt: skip
        if not self.settings.media_url:
            raise PublishError("which media service? set PLYR_PUBLISH_MEDIA_URL or pass --media URL")
        self.session = load_session(self.settings.config_dir)
        show = not no_progress and sys.stderr.isatty()
        self.media = MediaService(self.settings.media_url, self.settings.media_did, show_progress=show)
        self.pub = Publisher(self.session, self.media, _note)

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.media.close()

    def link(self, uri: str) -> str | None:
        """The AppView page of a just-published track, once the AppView has it."""
        if not self.settings.appview_url:
            return None
        from publish.appview import wait_for_track

        page = wait_for_track(self.settings.appview_url, uri, INDEX_WAIT_S)
        if page is None:
            _note(f"not on {self.settings.appview_url} yet: it shows new tracks a moment after your PDS has them")
        return page


def _input(title: str | None, artist: str | None, album: str | None, cover: Path | None, tags: str | None,
           description: str | None) -> Any:  # fmt: skip
    from publish.publisher import TrackInput, parse_tags

    return TrackInput(title=title, artist=artist, album=album, description=description, cover=cover,
                      tags=parse_tags(tags))  # fmt: skip


@click.group("publish")
def publish() -> None:
    """Publish music to your own PDS: log in, upload tracks and albums, edit, delete.

    Your records live in your own repository; the audio and covers on the plyr media service
    (PLYR_PUBLISH_MEDIA_URL or --media). Only this machine holds your login (the session file
    in the config folder, owner-only).
    """


@publish.command()
@click.argument("handle")
@click.option("--password", help="App password (default: $PLYR_PUBLISH_PASSWORD, else asked).")
@_config_option
def login(handle: str, password: str | None, config_dir: str | None) -> None:
    """Log in to your PDS as HANDLE (or DID) with an app password.

    Make an app password in your account's settings (e.g. Bluesky: Settings > Privacy and
    security > App passwords); your main password works too but is not recommended.
    """
    from publish.session import login as do_login
    from publish.settings import PASSWORD

    settings = _settings(config_dir=config_dir)
    password = password or PASSWORD.read()
    if not password:
        password = click.prompt(f"app password for {handle}", hide_input=True)
    session = do_login(handle, password or "", config_dir=settings.config_dir)
    click.echo(f"logged in as {session.handle} ({session.did}) on {session.pds_url}")
    _note(f"session kept in {session.store.path}")


@publish.command()
@click.option("--refresh", is_flag=True, help="Renew the session's tokens now.")
@_config_option
def whoami(refresh: bool, config_dir: str | None) -> None:
    """Who is logged in (asks the PDS, which also proves the session still works)."""
    from publish.session import StoredClient, load_session

    session = load_session(_settings(config_dir=config_dir).config_dir)
    try:
        if refresh:
            assert isinstance(session.client, StoredClient)
            session.client.refresh_now()
            _note("session renewed" if session.client.refreshes else "session renewed by another command just now")
        info = session.client.com.atproto.server.get_session()
    except Exception as exc:
        raise session.fail(exc, "check the session") from None
    click.echo(f"{info.handle} ({info.did}) on {session.pds_url}")


@publish.command()
@_config_option
def logout(config_dir: str | None) -> None:
    """Log out: revoke the session at the PDS and delete the session file."""
    from publish.session import logout as do_logout

    gone = do_logout(_settings(config_dir=config_dir).config_dir)
    click.echo(f"logged out {gone.handle} ({gone.did})" if gone else "not logged in")


@publish.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_track_options
@click.option("--again", is_flag=True, help="Publish even if this file is already one of your tracks.")
@_service_options
def track(file: Path, title: str | None, artist: str | None, album: str | None, cover: Path | None,
          tags: str | None, description: str | None, again: bool, media_url: str | None, media_did: str | None,
          appview_url: str | None, no_progress: bool, config_dir: str | None) -> None:  # fmt: skip
    """Publish one audio FILE as a track (tags from the file fill what is not given)."""
    from publish.errors import PublishError

    if not file.is_file():
        raise PublishError(f"{file}: no such file")
    given = _input(title, artist, album, cover, tags, description)
    with _Run(media_url, media_did, appview_url, no_progress, config_dir) as run:
        done = run.pub.publish_track(file, given, again=again)
        if done.reused:
            _note(f"{file.name} is already published (--again publishes it once more)")
        click.echo(done.uri)
        _note(f"{done.title}: {done.audio_url}")
        if (page := run.link(done.uri)) is not None:
            _note(f"on the AppView: {page}")


@publish.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--album", help="Album name (default: the files' album tag, else the folder's name).")
@click.option("--artist", help="Artist of every track (default: each file's artist tag).")
@click.option("--cover", type=click.Path(dir_okay=False, path_type=Path),
              help="Cover of every track (default: cover.jpg/folder.jpg/... in the folder, else each file's art).")  # fmt: skip
@click.option("--tags", help="Comma-separated tags for every track.")
@click.option("--description", help="Free text shown with every track.")
@_service_options
def folder(folder: Path, album: str | None, artist: str | None, cover: Path | None, tags: str | None,
           description: str | None, media_url: str | None, media_did: str | None, appview_url: str | None,
           no_progress: bool, config_dir: str | None) -> None:  # fmt: skip
    """Publish every audio file in FOLDER as an album: the tracks in order (track number tag,
    else file name), then the album list. Run it again after an interruption: it goes on where
    it stopped and publishes nothing twice (state in FOLDER/.plyr-publish.json)."""
    from publish.folder import publish_folder

    given = _input(None, artist, album, cover, tags, description)
    with _Run(media_url, media_did, appview_url, no_progress, config_dir) as run:
        result = publish_folder(run.pub, folder, given, _note)
        click.echo(result.list_uri)
        if result.tracks and (page := run.link(result.tracks[0].uri)) is not None:
            _note(f"on the AppView: {page}")


@publish.command()
@click.argument("uri")
@_track_options
@click.option("--clear", multiple=True, type=click.Choice(["album", "description", "tags", "imageUrl"]),
              help="Remove this field (repeatable).")  # fmt: skip
@_service_options
def edit(uri: str, title: str | None, artist: str | None, album: str | None, cover: Path | None, tags: str | None,
         description: str | None, clear: tuple[str, ...], media_url: str | None, media_did: str | None,
         appview_url: str | None, no_progress: bool, config_dir: str | None) -> None:  # fmt: skip
    """Change fields of one of your tracks (or a list's name with --title). The write is refused
    if the record changed since it was read, so no concurrent edit is lost."""
    from publish.manage import edit_record

    given = _input(title, artist, album, cover, tags, description)
    with _Run(media_url, media_did, appview_url, no_progress, config_dir) as run:
        cid, changed = edit_record(run.pub, uri, given, clear=clear)
    click.echo(f"{uri} {cid}")
    _note("changed: " + ", ".join(changed) if changed else "nothing to change")


@publish.command()
@click.argument("uri")
@click.option("--keep-media", is_flag=True, help="Keep our copy of the audio and cover.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_service_options
def delete(uri: str, keep_media: bool, yes: bool, media_url: str | None, media_did: str | None,
           appview_url: str | None, no_progress: bool, config_dir: str | None) -> None:  # fmt: skip
    """Delete one of your records (a track: also from your lists, and our copy of its media
    unless another of your tracks uses it)."""
    from publish.manage import delete_record

    if not yes:
        click.confirm(f"delete {uri}?", abort=True, err=True)
    with _Run(media_url, media_did, appview_url, no_progress, config_dir) as run:
        delete_record(run.pub, uri, _note, keep_media=keep_media)


@publish.command("delete-account-data")
@option(PublishSettings, "appview_url", "--appview")
@click.option("--appview-did", metavar="DID", help="The AppView's DID (needed with --via-pds and no --appview).")
@click.option("--via-pds", is_flag=True, help="Send the request through your PDS (atproto-proxy) instead of directly.")
@click.option("--delete-records", "with_records", is_flag=True,
              help="Also delete your fm.plyr.* records from your PDS (tracks, likes, comments, lists, profile).")
@click.option("--confirm", "typed", metavar="HANDLE", help="Your handle, instead of typing it when asked.")
@_config_option
@click.pass_context
def delete_account_data(ctx: click.Context, appview_url: str | None, appview_did: str | None, via_pds: bool,
                        with_records: bool, typed: str | None, config_dir: str | None) -> None:  # fmt: skip
    """Delete everything plyr holds about you that is not in your repo (plays, queue,
    preferences, reports you filed, uploads and our copies of your media, exports); with
    --delete-records your fm.plyr.* records on your PDS first. You confirm by typing your handle."""
    from publish.account_data import run as delete_data  # the atproto SDK: imported only when used

    settings = PublishSettings.from_env(overrides={"appview_url": appview_url, "config_dir": config_dir})
    session = ctx.obj.get("pds_session") if isinstance(ctx.obj, dict) else None
    if session is None:
        from publish.session import load_session

        session = load_session(settings.config_dir)
    delete_data(session, appview_url=settings.appview_url, appview_did=appview_did, via_pds=via_pds,
                with_records=with_records, typed=typed,
                prompt=lambda text: click.prompt(text, default="", show_default=False))  # fmt: skip


commands: list[click.Command] = [publish]

__all__ = ["commands", "publish"]
