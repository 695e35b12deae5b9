"""Saving, loading and publishing masks, over real HTTP against the loopback Hub (tests/hub_server.py).

The real `huggingface_hub` client talks to the server that tests/conftest.py starts and points
`HF_ENDPOINT` at; the cache lives in a temporary `HF_HOME`. Every test uses repositories of its own
name, so the cache one test fills never answers for another.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml
from hub_server import HubServer
from huggingface_hub import ModelCard, constants, hf_hub_download
from test_config import full_mask, make_mask

from sdfp_hf._files import OverwriteError, UnsafePathError
from sdfp_hf.config import CONFIG_NAME, FORMAT_VERSION, MAX_CONFIG_BYTES, SDFPConfig, SDFPConfigError
from sdfp_hf.hub import PLOT_NAME, HubMixin, SDFPHubError

ROOT = Path(__file__).resolve().parent.parent
WRITE = "hf_alice_write"  # tokens known to the server: see tests/conftest.py
READ = "hf_alice_read"
BOB = "hf_bob_write"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def unique(name: str, owner: str = "alice") -> str:
    return f"{owner}/{name}-{uuid.uuid4().hex[:8]}"


def run_python(code: str, **env: str) -> dict:
    """Run `code` in a fresh interpreter with this session's Hub environment; return the JSON it prints."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def files_of(hub: HubServer, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    return hub.repos[repo_id].resolve(revision).files


# ---------------------------------------------------------------------------- local folders


def test_save_and_load_a_folder(tmp_path: Path) -> None:
    mask = full_mask()
    path = mask.save_pretrained(tmp_path / "mask", plot=PNG)
    assert Path(path) == tmp_path / "mask" / CONFIG_NAME
    assert (tmp_path / "mask" / PLOT_NAME).read_bytes() == PNG
    assert ModelCard.load(tmp_path / "mask" / "README.md").data.library_name == "sdfp-hf"
    assert SDFPConfig.from_pretrained(tmp_path / "mask") == mask
    assert SDFPConfig.from_pretrained(str(tmp_path / "mask")) == mask
    assert SDFPConfig.from_pretrained(tmp_path / "mask" / CONFIG_NAME) == mask


def test_save_never_overwrites_a_readme(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# my model\n")
    make_mask().save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "# my model\n"
    assert SDFPConfig.from_pretrained(tmp_path) == make_mask()


def test_save_without_card_and_in_a_subfolder(tmp_path: Path) -> None:
    make_mask().save_pretrained(tmp_path / "sdfp", card=False)
    assert sorted(p.name for p in (tmp_path / "sdfp").iterdir()) == [CONFIG_NAME]
    assert SDFPConfig.from_pretrained(tmp_path, subfolder="sdfp") == make_mask()


def test_save_refuses_an_invalid_mask_or_plot(tmp_path: Path) -> None:
    mask = make_mask()
    mask.skip_layers = [0, 1, 2, 3, 4, 5]
    with pytest.raises(SDFPConfigError, match="skips all 6 decoder layers"):
        mask.save_pretrained(tmp_path / "a")
    assert not (tmp_path / "a" / CONFIG_NAME).exists()
    with pytest.raises(ValueError, match="must be a PNG image"):
        make_mask().save_pretrained(tmp_path / "b", plot=b"GIF89a")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (links as their target's text), to check byte for byte that nothing changed."""
    return {
        p.name: (b"-> " + os.readlink(p).encode()) if p.is_symlink() else p.read_bytes()
        for p in sorted(folder.iterdir())
    }


def test_an_existing_mask_and_plot_are_kept_unless_overwrite(tmp_path: Path) -> None:
    full_mask().save_pretrained(tmp_path, plot=PNG)
    before = snapshot(tmp_path)
    other = make_mask(skip_layers=[0])
    with pytest.raises(OverwriteError, match=f"{CONFIG_NAME}` already exists and is kept: pass `overwrite=True`"):
        other.save_pretrained(tmp_path, plot=PNG + b"other")
    assert snapshot(tmp_path) == before  # byte for byte: not even the plot was written
    with pytest.raises(OverwriteError):
        other.to_json_file(tmp_path / CONFIG_NAME)
    assert snapshot(tmp_path) == before

    other.save_pretrained(tmp_path, plot=PNG + b"other", overwrite=True)
    assert SDFPConfig.from_pretrained(tmp_path) == other
    assert (tmp_path / PLOT_NAME).read_bytes() == PNG + b"other"
    assert (tmp_path / "README.md").read_bytes() == before["README.md"]  # a README is never replaced
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_existing_plot_alone_is_kept_too(tmp_path: Path) -> None:
    (tmp_path / PLOT_NAME).write_bytes(b"\x89PNG\r\n\x1a\n an older plot")
    before = snapshot(tmp_path)
    with pytest.raises(OverwriteError, match=f"{PLOT_NAME}` already exists"):
        make_mask().save_pretrained(tmp_path, plot=PNG)
    assert snapshot(tmp_path) == before  # nor the mask nor the card: all is checked before anything is written


def test_a_plot_already_in_place_is_not_an_overwrite(tmp_path: Path) -> None:
    (tmp_path / PLOT_NAME).write_bytes(PNG)  # as `result.plot(folder / PLOT_NAME)` leaves it
    make_mask().save_pretrained(tmp_path, plot=tmp_path / PLOT_NAME)
    assert (tmp_path / PLOT_NAME).read_bytes() == PNG
    assert f"]({PLOT_NAME})" in (tmp_path / "README.md").read_text()


def test_a_save_killed_half_way_leaves_the_old_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes_fail_half_way
) -> None:
    full_mask().save_pretrained(tmp_path, plot=PNG)
    before = snapshot(tmp_path)
    writes_fail_half_way(KeyboardInterrupt())  # the user's Ctrl-C, half-way through the mask
    with pytest.raises(KeyboardInterrupt):
        make_mask(skip_layers=[0]).save_pretrained(tmp_path, overwrite=True)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert SDFPConfig.from_pretrained(tmp_path) == full_mask()


@pytest.mark.parametrize("name", [CONFIG_NAME, PLOT_NAME])
def test_a_save_never_follows_a_symbolic_link(tmp_path: Path, name: str) -> None:
    folder, outside = tmp_path / "mask", tmp_path / "precious.txt"
    folder.mkdir()
    outside.write_bytes(b"a file of the user's, elsewhere")
    (folder / name).symlink_to(outside)
    for overwrite in (False, True):
        with pytest.raises(UnsafePathError, match=f"{name}` is a symbolic link to .*outside its folder"):
            make_mask().save_pretrained(folder, plot=PNG, overwrite=overwrite)
    assert outside.read_bytes() == b"a file of the user's, elsewhere"
    assert sorted(p.name for p in folder.iterdir()) == [name]


def test_a_readme_link_out_of_the_folder_is_left_alone(tmp_path: Path) -> None:
    folder, outside = tmp_path / "mask", tmp_path / "not-yet-a-file.md"
    folder.mkdir()
    (folder / "README.md").symlink_to(outside)  # dangling: following it would create a file elsewhere
    make_mask().save_pretrained(folder)
    assert not outside.exists()
    assert (folder / "README.md").is_symlink()
    assert SDFPConfig.from_pretrained(folder) == make_mask()


def test_paths_expand_home_and_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SDFP_TEST_MASKS", str(tmp_path / "masks"))
    make_mask().save_pretrained("~/m", plot=PNG)
    assert (tmp_path / "m" / CONFIG_NAME).is_file()
    assert SDFPConfig.from_pretrained("~/m") == make_mask()
    assert SDFPConfig.from_pretrained("~/m/" + CONFIG_NAME) == make_mask()
    make_mask().save_pretrained("$SDFP_TEST_MASKS/m", plot="~/m/" + PLOT_NAME)
    assert SDFPConfig.from_pretrained("${SDFP_TEST_MASKS}/m") == make_mask()
    make_mask().to_json_file("~/single.json")
    assert SDFPConfig.from_json_file("~/single.json") == make_mask()


def test_a_folder_without_a_mask(tmp_path: Path) -> None:
    with pytest.raises(SDFPHubError, match=f"has no `{CONFIG_NAME}`"):
        SDFPConfig.from_pretrained(tmp_path)


def test_neither_a_folder_nor_a_repo_id() -> None:
    with pytest.raises(SDFPHubError, match="neither an existing local folder nor a valid Hub repository id"):
        SDFPConfig.from_pretrained("./no/such/folder/here")


def test_a_malformed_local_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_bytes(b"\x80\x04\x95 a pickle, not JSON")
    with pytest.raises(SDFPConfigError, match="not valid JSON"):
        SDFPConfig.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- the model card


def test_card_metadata_links_the_base_model() -> None:
    text = full_mask().model_card(repo_id="alice/mask", subfolder="sdfp", plot=True)
    card = ModelCard(text)
    assert card.data.base_model == "org/tiny-llama"
    assert card.data.library_name == "sdfp-hf"
    assert card.data.pipeline_tag == "text-generation"
    assert {"speculative-decoding", "sdfp", "llama"} <= set(card.data.tags)
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["library_name"] == "sdfp-hf"
    # what was skipped, the plot, the figures with their hardware, the snippet, the provenance
    assert "| skipped attention only | 3 of 6: 2, 3, 5 |" in text
    assert f"![Per-layer scores](sdfp/{PLOT_NAME})" in text
    assert "| 71.0% | 1.40× | 1x H100 |" in text
    assert 'draft = SDFPAssistant.from_pretrained(model, "alice/mask", subfolder="sdfp")' in text
    assert "model.generate(**inputs, assistant_model=draft" in text
    assert "| source | wikitext-2 |" in text


def test_card_without_optional_sections_or_hub_base_model() -> None:
    text = make_mask(base_model_name_or_path="/home/me/checkpoints/llama").model_card()
    card = ModelCard(text)
    assert card.data.base_model is None  # a local path is no Hub link
    assert "## Scores" not in text and "## Measured" not in text
    assert "No calibration provenance was recorded." in text


# ---------------------------------------------------------------------------- push and load


def test_push_is_one_commit_and_loads_back_in_a_fresh_process(hub_server: HubServer) -> None:
    repo_id = unique("mask")
    mask = full_mask()
    url = mask.push_to_hub(repo_id, token=WRITE, plot_path=PNG)

    commits = hub_server.commits_of(repo_id)
    assert len(commits) == 2  # the repository's initial commit, then ours
    assert url == f"{hub_server.url}/{repo_id}/commit/{commits[-1].oid}"
    assert commits[-1].message == "Upload sdfp mask"
    files = files_of(hub_server, repo_id)
    assert sorted(files) == [".gitattributes", "README.md", CONFIG_NAME, PLOT_NAME]
    assert files[CONFIG_NAME].decode() == mask.to_json_string()
    assert [m for m, path in hub_server.requests if path.endswith("/commit/main")] == ["POST"]

    fresh = run_python(
        f"""
        import json
        from huggingface_hub import ModelCard, hf_hub_download
        from sdfp_hf import config
        mask = config.SDFPConfig.from_pretrained({repo_id!r})
        card = ModelCard.load(hf_hub_download({repo_id!r}, "README.md"))
        print(json.dumps({{"mask": mask.to_dict(), "card": card.data.to_dict()}}))
        """
    )
    assert SDFPConfig.from_dict(fresh["mask"]) == mask
    assert fresh["card"]["base_model"] == "org/tiny-llama"
    assert fresh["card"]["library_name"] == "sdfp-hf"
    assert "speculative-decoding" in fresh["card"]["tags"]

    # Offline, in another fresh process: the cached copy is used; a mask never fetched is a clear error.
    offline = run_python(
        f"""
        import json
        from sdfp_hf.config import SDFPConfig
        from sdfp_hf.hub import SDFPHubError
        out = {{"cached": SDFPConfig.from_pretrained({repo_id!r}).to_dict()}}
        try:
            SDFPConfig.from_pretrained({unique("never-fetched")!r})
        except SDFPHubError as e:
            out["uncached"] = str(e)
        print(json.dumps(out))
        """,
        HF_HUB_OFFLINE="1",
    )
    assert SDFPConfig.from_dict(offline["cached"]) == mask
    assert "offline mode is on (`HF_HUB_OFFLINE=1`) and the cache has no copy" in offline["uncached"]


def test_local_files_only_uses_the_cache(hub_server: HubServer) -> None:
    repo_id = unique("mask")
    make_mask().push_to_hub(repo_id, token=WRITE)
    with pytest.raises(SDFPHubError, match="`local_files_only=True` and the cache has no copy"):
        SDFPConfig.from_pretrained(repo_id, local_files_only=True)
    assert SDFPConfig.from_pretrained(repo_id) == make_mask()
    hub_server.reset()  # the Hub forgets the repository: only the cache can answer now
    assert SDFPConfig.from_pretrained(repo_id, local_files_only=True) == make_mask()


def test_a_second_push_never_overwrites_the_readme(hub_server: HubServer) -> None:
    repo_id = unique("mask")
    make_mask().push_to_hub(repo_id, token=WRITE)
    readme = files_of(hub_server, repo_id)["README.md"]
    changed = make_mask(skip_layers=[2, 3], scoring_method="fit")
    changed.push_to_hub(repo_id, token=WRITE, commit_message="Better mask")
    files = files_of(hub_server, repo_id)
    assert files["README.md"] == readme
    assert hub_server.commits_of(repo_id)[-1].message == "Better mask"
    assert SDFPConfig.from_pretrained(repo_id) == changed


def test_mask_in_a_subfolder_of_a_model_repo(hub_server: HubServer) -> None:
    repo_id = unique("tiny-llama")
    hub_server.add_repo(repo_id, files={"config.json": b"{}", "README.md": b"# The model's own card\n"})
    make_mask().push_to_hub(repo_id, token=WRITE, subfolder="sdfp", plot_path=PNG)
    files = files_of(hub_server, repo_id)
    assert files["README.md"] == b"# The model's own card\n"
    assert f"sdfp/{CONFIG_NAME}" in files and f"sdfp/{PLOT_NAME}" in files
    assert SDFPConfig.from_pretrained(repo_id, subfolder="sdfp") == make_mask()
    with pytest.raises(SDFPHubError, match=f"has no `{CONFIG_NAME}`: .* pass `subfolder=`"):
        SDFPConfig.from_pretrained(repo_id)


@pytest.mark.parametrize("subfolder", ["../outside", "/absolute", "a/../../b", "a//b"])
def test_a_subfolder_outside_the_repo_is_refused(hub_server: HubServer, subfolder: str) -> None:
    with pytest.raises(ValueError, match="subfolder must be a folder inside the repository"):
        SDFPConfig.from_pretrained("alice/mask", subfolder=subfolder)
    with pytest.raises(ValueError, match="subfolder must be a folder inside the repository"):
        make_mask().push_to_hub("alice/mask", token=WRITE, subfolder=subfolder)
    assert hub_server.requests == []


def test_push_to_a_branch_and_as_a_pull_request(hub_server: HubServer) -> None:
    repo_id = unique("mask")
    make_mask().push_to_hub(repo_id, token=WRITE)
    main = files_of(hub_server, repo_id)[CONFIG_NAME]

    other = make_mask(skip_layers=[0])
    url = other.push_to_hub(repo_id, token=WRITE, revision="experiment")
    assert "/commit/" in url
    assert SDFPConfig.from_pretrained(repo_id, revision="experiment") == other
    assert files_of(hub_server, repo_id)[CONFIG_NAME] == main

    pr_url = make_mask(skip_layers=[5]).push_to_hub(repo_id, token=WRITE, create_pr=True)
    assert pr_url == f"{hub_server.url}/{repo_id}/discussions/1"
    assert SDFPConfig.from_pretrained(repo_id, revision="refs/pr/1") == make_mask(skip_layers=[5])
    assert files_of(hub_server, repo_id)[CONFIG_NAME] == main


def test_private_repo_reads_with_the_owner_token(hub_server: HubServer) -> None:
    repo_id = unique("private-mask")
    make_mask().push_to_hub(repo_id, token=WRITE, private=True)
    assert hub_server.repos[repo_id].private
    assert SDFPConfig.from_pretrained(repo_id, token=READ) == make_mask()


def test_a_mask_from_a_newer_sdfp_hf_on_the_hub(hub_server: HubServer) -> None:
    repo_id = unique("future-mask")
    data = make_mask().to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    hub_server.add_repo(repo_id, files={CONFIG_NAME: json.dumps(data).encode()})
    with pytest.raises(SDFPConfigError, match="upgrade sdfp-hf"):
        SDFPConfig.from_pretrained(repo_id)


def test_a_hostile_file_on_the_hub_is_only_parsed(hub_server: HubServer) -> None:
    repo_id = unique("hostile")
    payload = b"cos\nsystem\n(S'echo pwned'\ntR."  # a pickle that would run a shell command
    hub_server.add_repo(repo_id, files={CONFIG_NAME: payload})
    with pytest.raises(SDFPConfigError, match="not valid JSON"):
        SDFPConfig.from_pretrained(repo_id)


# ---------------------------------------------------------------------------- Hub failures


def test_repository_not_found(hub_server: HubServer) -> None:
    with pytest.raises(SDFPHubError, match=r"`alice/nothing-here` was not found on http://127\.0\.0\.1"):
        SDFPConfig.from_pretrained("alice/nothing-here")


def test_file_missing(hub_server: HubServer) -> None:
    repo_id = unique("not-a-mask")
    hub_server.add_repo(repo_id, files={"config.json": b"{}"})
    with pytest.raises(SDFPHubError, match=f"has no `{CONFIG_NAME}`: it holds no sdfp mask"):
        SDFPConfig.from_pretrained(repo_id)


def test_revision_missing(hub_server: HubServer) -> None:
    repo_id = unique("mask")
    make_mask().push_to_hub(repo_id, token=WRITE)
    with pytest.raises(SDFPHubError, match="has no revision `v9`"):
        SDFPConfig.from_pretrained(repo_id, revision="v9")


@pytest.mark.parametrize(
    "token, message",
    [
        (None, "if it is private, no token was used: pass `token=`"),
        ("hf_not_a_real_token", r"rejected the token \(401\)"),
        (BOB, "if it is private, the token used has no access to it"),
    ],
    ids=["no token", "bad token", "another user's token"],
)
def test_private_repo_without_access(hub_server: HubServer, token: str | None, message: str) -> None:
    repo_id = unique("private-mask")
    make_mask().push_to_hub(repo_id, token=WRITE, private=True)
    with pytest.raises(SDFPHubError, match=message):
        SDFPConfig.from_pretrained(repo_id, token=token)


@pytest.mark.parametrize(
    "token, repo, message",
    [
        (None, "alice", "requires authentication .* no token was found: pass `token=` \\(a write token\\)"),
        ("hf_not_a_real_token", "alice", r"rejected the token \(401\)"),
        (READ, "alice", r"no permission for this \(403\).*read access only"),
        (BOB, "alice", r"no permission for this \(403\).*namespace alice"),
    ],
    ids=["no token", "bad token", "read-only token", "another namespace"],
)
def test_push_refused(hub_server: HubServer, token: str | None, repo: str, message: str) -> None:
    repo_id = unique("mask", owner=repo)
    with pytest.raises(SDFPHubError, match=message):
        make_mask().push_to_hub(repo_id, token=token)
    assert repo_id not in hub_server.repos


def test_push_refused_on_an_existing_repo_of_someone_else(hub_server: HubServer) -> None:
    repo_id = unique("mask")
    make_mask().push_to_hub(repo_id, token=WRITE)
    with pytest.raises(SDFPHubError, match=r"no permission for this \(403\)"):
        make_mask(skip_layers=[0]).push_to_hub(repo_id, token=BOB)
    assert len(hub_server.commits_of(repo_id)) == 2


def test_push_in_offline_mode(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SDFPHubError, match="offline mode is on: unset `HF_HUB_OFFLINE`"):
        make_mask().push_to_hub(unique("mask"), token=WRITE)


def test_connection_refused(hub_server: HubServer) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_python(
        f"""
        import json, time
        # huggingface_hub retries a refused connection with exponential backoff: skip the waits
        time.sleep = lambda seconds: None
        from sdfp_hf.config import SDFPConfig
        from sdfp_hf.hub import SDFPHubError
        mask = SDFPConfig.from_json_string({make_mask().to_json_string()!r})
        out = {{}}
        for name, call in [
            ("load", lambda: SDFPConfig.from_pretrained("alice/unreachable")),
            ("push", lambda: mask.push_to_hub("alice/unreachable", token="{WRITE}")),
        ]:
            try:
                call()
            except SDFPHubError as e:
                out[name] = str(e)
        print(json.dumps(out))
        """,
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    assert "could not reach the Hub at http://127.0.0.1" in result["load"]
    assert "check the network connection" in result["load"]
    assert "could not reach the Hub at http://127.0.0.1" in result["push"]


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub retries server errors and dropped downloads with waits of seconds: skip the waits."""
    import time

    monkeypatch.setattr(time, "sleep", lambda seconds: None)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_says_it_is_the_hub(hub_server: HubServer, no_backoff: None, status: int) -> None:
    repo_id = unique("mask")
    hub_server.add_repo(repo_id, files={CONFIG_NAME: make_mask().to_json_string().encode()})
    hub_server.fail(repo_id, status)
    with pytest.raises(SDFPHubError) as info:
        SDFPConfig.from_pretrained(repo_id)
    message = str(info.value)
    assert f"the Hub answered {status}, a server error" in message
    assert "not your set-up; try again in a few minutes" in message
    assert "check the network connection" not in message  # the network is fine: the Hub answered


def test_a_server_error_is_answered_from_the_cache(hub_server: HubServer, no_backoff: None) -> None:
    repo_id = unique("mask")
    make_mask().push_to_hub(repo_id, token=WRITE)
    assert SDFPConfig.from_pretrained(repo_id) == make_mask()
    hub_server.fail(repo_id, 503)
    assert SDFPConfig.from_pretrained(repo_id) == make_mask()


def test_a_server_error_while_pushing(hub_server: HubServer, no_backoff: None) -> None:
    repo_id = unique("mask")
    make_mask().push_to_hub(repo_id, token=WRITE)
    hub_server.fail(repo_id, 502)
    with pytest.raises(SDFPHubError, match=r"could not push .* the Hub answered 502, a server error.*try again"):
        make_mask(skip_layers=[0]).push_to_hub(repo_id, token=WRITE)


@pytest.mark.parametrize(
    "token, granted, message",
    [
        (None, (), "is gated: request access on its page, then pass a token"),
        (BOB, (), "is gated: request access on its page"),
        (BOB, ("bob",), None),
        (READ, (), None),  # the owner
    ],
    ids=["no token", "not granted", "granted", "owner"],
)
def test_a_gated_repository(hub_server: HubServer, token: str | None, granted: tuple, message: str | None) -> None:
    repo_id = unique("gated-mask")
    hub_server.add_repo(repo_id, files={CONFIG_NAME: make_mask().to_json_string().encode()})
    hub_server.gate(repo_id, granted=granted)
    if message is None:
        assert SDFPConfig.from_pretrained(repo_id, token=token) == make_mask()
    else:
        with pytest.raises(SDFPHubError, match=message):
            SDFPConfig.from_pretrained(repo_id, token=token)


@pytest.mark.parametrize("hang_up", [True, False], ids=["connection dropped", "short response"])
def test_a_download_cut_short(hub_server: HubServer, no_backoff: None, hang_up: bool) -> None:
    repo_id = unique("mask")
    text = make_mask().to_json_string().encode()
    hub_server.add_repo(repo_id, files={CONFIG_NAME: text})
    hub_server.truncate(repo_id, CONFIG_NAME, keep=len(text) // 2, hang_up=hang_up)
    with pytest.raises(SDFPHubError, match=r"the download of the sdfp mask .* was cut short .*: try again"):
        SDFPConfig.from_pretrained(repo_id)
    hub_server.truncated.clear()  # the connection is back: the next try loads the whole mask
    assert SDFPConfig.from_pretrained(repo_id) == make_mask()


def test_an_oversized_file_is_refused_before_its_body_is_read(hub_server: HubServer) -> None:
    assert HubMixin.hub_max_file_bytes is None and SDFPConfig.hub_max_file_bytes == MAX_CONFIG_BYTES
    repo_id = unique("huge")
    hub_server.add_repo(repo_id)
    hub_server.add_large_file(repo_id, CONFIG_NAME, MAX_CONFIG_BYTES + 1)
    with pytest.raises(SDFPHubError, match=f"is {MAX_CONFIG_BYTES + 1} bytes, more than the {MAX_CONFIG_BYTES} any sdfp"):
        SDFPConfig.from_pretrained(repo_id)
    assert hub_server.downloads(repo_id) == []  # only the metadata was asked for
    assert ("HEAD", f"/{repo_id}/resolve/main/{CONFIG_NAME}") in hub_server.requests


def test_a_file_at_the_cap_is_downloaded(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    text = make_mask().to_json_string().encode()
    monkeypatch.setattr(SDFPConfig, "hub_max_file_bytes", len(text))
    repo_id = unique("mask")
    hub_server.add_repo(repo_id, files={CONFIG_NAME: text})
    assert SDFPConfig.from_pretrained(repo_id) == make_mask()
    monkeypatch.setattr(SDFPConfig, "hub_max_file_bytes", len(text) - 1)
    with pytest.raises(SDFPHubError, match="more than the"):
        SDFPConfig.from_pretrained(repo_id)  # cached, but the Hub's metadata is asked first


def test_the_server_really_checks_downloads(hub_server: HubServer) -> None:
    # The failure tests above are only meaningful if the plain client sees the same server errors.
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    repo_id = unique("plain")
    hub_server.add_repo(repo_id, files={"a.txt": b"hello"})
    assert Path(hf_hub_download(repo_id, "a.txt")).read_bytes() == b"hello"
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "b.txt")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(unique("missing"), "a.txt")


def test_the_old_hub_functions_still_work_with_a_warning(tmp_path: Path) -> None:
    from sdfp_hf import hub

    mask = make_mask()
    with pytest.warns(FutureWarning, match="config.save_pretrained"):
        hub.save_pretrained(mask, tmp_path / "old")
    with pytest.warns(FutureWarning, match="SDFPConfig.from_pretrained"):
        assert hub.load_config(tmp_path / "old") == mask
    with pytest.warns(FutureWarning, match="config.model_card"):
        assert hub.render_card(mask) == mask.model_card()
