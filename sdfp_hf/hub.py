"""Saving, loading and publishing masks (`SDFPConfig`) on disk and on the Hugging Face Hub.

- [`save_pretrained`] writes `sdfp_config.json` and a model card to a folder;
- [`load_config`] reads a mask from a folder, or from a Hub repository (or one of its subfolders)
  through `hf_hub_download` and its cache, offline included;
- [`push_to_hub`] publishes a mask in ONE commit and returns its URL; a README is only written to a
  repository that has none.

Reading a mask only parses JSON: nothing is unpickled, imported or executed, so no `trust_remote_code`
is involved. Every failure of the Hub (repository or file not found, refused or missing token, no
connection, offline without a cached copy) is raised as an [`SDFPHubError`] that says what happened
and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    get_token,
    hf_hub_download,
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

from .config import CONFIG_NAME, SDFPConfig

try:  # huggingface_hub >= 2 speaks HTTP through httpx2, 1.x through httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError

__all__ = [
    "CARD_TEMPLATE",
    "PLOT_NAME",
    "SDFPHubError",
    "load_config",
    "push_to_hub",
    "render_card",
    "save_pretrained",
]

CARD_TEMPLATE = "sdfp_mask_card.md"
"""File name of the model card template, in the `hub_cards/` folder (package `sdfp_hf.hub_cards`)."""

PLOT_NAME = "sdfp_scores.png"
"""File name of the per-layer score plot, next to `sdfp_config.json`."""

CARD_TAGS = ["sdfp", "speculative-decoding", "self-speculative-decoding", "layer-skip"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SDFPHubError(OSError):
    """Raised when a mask cannot be read from or written to a folder or the Hugging Face Hub."""


# ---------------------------------------------------------------------- local folders


def save_pretrained(
    config: SDFPConfig,
    save_directory: str | os.PathLike[str],
    *,
    card: bool = True,
    plot: str | os.PathLike[str] | bytes | None = None,
) -> str:
    """Write a mask to a folder: `sdfp_config.json`, a model card and the score plot.

    Args:
        config ([`SDFPConfig`]):
            The mask.
        save_directory (`str` or `os.PathLike`):
            The folder, created if needed.
        card (`bool`, *optional*, defaults to `True`):
            Whether to write a `README.md` model card. An existing `README.md` is never overwritten.
        plot (`str`, `os.PathLike` or `bytes`, *optional*):
            A PNG of the per-layer scores (a path or the bytes), copied as `sdfp_scores.png`.

    Returns:
        `str`: the path of the written `sdfp_config.json`.
    """
    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise SDFPHubError(f"cannot save the mask to `{directory}`: it is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    text = config.to_json_string()  # validates before anything is written
    png = _read_plot(plot) if plot is not None else None
    path = directory / CONFIG_NAME
    path.write_text(text, encoding="utf-8")
    if png is not None:
        (directory / PLOT_NAME).write_bytes(png)
    readme = directory / "README.md"
    if card and not readme.exists():
        readme.write_text(render_card(config, plot=png is not None), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------- loading


def load_config(
    dir_or_repo_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
) -> SDFPConfig:
    """Load a mask from a local folder (looked at first) or from a Hub repository.

    Args:
        dir_or_repo_id (`str` or `os.PathLike`):
            A folder holding `sdfp_config.json`, the path of such a file, or a Hub repository id
            (`"user/mask-repo"`, or a model repository holding the mask in `subfolder`).
        revision (`str`, *optional*):
            Branch, tag or commit of the repository; defaults to `"main"`.
        subfolder (`str`, *optional*):
            Folder of the repository (or of the local folder) that holds the mask.
        token (`str` or `bool`, *optional*):
            Token for private or gated repositories; defaults to the saved token (`hf auth login`).
        cache_dir (`str` or `os.PathLike`, *optional*):
            Hub cache folder; defaults to the huggingface_hub cache.
        local_files_only (`bool`, *optional*, defaults to `False`):
            Only use the cache (as with `HF_HUB_OFFLINE=1`).

    Returns:
        [`SDFPConfig`]: the validated mask.

    Raises:
        [`SDFPConfigError`]: the file is not a valid mask.
        [`SDFPHubError`]: the file could not be found or fetched; the message says why and what to do.
    """
    local = Path(dir_or_repo_id)
    if local.is_file():
        return SDFPConfig.from_json_file(local)
    if local.is_dir():
        path = local / subfolder / CONFIG_NAME if subfolder else local / CONFIG_NAME
        if not path.is_file():
            raise SDFPHubError(
                f"the folder `{local}` has no `{CONFIG_NAME}`{f' in `{subfolder}`' if subfolder else ''}: "
                "save a mask there with `SDFPConfig.save_pretrained`, or pass the folder that holds it"
            )
        return SDFPConfig.from_json_file(path)

    repo_id = os.fspath(dir_or_repo_id)
    subfolder = _repo_subfolder(subfolder)
    where = f"`{repo_id}`" + (f" (revision `{revision}`)" if revision else "")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise SDFPHubError(
            f"`{repo_id}` is neither an existing local folder nor a valid Hub repository id (`user/name`): "
            "check the path or the id"
        ) from None
    try:
        path = hf_hub_download(
            repo_id,
            CONFIG_NAME,
            subfolder=subfolder,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            library_name="sdfp-hf",
            library_version=_library_version(),
        )
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
    except LocalEntryNotFoundError:
        # Raised when the Hub could not be asked (offline, no connection) and the cache has no copy.
        if local_files_only or constants.is_offline_mode():
            reason = (
                "`local_files_only=True`" if local_files_only else "offline mode is on (`HF_HUB_OFFLINE=1`)"
            )
            raise SDFPHubError(
                f"{reason} and the cache has no copy of the mask {where}: load it once while online "
                "(or unset `HF_HUB_OFFLINE`), or pass a local folder"
            ) from None
        raise SDFPHubError(
            f"could not reach the Hub at {constants.ENDPOINT} to fetch the mask {where}, and the cache has no "
            "copy: check the network connection (and `HF_ENDPOINT`), or set `HF_HUB_OFFLINE=1` to use cached "
            "masks only"
        ) from None
    except EntryNotFoundError:
        raise SDFPHubError(
            f"the Hub repository {where} has no `{CONFIG_NAME}`"
            f"{f' in the subfolder `{subfolder}`' if subfolder else ''}: it holds no sdfp mask. "
            "If the mask lives in a subfolder of the repository, pass `subfolder=`"
        ) from None
    except HfHubHTTPError as e:
        raise _http_error(e, f"fetch the mask {where}", token) from None
    except (TransportError, OfflineModeIsEnabled) as e:
        raise SDFPHubError(
            f"could not reach the Hub at {constants.ENDPOINT} to fetch the mask {where}: {e}"
        ) from None
    return SDFPConfig.from_json_file(path)


# ---------------------------------------------------------------------- publishing


def push_to_hub(
    config: SDFPConfig,
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
    """Publish a mask to a Hub repository in one commit.

    The repository is created if needed. The commit holds `sdfp_config.json` (in `subfolder` if given),
    the score plot if given, and a model card as `README.md` only if the repository has no README yet: an
    existing README, such as a model's own, is never overwritten.

    Args:
        config ([`SDFPConfig`]):
            The mask.
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
            Defaults to `"Upload sdfp mask"`.
        subfolder (`str`, *optional*):
            Folder of the repository to put the mask in.
        plot_path (`str`, `os.PathLike` or `bytes`, *optional*):
            A PNG of the per-layer scores (a path or the bytes), uploaded as `sdfp_scores.png`.

    Returns:
        `str`: the URL of the commit (of the pull request with `create_pr=True`).

    Raises:
        [`SDFPHubError`]: the Hub refused or could not be reached; the message says why and what to do.
    """
    text = config.to_json_string()
    png = _read_plot(plot_path) if plot_path is not None else None
    subfolder = _repo_subfolder(subfolder)
    prefix = f"{subfolder}/" if subfolder else ""
    api = HfApi(token=token, library_name="sdfp-hf", library_version=_library_version())
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and not create_pr and not revision.startswith("refs/") and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [CommitOperationAdd(f"{prefix}{CONFIG_NAME}", text.encode("utf-8"))]
        if png is not None:
            operations.append(CommitOperationAdd(f"{prefix}{PLOT_NAME}", png))
        if not api.file_exists(repo_id, "README.md", revision=revision):
            card = render_card(config, repo_id=repo_id, subfolder=subfolder, plot=png is not None)
            operations.append(CommitOperationAdd("README.md", card.encode("utf-8")))
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or "Upload sdfp mask",
            revision=revision,
            create_pr=create_pr,
        )
    except HfHubHTTPError as e:
        raise _http_error(e, f"push the mask to `{repo_id}`", token, write=True) from None
    except (TransportError, OfflineModeIsEnabled) as e:
        offline = " (offline mode is on: unset `HF_HUB_OFFLINE`)" if constants.is_offline_mode() else ""
        raise SDFPHubError(
            f"could not reach the Hub at {constants.ENDPOINT} to push the mask to `{repo_id}`{offline}: {e}"
        ) from None
    return str(info.pr_url if create_pr and info.pr_url else info.commit_url)


# ---------------------------------------------------------------------- model card


def render_card(
    config: SDFPConfig,
    *,
    repo_id: str | None = None,
    subfolder: str | None = None,
    plot: bool = False,
) -> str:
    """Render the model card (`README.md`) of a mask from the `hub_cards/` template.

    Its YAML metadata links the mask to its base model (`base_model`, when that is a Hub id),
    declares `library_name: sdfp-hf` and the tags `sdfp`, `speculative-decoding`, ...

    Args:
        config ([`SDFPConfig`]):
            The mask.
        repo_id (`str`, *optional*):
            The repository the card is for, used in the usage snippet.
        subfolder (`str`, *optional*):
            The repository folder holding the mask, used in the snippet and the plot link.
        plot (`bool`, *optional*, defaults to `False`):
            Whether `sdfp_scores.png` is published next to the mask.

    Returns:
        `str`: the card, YAML metadata included.
    """
    base_model = config.base_model_name_or_path
    hub_base_model = base_model if base_model and _is_repo_id(base_model) else None
    card_data = ModelCardData(
        base_model=hub_base_model,
        library_name="sdfp-hf",
        pipeline_tag="text-generation",
        tags=[*CARD_TAGS, config.model_type],
    )
    environment = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    content = environment.from_string(_card_template()).render(
        card_data=card_data.to_yaml(),
        config=config,
        config_name=CONFIG_NAME,
        model_name=f"`{base_model}`" if base_model else f"a `{config.model_type}` model",
        model_id=base_model or "<base model>",
        repo_id=repo_id or "<this repo>",
        subfolder=subfolder,
        plot_path=(f"{subfolder}/{PLOT_NAME}" if subfolder else PLOT_NAME) if plot else None,
        measurements=_measurement_rows(config.measurements),
        hardware=config.measurements.get("hardware"),
        calibration=_calibration_rows(config.calibration),
    )
    return str(ModelCard(content))


def _card_template() -> str:
    from importlib import resources

    try:
        return resources.files("sdfp_hf.hub_cards").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        # Running from a checkout: `hub_cards/` sits next to the `sdfp_hf/` package.
        return (Path(__file__).resolve().parent.parent / "hub_cards" / CARD_TEMPLATE).read_text(
            encoding="utf-8"
        )


def _measurement_rows(measurements: dict[str, Any]) -> dict[str, str]:
    rows = {}
    for key, value in measurements.items():
        if key == "acceptance" and isinstance(value, float):
            rows[key] = f"{value:.1%}"
        elif key == "speedup" and isinstance(value, float):
            rows[key] = f"{value:.2f}×"
        elif value is not None:
            rows[key] = str(value)
    return rows


def _calibration_rows(calibration: dict[str, Any]) -> dict[str, str]:
    labels = {
        "source": "source",
        "num_sequences": "sequences",
        "num_tokens": "tokens",
        "sequence_length": "sequence length",
        "seed": "seed",
        "dtype": "dtype",
        "seconds": "time taken",
    }
    rows = {}
    for key, value in calibration.items():
        if value is None:
            continue
        rows[labels.get(key, key)] = f"{value:.1f} s" if key == "seconds" else str(value)
    return rows


# ---------------------------------------------------------------------- helpers


def _library_version() -> str:
    from . import __version__

    return __version__


def _is_repo_id(name: str) -> bool:
    if os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


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


def _read_plot(plot: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(plot, bytes):
        data = plot
    else:
        try:
            data = Path(plot).read_bytes()
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


def _http_error(
    error: HfHubHTTPError, action: str, token: str | bool | None, write: bool = False
) -> SDFPHubError:
    response = error.response
    status = response.status_code if response is not None else None
    message = error.server_message or (
        response.headers.get("X-Error-Message") if response is not None else None
    )
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
    return SDFPHubError(f"could not {action}: the Hub answered {status}{detail}")
