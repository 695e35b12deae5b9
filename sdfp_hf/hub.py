"""`HubMixin`: save, load and publish a small JSON artifact on disk and on the Hugging Face Hub.

In the manner of huggingface_hub's `ModelHubMixin`, the mixin owns the Hub I/O and knows nothing of the
class that uses it: a subclass names its file (`hub_file_name`) and provides three hooks,
`_to_hub_text` (the file's text), `_from_hub_file` (parse a downloaded or local file) and `_hub_card`
(the model card). `SDFPConfig` (the mask) is that subclass; this module never imports it.

- `save_pretrained` writes the file, a model card and an optional PNG to a folder;
- `from_pretrained` reads it from a folder, or from a Hub repository (or one of its subfolders)
  through `hf_hub_download` and its cache, offline included;
- `push_to_hub` publishes it in ONE commit and returns its URL; a README is only written to a
  repository that has none.

Reading only parses the subclass's file: nothing is unpickled, imported or executed, and a file larger
than the subclass allows (`hub_max_file_bytes`) is refused from the size the Hub's metadata reports,
before its body is downloaded. Every failure of the Hub (repository or file not found, refused or
missing token, gated, server errors, no connection, a download cut short, offline without a cached
copy) is raised as an [`SDFPHubError`] that says what happened and what to do.

Writing a folder goes through `sdfp_hf._files`: every file is written atomically, an existing one is
kept unless `overwrite=True`, and no file is written through a symbolic link.

`render_model_card` renders a model card from a template in `hub_cards/` with the Hub's YAML metadata; it is
the one card renderer of the package (masks and exported drafts).
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import jinja2
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    get_hf_file_metadata,
    get_token,
    hf_hub_download,
    hf_hub_url,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ._files import check_destination, expand_path, write_atomic
from ._version import __version__

try:  # huggingface_hub >= 2 speaks HTTP through httpx2, 1.x through httpx
    from httpx2 import RemoteProtocolError, TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import RemoteProtocolError, TransportError

__all__ = ["CARD_TAGS", "PLOT_NAME", "HubMixin", "SDFPHubError", "is_repo_id", "render_model_card"]

PLOT_NAME = "sdfp_scores.png"
"""File name of the per-layer score plot, next to the artifact."""

CARD_TAGS = ["sdfp", "speculative-decoding", "self-speculative-decoding", "layer-skip"]
"""Tags every card sdfp-hf writes carries (the Hub lists sdfp-hf artifacts by them)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_T = TypeVar("_T", bound="HubMixin")


class SDFPHubError(OSError):
    """Raised when an artifact cannot be read from or written to a folder or the Hugging Face Hub."""


class HubMixin:
    """Folder and Hub I/O for a class whose instances are one JSON-like file.

    Subclasses set `hub_file_name` (and optionally `hub_artifact`, the noun used in messages, and
    `hub_max_file_bytes`, the size no real file of theirs reaches) and implement `_to_hub_text`,
    `_from_hub_file` and `_hub_card`.
    """

    hub_file_name: ClassVar[str]
    hub_artifact: ClassVar[str] = "artifact"
    hub_max_file_bytes: ClassVar[int | None] = None
    """The largest file `from_pretrained` downloads from the Hub (None: no limit). A larger one is refused
    from its size in the Hub's metadata, before its body is read."""
    _classes: ClassVar[dict[str, type[HubMixin]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "hub_file_name" in cls.__dict__:  # the class that owns a file name (found by the old `load_config`)
            HubMixin._classes.setdefault(cls.hub_file_name, cls)

    # ------------------------------------------------------------------ hooks

    def _to_hub_text(self) -> str:
        """The file's text, validated (raise before anything is written)."""
        raise NotImplementedError

    @classmethod
    def _from_hub_file(cls: type[_T], path: str | os.PathLike[str]) -> _T:
        """Parse a local file."""
        raise NotImplementedError

    def _hub_card(self, *, repo_id: str | None, subfolder: str | None, plot: bool) -> str:
        """The model card (`README.md`) text."""
        raise NotImplementedError

    # ------------------------------------------------------------------ folders

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        card: bool = True,
        plot: str | os.PathLike[str] | bytes | None = None,
        overwrite: bool = False,
    ) -> str:
        """Write the artifact to a folder, with a model card and optionally the score plot.

        Each file is written atomically (a temporary file in the folder, renamed into place), so an
        interrupted save leaves the folder as it was. Nothing is replaced unless `overwrite=True`, and
        nothing is ever written through a symbolic link.

        Args:
            save_directory (`str` or `os.PathLike`):
                The folder, created if needed (`~` and environment variables are expanded).
            card (`bool`, *optional*, defaults to `True`):
                Whether to write a `README.md` model card. An existing `README.md` is never overwritten.
            plot (`str`, `os.PathLike` or `bytes`, *optional*):
                A PNG of the per-layer scores (a path or the bytes), copied as `sdfp_scores.png`.
            overwrite (`bool`, *optional*, defaults to `False`):
                Replace an artifact (and plot) the folder already holds; without it, an existing one is
                kept and the call raises before writing anything.

        Returns:
            `str`: the path of the written file.

        Raises:
            [`OverwriteError`]: the folder already holds the artifact or the plot, and `overwrite` is `False`.
            [`UnsafePathError`]: one of the files to write is a symbolic link.
        """
        directory = expand_path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise SDFPHubError(f"cannot save the {self.hub_artifact} to `{directory}`: it is a file, not a folder")
        text = self._to_hub_text()  # validates before anything is written
        png = _read_plot(plot) if plot is not None else None
        path, plot_path, readme = directory / self.hub_file_name, directory / PLOT_NAME, directory / "README.md"
        if png is not None and _same_file(plot, plot_path):
            png = None  # the plot is already in place: nothing to copy
        write_card = card and not readme.exists() and not readme.is_symlink()
        # Every check before the first write, so that a refusal leaves the folder as it was.
        for target in [path, *([plot_path] if png is not None else []), *([readme] if write_card else [])]:
            check_destination(target, overwrite=overwrite)
        directory.mkdir(parents=True, exist_ok=True)
        has_plot = png is not None or (plot is not None and plot_path.is_file())
        if png is not None:
            write_atomic(plot_path, png, overwrite=overwrite)
        if write_card:
            write_atomic(readme, self._hub_card(repo_id=None, subfolder=None, plot=has_plot))
        write_atomic(path, text, overwrite=overwrite)  # last: a folder holding the artifact is complete
        return str(path)

    @classmethod
    def from_pretrained(
        cls: type[_T],
        dir_or_repo_id: str | os.PathLike[str],
        *,
        revision: str | None = None,
        subfolder: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
    ) -> _T:
        """Load the artifact from a local folder (looked at first) or from a Hub repository.

        Args:
            dir_or_repo_id (`str` or `os.PathLike`):
                A folder holding the file, the path of the file itself, or a Hub repository id
                (`"user/mask-repo"`, or a model repository holding it in `subfolder`).
            revision (`str`, *optional*):
                Branch, tag or commit of the repository; defaults to `"main"`.
            subfolder (`str`, *optional*):
                Folder of the repository (or of the local folder) that holds the file.
            token (`str` or `bool`, *optional*):
                Token for private or gated repositories; defaults to the saved token (`hf auth login`).
            cache_dir (`str` or `os.PathLike`, *optional*):
                Hub cache folder; defaults to the huggingface_hub cache.
            local_files_only (`bool`, *optional*, defaults to `False`):
                Only use the cache (as with `HF_HUB_OFFLINE=1`).

        Raises:
            [`SDFPHubError`]: the file could not be found or fetched (not found, refused, gated, a server error,
                a dropped download, a file larger than `hub_max_file_bytes`); the message says why and what to do.
            Whatever the subclass's parser raises for a malformed file.
        """
        local = expand_path(dir_or_repo_id)
        if local.is_file():
            return cls._from_hub_file(local)
        if local.is_dir():
            path = local / subfolder / cls.hub_file_name if subfolder else local / cls.hub_file_name
            if not path.is_file():
                raise SDFPHubError(
                    f"the folder `{local}` has no `{cls.hub_file_name}`{f' in `{subfolder}`' if subfolder else ''}: "
                    f"save one there with `{cls.__name__}.save_pretrained`, or pass the folder that holds it"
                )
            return cls._from_hub_file(path)
        return cls._from_hub_file(
            _download(
                cls.hub_file_name, cls.hub_artifact, os.fspath(dir_or_repo_id), revision=revision,
                subfolder=_repo_subfolder(subfolder), token=token,
                cache_dir=expand_path(cache_dir) if cache_dir is not None else None,
                local_files_only=local_files_only, max_bytes=cls.hub_max_file_bytes,
            )
        )

    # ------------------------------------------------------------------ publishing

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        commit_message: str | None = None,
        subfolder: str | None = None,
        plot_path: str | os.PathLike[str] | bytes | None = None,
    ) -> str:
        """Publish the artifact to a Hub repository in one commit and return the commit URL.

        The repository is created if needed. The commit holds the file (in `subfolder` if given), the score
        plot if given, and a model card as `README.md` only if the repository has no README yet: an
        existing README, such as a model's own, is never overwritten.

        Args:
            repo_id (`str`):
                The repository, `"user/name"`: a repository of its own, or a model's repository with
                `subfolder`.
            private (`bool`, *optional*):
                Visibility of a repository created here; defaults to the account's default.
            token (`str`, *optional*):
                A token with write access; defaults to the saved token (`hf auth login`).
            revision (`str`, *optional*):
                Branch to commit to (created from `main` if needed); defaults to `main`.
            create_pr (`bool`, *optional*, defaults to `False`):
                Open a pull request with the commit instead of committing to the branch.
            commit_message (`str`, *optional*):
                Defaults to `"Upload sdfp mask"` (with the class's artifact noun).
            subfolder (`str`, *optional*):
                Folder of the repository to put the artifact in.
            plot_path (`str`, `os.PathLike` or `bytes`, *optional*):
                A PNG of the per-layer scores (a path or the bytes), uploaded as `sdfp_scores.png`.

        Returns:
            `str`: the URL of the commit (of the pull request with `create_pr=True`).

        Raises:
            [`SDFPHubError`]: the Hub refused or could not be reached; the message says why and what to do.
        """
        text = self._to_hub_text()
        png = _read_plot(plot_path) if plot_path is not None else None
        subfolder = _repo_subfolder(subfolder)
        prefix = f"{subfolder}/" if subfolder else ""
        api = HfApi(token=token, library_name="sdfp-hf", library_version=__version__)
        what = self.hub_artifact
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            if revision is not None and not create_pr and not revision.startswith("refs/") and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            operations = [CommitOperationAdd(f"{prefix}{self.hub_file_name}", text.encode("utf-8"))]
            if png is not None:
                operations.append(CommitOperationAdd(f"{prefix}{PLOT_NAME}", png))
            if not api.file_exists(repo_id, "README.md", revision=revision):
                card = self._hub_card(repo_id=repo_id, subfolder=subfolder, plot=png is not None)
                operations.append(CommitOperationAdd("README.md", card.encode("utf-8")))
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=commit_message or f"Upload {what}",
                revision=revision,
                create_pr=create_pr,
            )
        except HfHubHTTPError as e:
            raise _http_error(e, f"push the {what} to `{repo_id}`", token, write=True) from None
        except (TransportError, OfflineModeIsEnabled) as e:
            offline = " (offline mode is on: unset `HF_HUB_OFFLINE`)" if constants.is_offline_mode() else ""
            raise SDFPHubError(
                f"could not reach the Hub at {constants.ENDPOINT} to push the {what} to `{repo_id}`{offline}: {e}"
            ) from None
        return str(info.pr_url if create_pr and info.pr_url else info.commit_url)


# ---------------------------------------------------------------------- model cards


def render_model_card(template: str, *, base_model: str | None, tags: list[str], **context: Any) -> str:
    """Render a model card from a template of `hub_cards/`, with the Hub's YAML metadata.

    The metadata links the artifact to its base model (`base_model`, when that is a Hub id), declares
    `library_name: sdfp-hf` and the tags `CARD_TAGS` plus `tags`.

    Args:
        template (`str`): file name of the template in `hub_cards/` (package `sdfp_hf.hub_cards`).
        base_model (`str`, *optional*): the base model's Hub id or path; only a Hub id is linked.
        tags (`list[str]`): tags added to `CARD_TAGS`.
        **context: the template's variables (`card_data` is filled in here).

    Returns:
        `str`: the card, YAML metadata included.
    """
    card_data = ModelCardData(
        base_model=base_model if base_model and is_repo_id(base_model) else None,
        library_name="sdfp-hf",
        pipeline_tag="text-generation",
        tags=[*CARD_TAGS, *(t for t in tags if t not in CARD_TAGS)],
    )
    environment = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    content = environment.from_string(_card_template(template)).render(card_data=card_data.to_yaml(), **context)
    return str(ModelCard(content))


def _card_template(name: str) -> str:
    from importlib import resources

    try:
        return resources.files("sdfp_hf.hub_cards").joinpath(name).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        # Running from a checkout: `hub_cards/` sits next to the `sdfp_hf/` package.
        return (Path(__file__).resolve().parent.parent / "hub_cards" / name).read_text(encoding="utf-8")


# ---------------------------------------------------------------------- helpers


def is_repo_id(name: str) -> bool:
    """Whether `name` is a Hub repository id (`user/name`) rather than a local path."""
    if os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _download(
    filename: str,
    what: str,
    repo_id: str,
    *,
    revision: str | None,
    subfolder: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    max_bytes: int | None = None,
) -> str:
    """`hf_hub_download` of one file, every failure turned into an `SDFPHubError` that says what to do.

    With `max_bytes`, the file's size is read from the Hub's metadata first (a `HEAD` request, or the
    cached copy offline) and a larger file is refused before its body is downloaded.
    """
    where = f"`{repo_id}`" + (f" (revision `{revision}`)" if revision else "")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise SDFPHubError(
            f"`{repo_id}` is neither an existing local folder nor a valid Hub repository id (`user/name`): "
            "check the path or the id"
        ) from None
    options: dict[str, Any] = {
        "subfolder": subfolder,
        "revision": revision,
        "token": token,
        "cache_dir": cache_dir,
        "local_files_only": local_files_only,
        "library_name": "sdfp-hf",
        "library_version": __version__,
    }
    try:
        if max_bytes is not None:
            _check_size(filename, what, where, repo_id, max_bytes, options)
        path = hf_hub_download(repo_id, filename, **options)
        if max_bytes is not None and os.path.getsize(path) > max_bytes:  # metadata without a size
            raise SDFPHubError(_too_large(filename, what, where, os.path.getsize(path), max_bytes))
        return path
    except SDFPHubError:
        raise
    except GatedRepoError:
        raise SDFPHubError(
            f"the Hub repository {where} is gated: request access on its page, then pass a token of the "
            "account that was granted access (`token=` or `hf auth login`)"
        ) from None
    except RepositoryNotFoundError:
        raise SDFPHubError(
            f"the Hub repository {where} was not found on {constants.ENDPOINT}: check the id, or if it is "
            f"private, {_token_hint(token)}"
        ) from None
    except RevisionNotFoundError:
        raise SDFPHubError(
            f"the Hub repository `{repo_id}` has no revision `{revision}`: check the branch, tag or commit"
        ) from None
    except LocalEntryNotFoundError as e:
        # Raised when the Hub could not be asked (offline, no connection, a server error) and the cache has no copy.
        if local_files_only or constants.is_offline_mode():
            reason = "`local_files_only=True`" if local_files_only else "offline mode is on (`HF_HUB_OFFLINE=1`)"
            raise SDFPHubError(
                f"{reason} and the cache has no copy of the {what} {where}: load it once while online "
                "(or unset `HF_HUB_OFFLINE`), or pass a local folder"
            ) from None
        if isinstance(e.__cause__, HfHubHTTPError):  # the Hub answered, with an error (5xx, 429, ...)
            raise _http_error(e.__cause__, f"fetch the {what} {where} (and the cache has no copy)", token) from None
        raise SDFPHubError(
            f"could not reach the Hub at {constants.ENDPOINT} to fetch the {what} {where}, and the cache has no "
            f"copy: check the network connection (and `HF_ENDPOINT`), or set `HF_HUB_OFFLINE=1` to use cached "
            f"{what}s only"
        ) from None
    except EntryNotFoundError:
        raise SDFPHubError(
            f"the Hub repository {where} has no `{filename}`"
            f"{f' in the subfolder `{subfolder}`' if subfolder else ''}: it holds no {what}. "
            f"If the {what} lives in a subfolder of the repository, pass `subfolder=`"
        ) from None
    except HfHubHTTPError as e:
        raise _http_error(e, f"fetch the {what} {where}", token) from None
    except RemoteProtocolError as e:  # the connection closed before the body announced was sent
        raise SDFPHubError(_cut_short(what, where, str(e))) from None
    except (TransportError, OfflineModeIsEnabled) as e:
        raise SDFPHubError(f"could not reach the Hub at {constants.ENDPOINT} to fetch the {what} {where}: {e}") from None
    except OSError as e:
        if "consistency check failed" in str(e).lower():  # huggingface_hub: fewer bytes than the metadata said
            raise SDFPHubError(_cut_short(what, where, str(e).splitlines()[0])) from None
        raise SDFPHubError(
            f"could not store the {what} {where} in the Hub cache ({cache_dir or constants.HF_HUB_CACHE}): "
            f"{e.strerror or e}: check the free space and permissions there, or pass `cache_dir=`"
        ) from None


def _check_size(filename: str, what: str, where: str, repo_id: str, max_bytes: int, options: dict[str, Any]) -> None:
    """Refuse a file larger than `max_bytes` from its size in the Hub's metadata, before any download.

    Uses `hf_hub_download(dry_run=True)` (the metadata request `hf_hub_download` makes, with its cache and
    offline handling) where the installed huggingface_hub has it, else `get_hf_file_metadata`.
    """
    if _HAS_DRY_RUN:
        info = hf_hub_download(repo_id, filename, dry_run=True, **options)
        size = info.file_size
        if size is not None and size > max_bytes:
            raise SDFPHubError(_too_large(filename, what, where, size, max_bytes))
        return
    if options["local_files_only"] or constants.is_offline_mode():  # pragma: no cover - older huggingface_hub
        return
    try:  # pragma: no cover - older huggingface_hub
        url = hf_hub_url(repo_id, filename, subfolder=options["subfolder"], revision=options["revision"])
        size = get_hf_file_metadata(url, token=options["token"]).size
    except (HfHubHTTPError, TransportError, OfflineModeIsEnabled, OSError):
        return  # `hf_hub_download` reports it (or answers from the cache)
    if size is not None and size > max_bytes:  # pragma: no cover - older huggingface_hub
        raise SDFPHubError(_too_large(filename, what, where, size, max_bytes))


_HAS_DRY_RUN = "dry_run" in inspect.signature(hf_hub_download).parameters


def _too_large(filename: str, what: str, where: str, size: int, max_bytes: int) -> str:
    return (
        f"the `{filename}` of the Hub repository {where} is {size} bytes, more than the {max_bytes} any {what} "
        f"needs: it is not a real {what}, so it was not downloaded; check the repository id, or ask its owner"
    )


def _cut_short(what: str, where: str, detail: str) -> str:
    return (
        f"the download of the {what} {where} was cut short ({detail}): the connection dropped (or a proxy cut "
        "the file) before the whole file arrived, and nothing was loaded from it: try again"
    )


def _repo_subfolder(subfolder: str | None) -> str | None:
    """A repository folder as the Hub names it (`a/b`), refusing paths that would leave the repository."""
    if not subfolder:
        return None
    parts = subfolder.replace("\\", "/").strip("/").split("/")
    if subfolder.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"subfolder must be a folder inside the repository, like `sdfp` or `masks/v1`, got `{subfolder}`"
        )
    return "/".join(parts)


def _same_file(plot: str | os.PathLike[str] | bytes | None, path: Path) -> bool:
    if plot is None or isinstance(plot, bytes) or path.is_symlink():
        return False
    try:
        return os.path.samefile(expand_path(plot), path)
    except OSError:
        return False


def _read_plot(plot: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(plot, bytes):
        data = plot
    else:
        try:
            data = expand_path(plot).read_bytes()
        except OSError as e:
            raise SDFPHubError(f"cannot read the score plot `{plot}`: {e.strerror}") from None
    if not data.startswith(_PNG_SIGNATURE):
        name = "the bytes given" if isinstance(plot, bytes) else f"`{plot}`"
        raise ValueError(f"the score plot must be a PNG image, and {name} is not one: save the figure as PNG")
    return data


def _token_hint(token: str | bool | None) -> str:
    if token is False or (token is None and get_token() is None):
        return "no token was used: pass `token=` or log in with `hf auth login`"
    return "the token used has no access to it: use a token of an account that can read it"


def _http_error(error: HfHubHTTPError, action: str, token: str | bool | None, write: bool = False) -> SDFPHubError:
    response = error.response
    status = response.status_code if response is not None else None
    message = error.server_message or (response.headers.get("X-Error-Message") if response is not None else None)
    detail = f" ({message})" if message else ""
    if status == 401:
        if token is False or (token is None and get_token() is None):
            need = "a write token" if write else "a token"
            return SDFPHubError(
                f"could not {action}: the Hub requires authentication{detail} and no token was found: "
                f"pass `token=` ({need}) or log in with `hf auth login`"
            )
        return SDFPHubError(
            f"could not {action}: the Hub rejected the token (401){detail}: it is invalid or expired; "
            "create a new one at https://huggingface.co/settings/tokens"
        )
    if status == 403:
        return SDFPHubError(
            f"could not {action}: the token has no permission for this (403){detail}: "
            + ("use a token with write access to this namespace" if write else "use a token that can read it")
        )
    if status == 429:
        return SDFPHubError(
            f"could not {action}: the Hub is limiting requests (429, too many requests){detail}: wait a minute "
            "and try again (requests with a token, `hf auth login`, get a higher limit)"
        )
    if status is not None and status >= 500:
        return SDFPHubError(
            f"could not {action}: the Hub answered {status}, a server error{detail}: the Hub is having trouble, "
            "not your set-up; try again in a few minutes (https://status.huggingface.co)"
        )
    return SDFPHubError(f"could not {action}: the Hub answered {status}{detail}")


# ---------------------------------------------------------------------- deprecated (before 0.2; go in 0.3)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"`sdfp_hf.hub.{old}` is deprecated (it goes in sdfp-hf 0.3): use `{new}`", FutureWarning, stacklevel=3)


def save_pretrained(config: HubMixin, save_directory: str | os.PathLike[str], **kwargs: Any) -> str:
    """Deprecated: `config.save_pretrained(save_directory, ...)`."""
    _deprecated("save_pretrained(config, ...)", "config.save_pretrained(...)")
    return config.save_pretrained(save_directory, **kwargs)


def push_to_hub(config: HubMixin, repo_id: str, **kwargs: Any) -> str:
    """Deprecated: `config.push_to_hub(repo_id, ...)`."""
    _deprecated("push_to_hub(config, ...)", "config.push_to_hub(...)")
    return config.push_to_hub(repo_id, **kwargs)


def render_card(config: Any, **kwargs: Any) -> str:
    """Deprecated: `config.model_card(...)`."""
    _deprecated("render_card(config, ...)", "config.model_card(...)")
    return config.model_card(**kwargs)


def load_config(dir_or_repo_id: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Deprecated: `SDFPConfig.from_pretrained(dir_or_repo_id, ...)`."""
    _deprecated("load_config", "SDFPConfig.from_pretrained(...)")
    mask_class = HubMixin._classes.get("sdfp_config.json")
    if mask_class is None:
        raise RuntimeError("load a mask with `SDFPConfig.from_pretrained(...)` (from sdfp_hf import SDFPConfig)")
    return mask_class.from_pretrained(dir_or_repo_id, **kwargs)
