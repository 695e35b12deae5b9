"""The Hub look-up of `from_target(model)`: published masks for the model, against the loopback Hub."""

from __future__ import annotations

import socket
import uuid

import huggingface_hub.constants
import pytest
from hub_server import HubServer
from tiny_models import tiny_model

from sdfp_hf import SDFPAssistant, SDFPConfig
from sdfp_hf import published
from sdfp_hf.published import find_published_mask

WRITE = "hf_alice_write"  # tokens known to the server: see tests/conftest.py
BOB = "hf_bob_write"
FAST = dict(num_sequences=2, sequence_length=16, skip_ratio=0.34)


@pytest.fixture
def profiles(count_profiles):
    """Profiling, when the look-up falls through to it, with quick options; the calls made."""
    return count_profiles(**FAST)


@pytest.fixture
def model():
    model = tiny_model("llama")
    model.config.name_or_path = f"base/tiny-llama-{uuid.uuid4().hex[:8]}"
    return model


def publish(model, skip_layers, owner="alice", token=WRITE, **fields) -> str:
    mask = SDFPConfig.from_model_config(model.config, skip_layers=skip_layers, **fields)
    repo_id = f"{owner}/mask-{uuid.uuid4().hex[:8]}"
    mask.push_to_hub(repo_id, token=token)
    return repo_id


def test_a_published_mask_is_found_and_then_cached(hub_server: HubServer, model, profiles, capsys):
    repo_id = publish(model, [2, 4])
    draft = SDFPAssistant.from_target(model)
    assert draft.origin == f"hub:{repo_id}" and sorted(draft.skip.layers) == [2, 4] and not profiles
    assert f"sdfp-hf: draft from the Hub mask `{repo_id}`" in capsys.readouterr().err
    hub_server.requests.clear()
    again = SDFPAssistant.from_target(model, progress=False)
    assert again.origin == "cache" and again.skip == draft.skip
    assert hub_server.requests == []  # the cache answered: the Hub was not asked again


def test_the_card_must_name_this_model(hub_server: HubServer, model, profiles):
    other = tiny_model("llama")
    other.config.name_or_path = "base/another-model"
    publish(other, [1])
    draft = SDFPAssistant.from_target(model, progress=False)
    assert draft.origin == "profiled" and len(profiles) == 1


def test_nothing_published_profiles(hub_server: HubServer, model, profiles, caplog):
    caplog.set_level("INFO", logger="sdfp_hf.auto_mask")
    draft = SDFPAssistant.from_target(model, progress=False)
    assert draft.origin == "profiled" and len(profiles) == 1
    assert f"Hub: no sdfp-hf mask published for `{model.config.name_or_path}`" in caplog.text
    assert any(path == "/api/models" for _, path in hub_server.requests)


def test_offline_goes_straight_to_profiling(hub_server: HubServer, model, profiles, monkeypatch, caplog):
    publish(model, [2])
    hub_server.requests.clear()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    caplog.set_level("INFO", logger="sdfp_hf.auto_mask")
    draft = SDFPAssistant.from_target(model, progress=False)
    assert draft.origin == "profiled" and hub_server.requests == []
    assert "offline mode is on" in caplog.text


def test_no_network_goes_to_profiling(hub_server: HubServer, model, profiles, monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    found, reason = find_published_mask(model.config)
    assert found is None and reason.startswith("the Hub could not be reached")
    assert SDFPAssistant.from_target(model, progress=False).origin == "profiled"


def test_a_hub_that_never_answers_is_given_up_quickly(hub_server: HubServer, model, monkeypatch):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the connection, never answers
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setattr(published, "LOOKUP_TIMEOUT", 0.2)
        found, reason = find_published_mask(model.config)
    assert found is None and "could not be reached" in reason and "Timeout" in reason


@pytest.mark.parametrize("status", [401, 403, 404, 503])
def test_a_refusing_hub_means_profiling(hub_server: HubServer, model, profiles, status):
    publish(model, [2])
    hub_server.listing_status = status
    found, reason = find_published_mask(model.config)
    assert found is None and reason == f"the Hub answered {status}"
    assert SDFPAssistant.from_target(model, progress=False).origin == "profiled"


def test_an_unknown_token_is_a_401_and_profiling(hub_server: HubServer, model, profiles, monkeypatch):
    publish(model, [2])
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    found, reason = find_published_mask(model.config)
    assert found is None and reason == "the Hub answered 401"


def test_of_two_masks_the_most_downloaded_that_fits(hub_server: HubServer, model, profiles):
    popular, rare = publish(model, [1]), publish(model, [3, 4], owner="bob", token=BOB)
    hub_server.repos[popular].downloads, hub_server.repos[rare].downloads = 50, 5
    found, _ = find_published_mask(model.config)
    assert found.repo_id == popular and found.candidates == 2 and found.downloads == 50
    hub_server.repos[rare].downloads = 500
    assert find_published_mask(model.config)[0].repo_id == rare
    # equal downloads: the most recently modified
    hub_server.repos[popular].downloads = 500
    assert find_published_mask(model.config)[0].repo_id == rare  # pushed after `popular`
    hub_server.repos[popular].modified = hub_server.clock + 1
    assert find_published_mask(model.config)[0].repo_id == popular
    draft = SDFPAssistant.from_target(model, progress=False)
    assert draft.origin.startswith("hub:") and not profiles


def test_a_mask_that_fails_the_fingerprint_check_is_passed_over(hub_server: HubServer, model, profiles):
    good = publish(model, [2])
    deeper = tiny_model("llama")
    deeper.config.name_or_path = model.config.name_or_path
    deeper.config.num_hidden_layers = 8  # claims this model as its base, made for another architecture
    bad = publish(deeper, [6, 7])
    hub_server.repos[bad].downloads = 1000
    found, _ = find_published_mask(model.config)
    assert found.repo_id == good
    hub_server.repos.pop(good)
    found, reason = find_published_mask(model.config)
    assert found is None and reason == f"1 published mask(s) for `{model.config.name_or_path}`, none usable ({bad})"
    assert SDFPAssistant.from_target(model, progress=False).origin == "profiled"


def test_options_that_change_the_profile_skip_the_hub(hub_server: HubServer, model, profiles):
    publish(model, [2])
    hub_server.requests.clear()
    assert SDFPAssistant.from_target(model, method="block_influence", progress=False).origin == "profiled"
    assert SDFPAssistant.from_target(model, hub_lookup=False, progress=False).origin == "profiled"
    assert SDFPAssistant.from_target(model, refresh=True, progress=False).origin == "profiled"
    assert hub_server.requests == []
    with pytest.raises(TypeError, match=r"profiling arguments \['hub_lookup'\] apply only"):
        SDFPAssistant.from_target(model, skip_layers=[1], hub_lookup=False)


def test_a_model_without_a_hub_id_is_never_looked_up(hub_server: HubServer, profiles):
    local = tiny_model("llama")
    assert find_published_mask(local.config) == (None, "the model has no Hub id")
    assert SDFPAssistant.from_target(local, progress=False).origin == "profiled"
    assert hub_server.requests == []
