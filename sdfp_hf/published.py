"""Published masks on the Hub for a model: sdfp-hf masks whose card names the model as its `base_model`.

`find_published_mask(model)` asks the Hub once (``GET /api/models``, filtered by the library's own tag,
`sdfp`, and by ``base_model:<the model's id>``, the tag the Hub derives from a card's `base_model`: every
mask `push_to_hub` publishes carries both), then loads the candidates in a documented order until one
passes the usual fingerprint check (`SDFPConfig.check_compatible`):

- the most downloaded first (what most people found to work), then, among equal downloads, the most
  recently modified; at most `MAX_CANDIDATES` are tried.

It never waits long and never fails: offline (``HF_HUB_OFFLINE=1``), with no Hub id for the model, without a
connection (a short timeout, `LOOKUP_TIMEOUT`, and no retries), or when the Hub answers with an error (401,
403, 404, 5xx), it returns `None` with the reason, and the caller profiles instead.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from huggingface_hub import ModelInfo, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from ._version import __version__
from .config import SDFPConfig, SDFPConfigError
from .hub import CARD_TAGS, SDFPHubError, is_repo_id

try:  # huggingface_hub >= 2 speaks HTTP through httpx2, 1.x through httpx
    from httpx2 import HTTPError as _TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import HTTPError as _TransportError

__all__ = ["LIBRARY_TAG", "LOOKUP_TIMEOUT", "MAX_CANDIDATES", "PublishedMask", "find_published_mask"]

logger = logging.getLogger(__name__)

LIBRARY_TAG = CARD_TAGS[0]
"""The tag every card sdfp-hf writes carries, and the look-up asks for."""

LOOKUP_TIMEOUT = 3.0
"""Seconds the look-up waits for the Hub's answer (connecting and reading) before profiling instead."""

MAX_CANDIDATES = 5
"""The most published masks downloaded before giving up on the Hub."""


@dataclass
class PublishedMask:
    """A mask found on the Hub for a model.

    Args:
        repo_id (`str`): the repository that holds it.
        revision (`str`, *optional*): the commit it was read at.
        mask (`SDFPConfig`): the mask, checked against the model.
        downloads (`int`): the repository's downloads, as the Hub reported them.
        candidates (`int`): how many repositories the look-up found.
    """

    repo_id: str
    revision: str | None
    mask: SDFPConfig
    downloads: int = 0
    candidates: int = 1


def find_published_mask(
    model_config: Any,
    name_or_path: str | None = None,
    *,
    token: str | bool | None = None,
    timeout: float | None = None,
) -> tuple[PublishedMask | None, str]:
    """Look for a published sdfp-hf mask for a model on the Hub (`constants.ENDPOINT`).

    Args:
        model_config (`transformers.PretrainedConfig`): the model's config (for the fingerprint check).
        name_or_path (`str`, *optional*): the model's Hub id; defaults to `model_config.name_or_path`. A local
            folder has no published masks.
        token (`str` or `bool`, *optional*): as in huggingface_hub (defaults to the saved token).
        timeout (`float`, *optional*): seconds to wait for the Hub (defaults to `LOOKUP_TIMEOUT`).

    Returns:
        `(found, reason)`: the chosen [`PublishedMask`] (or `None`) and one phrase saying what happened
        (``"offline mode is on"``, ``"the Hub answered 401"``, ``"none published"``, ...).
    """
    base = name_or_path or getattr(model_config, "name_or_path", None) or ""
    if not base or not is_repo_id(base):
        return None, "the model has no Hub id"
    if constants.is_offline_mode():
        return None, "offline mode is on (HF_HUB_OFFLINE)"
    try:
        items = _list_masks(base, token, LOOKUP_TIMEOUT if timeout is None else timeout)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "an error"
        return None, f"the Hub answered {status}"
    except (_TransportError, OfflineModeIsEnabled, OSError) as e:
        return None, f"the Hub could not be reached ({type(e).__name__})"
    except ValueError as e:  # not JSON, or not a list of models
        return None, f"the Hub's answer was not understood ({e})"
    required = {LIBRARY_TAG, f"base_model:{base}"}
    candidates = [m for m in items if required <= set(m.tags or ())]
    if not candidates:
        return None, f"no sdfp-hf mask published for `{base}`"
    candidates.sort(key=lambda m: (m.downloads or 0, _timestamp(m.last_modified)), reverse=True)
    refused = []
    for info in candidates[:MAX_CANDIDATES]:
        try:
            mask = SDFPConfig.from_pretrained(info.id, revision=info.sha, token=token)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mask.check_compatible(model_config, name_or_path=base)
        except (SDFPHubError, SDFPConfigError) as e:
            logger.debug("published mask %s not used: %s", info.id, e)
            refused.append(info.id)
            continue
        for warning in caught:  # the usual check's notes (another revision), once the mask is chosen
            warnings.warn(warning.message, warning.category, stacklevel=2)
        return PublishedMask(info.id, info.sha, mask, info.downloads or 0, len(candidates)), "found"
    return None, f"{len(candidates)} published mask(s) for `{base}`, none usable ({', '.join(refused)})"


def _list_masks(base: str, token: str | bool | None, timeout: float) -> list[ModelInfo]:
    """One request, no retries: the repositories tagged `sdfp` and ``base_model:<base>``."""
    response = get_session().get(
        f"{constants.ENDPOINT}/api/models",
        params={
            "filter": [LIBRARY_TAG, f"base_model:{base}"],
            "sort": "downloads",
            "direction": "-1",
            "limit": "50",
            "full": "true",
        },
        headers=build_hf_headers(token=token, library_name="sdfp-hf", library_version=__version__),
        timeout=timeout,
    )
    hf_raise_for_status(response)
    data = response.json()
    if not isinstance(data, list):
        raise ValueError(f"expected a list of models, got {type(data).__name__}")
    return [ModelInfo(**{"siblings": None, **item}) for item in data if isinstance(item, dict) and "id" in item]


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return 0.0
